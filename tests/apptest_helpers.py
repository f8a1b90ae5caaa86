"""Helpers for Streamlit ``AppTest`` tests of the app's pages."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from app.common import REPRODUCE_KEY_PREFIX


def reproduce_snippets(at: AppTest) -> list[str]:
    """Open every "Reproduce in Python" expander on the page (they are lazy: the snippet is
    sent only when open), rerun, and return the code blocks' texts."""
    keys = [k for k in at.session_state.keys() if str(k).startswith(REPRODUCE_KEY_PREFIX)]
    assert keys, "the page has no 'Reproduce in Python' expander"
    for key in keys:
        at.session_state[key] = True
    at.run()
    return [c.value for c in at.code]
