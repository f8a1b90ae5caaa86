"""The app's page list, in one place: ``streamlit_app.py`` builds ``st.navigation`` from it and
the tests (``tests/test_app.py``, ``tests/test_browser.py``) import it to visit every page.

A page is a script under ``app/views/`` that reads widgets, calls the library and draws with
``ntkcore.plots``; see ``docs/ARCHITECTURE.md`` ("Where to add a page").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["APP_DIR", "PAGES", "PageSpec"]

APP_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageSpec:
    """One page of the app.

    Attributes
    ----------
    file : str
        Script path relative to ``app/``.
    title, icon : str
        Navigation label and Material icon.
    url_path : str
        URL path (the first page is also served at ``/``).
    heading : str
        The page's ``st.title``, which the browser tests look for.
    group : str
        Navigation section.
    """

    file: str
    title: str
    icon: str
    url_path: str
    heading: str
    group: str

    @property
    def path(self) -> Path:
        return APP_DIR / self.file


PAGES: tuple[PageSpec, ...] = (
    PageSpec(
        "views/adapt.py",
        "Adapt",
        ":material/tune:",
        "adapt",
        "Adapt a trained network to a new task",
        "Explore",
    ),
    PageSpec(
        "views/compare.py",
        "Compare architectures",
        ":material/view_column:",
        "compare",
        "Compare architectures on the same task",
        "Explore",
    ),
    PageSpec(
        "views/curves.py",
        "Adaptation curves",
        ":material/show_chart:",
        "curves",
        "Adaptation curves: error vs number of context points",
        "Explore",
    ),
    PageSpec(
        "views/timing.py",
        "Timing",
        ":material/speed:",
        "timing",
        "Timing: how fast is linearized inference?",
        "Explore",
    ),
    PageSpec(
        "views/classification.py",
        "Classification",
        ":material/category:",
        "classification",
        "Classification with the linearized network",
        "Explore",
    ),
    PageSpec(
        "views/similarity.py",
        "Jacobian similarity",
        ":material/compare:",
        "similarity",
        "Jacobian similarity across tasks",
        "Explore",
    ),
    PageSpec(
        "views/learn.py",
        "Learn",
        ":material/school:",
        "learn",
        "Learn: linearized networks, one idea at a time",
        "Learn",
    ),
)
