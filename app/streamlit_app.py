"""Entry point of the ntkcore app: ``streamlit run app/streamlit_app.py`` (or ``make app``).

A multipage app built with ``st.navigation`` from the page list in :mod:`app.pages`. The page
folder is deliberately *not* called ``pages/``: Streamlit treats a ``pages/`` folder next to the
entry script as a legacy (v1) multipage app and, until some session has executed
``st.navigation``, serves deep links such as ``/adapt`` straight from it, skipping this file.

Pages call the library (``ntkcore``, ``ntkcore.zoo``, ``ntkcore.data``,
``ntkcore.experiments``, ``ntkcore.plots``) and do no numerics themselves; how their work is
scheduled (compute slots, reruns, caches) is :mod:`app.compute`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st
import torch

# The repository root, so that pages can import ``app.*`` (Streamlit puts only app/ on the path).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from app.common import device_summary  # noqa: E402
from app.pages import PAGES  # noqa: E402

# Intra-op threads per script run (each session's runs execute in its own thread, which picks
# this up). The app's networks are small: on a loaded 2-core machine, training the Adapt page's
# source MLP took 4.7 s with one thread and 93 s with two (OpenMP threads waiting for each
# other), and an adapt + predict step 30 ms vs 100-700 ms. Concurrent sessions provide the
# parallelism. Override with NTKCORE_APP_THREADS.
_threads = os.environ.get("NTKCORE_APP_THREADS", "1")
if not _threads.isdigit() or int(_threads) < 1:
    raise ValueError(f"NTKCORE_APP_THREADS must be a positive integer, got {_threads!r}")
torch.set_num_threads(int(_threads))

st.set_page_config(
    page_title="ntkcore — linearized networks for transfer",
    page_icon="📈",
    layout="wide",
    menu_items={
        "About": (
            "**ntkcore**: transfer learning with linearized neural networks (finite-NTK "
            "Gaussian processes), after Maddox, Tang, Moreno, Wilson and Damianou, "
            "*Fast Adaptation with Linearized Neural Networks*, AISTATS 2021."
        )
    },
)

sections: dict[str, list[st.Page]] = {}
for i, spec in enumerate(PAGES):
    sections.setdefault(spec.group, []).append(
        st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=i == 0)
    )
page = st.navigation(sections)
st.sidebar.caption(device_summary())
page.run()
