"""``run_heavy``'s progress bar names the step that runs now.

Redraws are throttled (``DRAW_SECONDS``), but a new step name is always drawn: a library call
that starts a long step reporting no progress of its own (VI inside one ``adapt_classifier``
call on the Classification page) must not leave the previous step's name on the bar.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = '''
import streamlit as st
from app.compute import run_heavy

def work(progress, device):
    progress(0.2, "step A")
    progress(0.4, "step B")  # within DRAW_SECONDS of step A
    progress(0.45, "step B")  # same step, throttled
    return 1

if st.button("Run"):
    run_heavy("progress-test", "Stepping", work, inputs={"x": 1})
'''


def test_a_new_step_name_is_drawn_at_once(tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text(PAGE)
    at = AppTest.from_file(str(script), default_timeout=30).run()
    at.button[0].click().run()
    assert not at.exception
    bars = at.get("progress")
    assert len(bars) == 1
    assert bars[0].proto.text.startswith("step B ·"), bars[0].proto.text
    assert bars[0].proto.value == 40  # the throttled 0.45 is not drawn
