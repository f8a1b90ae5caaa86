"""Entry point of the ntkcore app: ``streamlit run app/streamlit_app.py``.

A multipage app built with ``st.navigation``: each page is a script under ``app/views/``. The
folder is deliberately *not* called ``pages/``: Streamlit treats a ``pages/`` folder next to
the entry script as a legacy (v1) multipage app and, until some session has executed
``st.navigation``, serves deep links such as ``/adapt`` straight from it, skipping this file
(no page config, wrong navigation).

Pages call the library (``ntkcore``, ``ntkcore.zoo``, ``ntkcore.data``, ``ntkcore.plots``)
and do no numerics themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st
import torch

VIEWS = Path(__file__).parent / "views"

# Intra-op threads per script run (each Streamlit run executes in its own thread, which picks
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

PAGES = [
    st.Page(
        VIEWS / "adapt.py", title="Adapt", icon=":material/tune:", url_path="adapt", default=True
    ),
]

st.navigation(PAGES).run()
