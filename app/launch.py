"""Start the app with the engine imported and warmed up before the first visitor.

``streamlit run`` imports a page's modules on the first session, so the first visitor
waits for ``import torch`` and for the one-time set-up of ``torch.func`` (its first
reverse-mode product imports ``torch._dynamo``): about 3 s of the first page view on a
2-core machine. This launcher does that work in the server process first and then starts
Streamlit's own command line in the same process, where those modules stay imported.

Usage (what ``make app`` runs)::

    python app/launch.py [streamlit run options, e.g. --server.port 8501]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch
from streamlit.web import cli as streamlit_cli
from torch import nn

import ntkcore
from ntkcore import data, experiments, plots, zoo  # noqa: F401  (imported for the pages)

ENTRY = Path(__file__).with_name("streamlit_app.py")


def warm_up() -> float:
    """One tiny adaptation: imports and initializes every code path of a first page view."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))
    x = torch.linspace(-1, 1, 5).unsqueeze(-1)
    post = ntkcore.adapt(net, x, torch.sin(x), noise_variance=0.1)
    post.predict(x)
    return time.perf_counter() - t0


def main() -> None:
    seconds = warm_up()
    # Everything imported so far lives as long as the server: move it out of the garbage
    # collector's generations, so that automatic collections (postScriptGC is off, see
    # .streamlit/config.toml) only walk what the sessions allocate.
    gc.collect()
    gc.freeze()
    print(f"ntkcore engine warmed up in {seconds:.1f} s", flush=True)
    sys.argv = ["streamlit", "run", str(ENTRY), *sys.argv[1:]]
    sys.exit(streamlit_cli.main())


if __name__ == "__main__":
    main()
