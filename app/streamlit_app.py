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

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"

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
