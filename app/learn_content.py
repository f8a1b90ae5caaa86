"""The Learn page's content: its networks, widget grids, per-task defaults and exercises.

Kept apart from ``app/views/learn.py`` (a page script, which runs when imported) so that the
tests can check every exercise against the widgets it fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_NETWORK",
    "EXERCISES",
    "FD_POINTS",
    "FD_SCHEMES",
    "FD_STEPS",
    "LAYERS",
    "LAYER_LABELS",
    "LINE_GRID",
    "LINE_RANGES",
    "NETWORKS",
    "NOISE_VARIANCES",
    "N_GRID",
    "PRIOR_VARIANCES",
    "P_GRID",
    "TASK_DEFAULTS",
    "THRESHOLDS",
    "TIMING_N",
    "KERNEL_SCALES",
    "PRIOR_MEANS",
    "COST_PARAMS",
    "Exercise",
    "Network",
]


@dataclass(frozen=True)
class Network:
    """A network of the running example: a zoo preset, trained or at its initialization."""

    preset_id: str
    trained: bool
    dataset: str
    label: str


NETWORKS: dict[str, Network] = {
    "toy-gap-mlp": Network(
        "toy-gap-mlp", True, "toy-gap", "ReLU MLP 1×512, trained"
    ),
    "toy-gap-mlp@init": Network(
        "toy-gap-mlp", False, "toy-gap", "ReLU MLP 1×512, at initialization"
    ),
    "sinusoids-mlp": Network(
        "sinusoids-mlp", True, "sinusoids", "tanh MLP 3×40, trained"
    ),
    "sinusoids-mlp@init": Network(
        "sinusoids-mlp", False, "sinusoids", "tanh MLP 3×40, at initialization"
    ),
}
DEFAULT_NETWORK = "toy-gap-mlp"


def _log_grid(low: int, high: int, per_decade: int = 4) -> tuple[float, ...]:
    """1, 1.8, 3.2, 5.6 × 10^k for k in [low, high): variances on a log scale."""
    steps = [10 ** (i / per_decade) for i in range(per_decade)]
    grid = [float(f"{m * 10.0**k:.2g}") for k in range(low, high) for m in steps]
    return (*grid, float(10.0**high))


NOISE_VARIANCES = _log_grid(-6, 1)
PRIOR_VARIANCES = _log_grid(-5, 2)
#: Per task: σ², s² (near the marginal-likelihood optimum of the trained network), x*, n.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "toy-gap": {"post_noise": 1.0, "post_prior": 0.032, "post_x": 0.0, "post_n": 8},
    "sinusoids": {"post_noise": 0.001, "post_prior": 0.001, "post_x": 4.0, "post_n": 8},
}
LAYERS = {"all": None, "first": "body.0", "last": "head"}
LAYER_LABELS = {
    "all": "all layers",
    "first": "first layer only",
    "last": "last layer (head) only",
}
LINE_RANGES = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
THRESHOLDS = (0.01, 0.05, 0.1, 0.25, 0.5)
#: Inputs on the line and probe grids; the path figure draws points 10, 20, 30 (¼, ½, ¾).
LINE_GRID = 41
P_GRID = (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000, 10_000_000)
N_GRID = tuple(int(v) for v in np.unique(np.round(np.logspace(0, 6, 25)).astype(int)))
FD_STEPS = tuple(float(f"{v:.3g}") for v in np.logspace(-7, 0, 15))
FD_POINTS = (16, 32, 64, 128, 256)
FD_SCHEMES = {"forward": ("forward",), "central": ("central",), "both": ("forward", "central")}
TIMING_N = (16, 32, 64, 128, 256, 512, 1000)
KERNEL_SCALES = ("cosine", "kernel")
PRIOR_MEANS = ("zero", "network")
#: Which parameters the timing of section 4 linearizes: all, or the head only.
COST_PARAMS = {"all": None, "last": "head"}


@dataclass(frozen=True)
class Exercise:
    """A short exercise: the question, what to look for, the section and widget values."""

    title: str
    question: str
    look_for: str
    section: int
    settings: dict[str, Any]


EXERCISES: dict[str, Exercise] = {
    "breaks": Exercise(
        "Find where the linearization breaks",
        "Section 1 now walks a random direction of the trained **tanh** network. At which step "
        "α does the linearization miss 10% of the network's change? Compare that α with ‖θ‖. "
        "Change the direction seed. Then switch the network to the ReLU MLP.",
        "The relative error grows about linearly with |α| (the second-order Taylor remainder), "
        "so there is no sharp edge: the linearization degrades steadily. The trained tanh "
        "network crosses 10% at |α| ≈ 0.5–0.8, 3–5% of ‖θ‖, for each of the direction seeds "
        "0–3. The ReLU network's crossing depends much more on the direction (|α| from 0.4 to "
        "3.8 over seeds 0–3): along some directions its units rarely change sign and it stays "
        "close to linear.",
        1,
        {"net": "sinusoids-mlp", "line_layers": "all", "line_range": 10.0,
         "line_threshold": 0.1, "line_seed": 0},
    ),
    "exact": Exercise(
        "Make the linearization exact",
        "Move only the **last layer** in section 1. Why does the error drop to rounding "
        "level (about 1e-15) for every α? Then move only the first layer.",
        "The network is f(x) = W h(x) + b with h the last hidden features: it is linear in the "
        "head's weights, so its Taylor expansion in them is exact. That is the Bayesian "
        "last-layer model; the finite NTK adds every other layer's Jacobian to it.",
        1,
        {"net": "toy-gap-mlp", "line_layers": "last", "line_range": 50.0, "line_seed": 0},
    ),
    "band": Exercise(
        "Make the band widen",
        "In section 3 the test point x* sits among the context points. Make its ±2σ band "
        "widen: move x* into the gap (x = 0), beyond the data, remove context points, or "
        "raise s². Which numbers of Eq. 2–3 change?",
        "Compare σ*² with the prior variance s²‖J*‖² printed in line (1). In the gap (x* = 0) "
        "J* points where the context Jacobians do not (cosine about 0.4 in section 2), so the "
        "context removes only about half of the prior variance (n = 20; with n = 3, a fifth). "
        "Beyond the data this ReLU network's J* points the same way as at the nearest "
        "cluster: the context explains about 98% of the prior variance at x* = 15, yet ‖J*‖ "
        "grows with |x| and so does what is left. A larger s² raises the prior everywhere; σ² "
        "sets how closely the mean follows the context points.",
        3,
        {"net": "toy-gap-mlp", "post_n": 20, "post_x": 5.0, "post_noise": 1.0,
         "post_prior": 0.032, "post_mean": "zero"},
    ),
    "kernel": Exercise(
        "Trained kernel vs kernel at initialization",
        "Section 2 shows the kernel of the tanh MLP **at its initialization** (a finite-width "
        "version of the NTK of Jacot et al.). Switch the network to the trained tanh MLP: "
        "where did training change the similarity between inputs? Then compare the ReLU MLP "
        "trained and at initialization.",
        "Trained on a sinusoid, the tanh network's Jacobians acquired its period: inputs half a "
        "period apart now point in opposite directions (negative cosines, blue), which the "
        "kernel at initialization lacks (the cosines change by about 0.3 on average over 25 "
        "probes). The wide one-hidden-layer ReLU network barely changed its kernel in training "
        "(about 0.006): wide, shallow networks train in the 'lazy' regime where the NTK stays "
        "near its initial value. The paper linearizes the trained network so that the kernel "
        "carries what the source task taught; how much that is depends on the network.",
        2,
        {"net": "sinusoids-mlp@init", "kernel_points": 31, "kernel_scale": "cosine"},
    ),
    "space": Exercise(
        "When does parameter space win?",
        "In section 4, find where the two cost curves cross as you move p. Then choose "
        "'the last layer only' and press **Run the measurement** to time both solves.",
        "The cost counts are symmetric in n·o and p: whichever dimension is smaller gives "
        "the cheaper system, and the engine's auto strategy works in that space (dense: the "
        "smaller Gram matrix; matrix-free: CG in the smaller space). With only the head "
        "linearized (p = 513) the measured function-space time overtakes the parameter-space "
        "time between n = 512 and 1,000 on the 2-core machine the app was built on; with all "
        "1,537 parameters the task's 1,000 points do not reach the crossing.",
        4,
        {"net": "toy-gap-mlp", "cost_p": 1_000, "cost_linearize": "last"},
    ),
    "kinks": Exercise(
        "Freeze the kinks",
        "Section 5 compares the finite-difference Fisher product with frozen and live ReLU "
        "kinks. Why are the curves identical for small ε? Why do they split for large ε, "
        "most clearly with central differences? Then switch to the tanh network.",
        "For small ε the rounding error (∝ 1/ε) dominates and no unit crosses its kink. For "
        "larger ε some ReLUs change sign between θ and θ + εv: with live kinks their error "
        "shrinks only like ε^½ as ε decreases, which caps the accuracy; frozen kinks replay "
        "the pattern at θ and keep the O(ε²) of central differences. A tanh network has no "
        "kinks: the two curves coincide.",
        5,
        {"net": "toy-gap-mlp", "fd_scheme": "both", "fd_n": 256},
    ),
}
