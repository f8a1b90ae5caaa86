"""The app's compute model (``app/compute.py``): slots, the result cache, run records."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.compute import ComputeSlot, ResultCache, RunRecord, input_key


def test_slot_admits_at_most_its_capacity() -> None:
    slot = ComputeSlot("test", capacity=2)
    inside, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        with slot.hold():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    assert slot.busy == 0 and slot.waiting == 0


def test_slot_is_released_when_the_block_raises() -> None:
    slot = ComputeSlot("test")
    with pytest.raises(ValueError), slot.hold():
        raise ValueError("library refused")
    with slot.hold():  # would block forever if the first hold leaked
        assert slot.busy == 1
    assert slot.busy == 0


def test_waiting_reports_runs_ahead_and_leaves_the_queue_on_an_exception() -> None:
    slot = ComputeSlot("test")
    release = threading.Event()
    reports: list[int] = []

    def holder() -> None:
        with slot.hold():
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    while slot.busy == 0:
        time.sleep(0.01)

    class Stop(Exception):
        pass

    def on_wait(ahead: int) -> None:
        reports.append(ahead)
        raise Stop  # what a session's newer rerun request does at a yield point

    with pytest.raises(Stop), slot.hold(on_wait=on_wait):
        pass
    assert reports == [1]
    assert slot.waiting == 0  # the stale request left the queue
    release.set()
    t.join()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ComputeSlot("x", capacity=0)


def test_result_cache_is_a_bounded_lru_keyed_by_page_and_inputs() -> None:
    cache = ResultCache(max_entries=2)
    a = RunRecord("p", {"n": 1}, "a", 1.0, "cpu")
    b = RunRecord("p", {"n": 2}, "b", 1.0, "cpu")
    c = RunRecord("q", {"n": 1}, "c", 1.0, "cpu")
    cache.put(a)
    cache.put(b)
    assert cache.get("p", {"n": 1}) is a  # a is now the most recent
    cache.put(c)  # evicts b, the least recently used
    assert len(cache) == 2
    assert cache.get("p", {"n": 2}) is None
    assert cache.get("q", {"n": 1}) is c
    assert cache.get("p", {"n": 1}) is a


def test_input_key_is_order_independent_and_value_sensitive() -> None:
    assert input_key({"a": 1, "b": [1, 2]}) == input_key({"b": [1, 2], "a": 1})
    assert input_key({"a": 1e-3}) != input_key({"a": 1e-4})
    assert input_key({"a": 1}) != input_key({"a": 1, "b": None})


PAGE = '''
import time
import streamlit as st
from app.compute import last_record, run_heavy, show_record_status

n = st.number_input("n", value=3, key="n")
inputs = {"n": int(n)}

def work(progress, device):
    for i in range(3):
        progress(i / 3, f"step {i}")
    if n < 0:
        raise ValueError("n must be non-negative")
    return int(n) ** 2

if st.button("Run"):
    try:
        run_heavy("test-page", "Squaring", work, inputs=inputs)
    except ValueError as err:
        st.error(str(err))
record = last_record("test-page")
if show_record_status("test-page", record, inputs):
    st.metric("square", record.result)
'''


def test_run_heavy_records_results_with_their_inputs(tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text(PAGE)
    at = AppTest.from_file(str(script), default_timeout=30).run()
    assert not at.metric  # nothing runs before Run
    at.button[0].click().run()
    assert [m.value for m in at.metric] == ["9"]
    assert any("Computed in" in c.value for c in at.caption)

    at.number_input(key="n").set_value(4).run()  # widgets changed, no new run
    assert not at.metric
    assert "earlier settings" in at.info[0].value and "n" in at.info[0].value

    at.button[0].click().run()
    assert [m.value for m in at.metric] == ["16"]

    at.number_input(key="n").set_value(-1).run()
    at.button[0].click().run()
    assert at.error[0].value == "n must be non-negative"
    assert not at.warning  # a refused setting is not reported as an interrupted run
