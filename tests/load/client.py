"""A headless Streamlit client over the app's websocket, for load tests.

A browser costs a core of its own; this client speaks Streamlit's protocol directly (protobuf
``BackMsg``/``ForwardMsg`` over ``/_stcore/stream``), so ten of them fit beside the server on
a 2-core machine and the server's cores go to the server. It does what the browser does for a
script run: it sends ``rerun_script`` with the page, the query string and every widget value
it has set, and reads the forward messages (elements, exceptions, ``script_finished``).

Only what the load test needs is modelled: widgets are addressed by their label, and their
values are sent in the wire format of their proto (sliders as a double array, select sliders
as an int array of option indices, number inputs as double/int, checkboxes as bool, select
boxes and radios as string).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.NumberInput_pb2 import NumberInput
from streamlit.proto.WidgetStates_pb2 import WidgetState

__all__ = ["AppClient", "Run"]

_WIDGETS = (
    "slider",
    "number_input",
    "checkbox",
    "selectbox",
    "radio",
    "button",
    "text_input",
    "multiselect",
    "toggle",
)


@dataclass
class Run:
    """What one script run sent: its elements by kind, in order, and how it finished."""

    started: float
    elements: list[tuple[str, Any]] = field(default_factory=list)
    finished: float | None = None
    status: str | None = None

    def of_kind(self, kind: str) -> list[Any]:
        return [proto for k, proto in self.elements if k == kind]

    @property
    def exceptions(self) -> list[str]:
        return [e.message for e in self.of_kind("exception")]

    @property
    def errors(self) -> list[str]:
        return [a.body for a in self.of_kind("alert") if a.format == 1]  # 1 = ERROR

    def texts(self) -> list[str]:
        return [m.body for m in self.of_kind("markdown")]

    def figures(self) -> list[dict[str, Any]]:
        return [json.loads(c.spec) for c in self.of_kind("plotly_chart")]

    def metrics(self) -> dict[str, str]:
        return {m.label: m.body for m in self.of_kind("metric")}


class AppClient:
    """One browser-less session of a Streamlit app.

    Parameters
    ----------
    url : str
        ``http://host:port`` of the server.
    page : str
        URL path of the page (``""`` for the default page).
    query : str
        The URL's query string (without ``?``), as a link with widget values bound to the URL
        carries it.
    """

    def __init__(self, url: str, page: str = "", query: str = "") -> None:
        self.url = url.rstrip("/")
        self.page = page
        self.query = query
        self.ws: Any = None
        self.widgets: dict[str, Any] = {}  # label -> latest proto
        self.states: dict[str, WidgetState] = {}  # widget id -> state we set
        self.runs: list[Run] = []
        self._current: Run | None = None
        self._reader: asyncio.Task | None = None
        self._finished = asyncio.Event()
        self.closed: BaseException | None = None

    async def connect(self) -> None:
        ws_url = self.url.replace("http://", "ws://") + "/_stcore/stream"
        # No client-side keepalive pings (browsers send none either): a ping left unanswered
        # for 20 s would close the connection, which is not what is being measured.
        self.ws = await websockets.connect(
            ws_url, subprotocols=["streamlit"], max_size=2**26, open_timeout=60,
            ping_interval=None,
        )
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        try:
            await self._read_messages()
        except Exception as err:  # recorded and re-raised by wait_finished
            self.closed = err
        else:
            reason = self.ws.close_reason
            self.closed = ConnectionError(f"the server closed the websocket: {reason!r}")
        self._finished.set()

    async def _read_messages(self) -> None:
        async for data in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self._current = Run(started=time.perf_counter())
                self.runs.append(self._current)
            elif kind == "delta" and self._current is not None:
                delta = msg.delta
                if delta.WhichOneof("type") == "new_element":
                    el = delta.new_element
                    ekind = el.WhichOneof("type")
                    proto = getattr(el, ekind)
                    self._current.elements.append((ekind, proto))
                    if ekind in _WIDGETS:
                        self.widgets[proto.label] = proto
            elif kind == "script_finished" and self._current is not None:
                self._current.finished = time.perf_counter()
                self._current.status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                self._finished.set()

    def set(self, label: str, value: Any) -> None:
        """Set the widget labelled ``label`` to ``value`` for the next rerun."""
        proto = self.widgets.get(label)
        if proto is None:
            raise KeyError(f"no widget labelled {label!r}; seen: {sorted(self.widgets)}")
        state = WidgetState(id=proto.id)
        kind = type(proto).__name__
        if kind == "Slider":
            if len(proto.options):  # select_slider: option indices
                state.int_array_value.data[:] = [list(proto.options).index(value)]
            else:
                state.double_array_value.data[:] = [float(value)]
        elif kind == "NumberInput":
            if proto.data_type == NumberInput.INT:
                state.int_value = int(value)
            else:
                state.double_value = float(value)
        elif kind in ("Checkbox",):
            state.bool_value = bool(value)
        elif kind in ("Selectbox", "Radio"):
            state.string_value = str(value)
        elif kind == "Button":
            state.trigger_value = True
        else:
            raise NotImplementedError(f"setting a {kind} is not modelled")
        self.states[proto.id] = state

    async def rerun(self) -> float:
        """Ask for a script run with the widget values set so far; returns the send time."""
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query
        # The page is named by its URL path; st.navigation resolves it on every run.
        cs.page_script_hash = ""
        cs.page_name = self.page
        for state in self.states.values():
            cs.widget_states.widgets.append(state)
        # Triggers (buttons) are true for one run only, as in the browser.
        self.states = {
            k: v for k, v in self.states.items() if v.WhichOneof("value") != "trigger_value"
        }
        self._finished.clear()
        sent = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        return sent

    async def wait_finished(
        self, timeout: float, since: float | None = None, check: Any = None
    ) -> Run:
        """Wait for a successful run that started after ``since`` (default: now).

        ``check(run) -> bool`` skips runs that do not show what the caller expects (the
        server draws widgets without their current value, so the page's content is what
        says which values a run used); runs interrupted for a rerun are skipped too.
        """
        since = time.perf_counter() if since is None else since
        deadline = time.perf_counter() + timeout
        while True:
            for run in reversed(self.runs):
                if run.started < since:
                    break
                if run.status == "FINISHED_SUCCESSFULLY" and (check is None or check(run)):
                    return run
            if self.closed is not None:
                raise ConnectionError(f"connection lost: {self.closed!r}")
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError("no script run showing the expected state finished in time")
            self._finished.clear()
            try:
                await asyncio.wait_for(self._finished.wait(), remaining)
            except TimeoutError:
                pass

    @property
    def last_finished(self) -> Run | None:
        for run in reversed(self.runs):
            if run.status == "FINISHED_SUCCESSFULLY":
                return run
        return None
