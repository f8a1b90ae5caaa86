"""Inductive biases of linearized networks (Section 4, Figure 3).

Figure 3 of Maddox et al. (2021) shows, on 1-D regression problems with a gap in the data,
the posterior mean and ±2σ band of the GP whose kernel is the network's finite NTK,
J(x) J(x')ᵀ, next to the network's own prediction:

* left / centre: single-hidden-layer ReLU MLPs of widths 5, 50, 500 and 5,000, untrained
  (at their random initialization) and trained, on ``toy-gap`` (variant ``relu``: two
  clusters around ±5, y = 0.1 x² + |x| + N(0, 0.9²), test grid over [−15, 15]);
* right: three-hidden-layer tanh MLPs with about 21,000 parameters each but differently
  shaped hidden layers, trained on a sinusoid with a gap (``toy-gap`` variant ``sine``).

The GP follows the reference notebook (amzn/xfer ``finite_ntk/notebooks/relu_plots``):
prior mean zero (``adapt(mean="zero")``, the finite NTK; ``mean="network"`` is the
linearized network of Eq. 1), prior variance s² = 1 on the linear weights, and observation
noise σ² = max(10⁻³, the network's own mean squared error on the training data), conditioned
on the training data; the band is the latent p(f* | y) ± 2σ (noise not added). The curves of
one model on any 1-D task come from :func:`model_curves`, which the app's
Compare-architectures page calls one model at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ntkcore import data, zoo
from ntkcore.experiments.registry import (
    ExperimentTables,
    Progress,
    ProgressSteps,
    check_preset,
    resolve_device,
)
from ntkcore.linearization import Linearization
from ntkcore.posterior import MEANS, adapt

__all__ = ["CURVE_COLUMNS", "default_noise_variance", "inductive_biases", "model_curves"]

#: Columns of :func:`model_curves`.
CURVE_COLUMNS = ("x", "network", "mean", "std", "lower", "upper")
#: Figure 3 left/centre: hidden units of the single-layer ReLU networks (the paper's).
RELU_WIDTHS = (5, 50, 500, 5000)
#: Figure 3 right: three tanh hidden layers, about 21,000 parameters each (20,501; 21,041;
#: 21,559): uniform, a wide middle between narrow layers, a wide first layer.
TANH_SHAPES = ("100-100-100", "10-1000-10", "500-38-38")
#: Training of the zoo's ``toy-gap-mlp`` preset (Adam, full batch, cosine schedule).
RELU_TRAINING = {"epochs": 1500, "lr": 1e-2}
TANH_TRAINING = {"epochs": 3000, "lr": 2e-3}
_GRID = {"small": 200, "full": 1000}
_NOISE_FLOOR = 1e-3


def default_noise_variance(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """σ² = max(10⁻³, mean squared error of ``model`` on (x, y)): the reference notebook's
    rule (an untrained network's large error makes a large noise variance)."""
    with torch.no_grad():
        mse = float((model(x).reshape(y.shape) - y).square().mean())
    return max(_NOISE_FLOOR, mse)


def model_curves(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_grid: Tensor,
    *,
    noise_variance: float | None = None,
    prior_variance: float = 1.0,
    mean: str = "zero",
    num_std: float = 2.0,
) -> pd.DataFrame:
    r"""One network's Figure-3 curves: its prediction and its finite-NTK GP posterior.

    Conditions the GP with kernel s² J(x) J(x')ᵀ (and prior mean 0 or the network,
    ``mean``) on (x_train, y_train) with :func:`ntkcore.adapt` (Eq. 3) and evaluates it on
    ``x_grid``.

    Parameters
    ----------
    model : nn.Module
        A network with 1-D inputs and one output (trained or not).
    x_train, y_train : Tensor
        Conditioning data, shapes (n, 1) and (n, 1) or (n,).
    x_grid : Tensor
        Where to draw the curves, shape (m, 1).
    noise_variance : float, optional
        σ²; default :func:`default_noise_variance` (the reference notebook's rule).
    prior_variance : float
        s², the prior variance of the linear weights.
    mean : {"zero", "network"}
        GP prior mean: 0 (the finite NTK, the reference notebook's choice) or f(x; θ) (the
        linearized network, Eq. 1).
    num_std : float
        Half-width of the band in posterior standard deviations.

    Returns
    -------
    pandas.DataFrame
        One row per grid point, sorted by x: ``x``, ``network`` (f(x; θ)), ``mean`` and
        ``std`` of the latent posterior, ``lower``/``upper`` = mean ∓ num_std·std, and
        ``noise_variance`` (σ² used).

    Raises
    ------
    ValueError
        For inputs or outputs that are not one-dimensional, or a bad option.
    """
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    if not (isinstance(num_std, int | float) and num_std > 0):
        raise ValueError(f"num_std must be a positive number, got {num_std!r}")
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("the model has no parameters")
    dtype, device = first.dtype, first.device
    x_train, x_grid = (torch.as_tensor(t).to(device, dtype) for t in (x_train, x_grid))
    y_train = torch.as_tensor(y_train).to(device, dtype)
    for name, t in (("x_train", x_train), ("x_grid", x_grid)):
        if t.dim() != 2 or t.shape[1] != 1:
            raise ValueError(f"{name} must have shape (n, 1) (1-D inputs), got {tuple(t.shape)}")
    if y_train.dim() == 1:
        y_train = y_train[:, None]
    if y_train.shape != (x_train.shape[0], 1):
        raise ValueError(
            f"y_train must have shape ({x_train.shape[0]},) or ({x_train.shape[0]}, 1), "
            f"got {tuple(y_train.shape)}"
        )
    lin = Linearization(model)
    if lin.output_dim(x_grid) != 1:
        raise ValueError(f"model_curves draws one output; the model has {lin.output_dim(x_grid)}")
    if noise_variance is None:
        noise_variance = default_noise_variance(model, x_train, y_train)
    posterior = adapt(lin, x_train, y_train, noise_variance=noise_variance,
                      prior_variance=prior_variance, mean=mean)  # fmt: skip
    order = torch.argsort(x_grid[:, 0])
    x_sorted = x_grid[order]
    prediction = posterior.predict(x_sorted)
    network = lin(x_sorted)
    std = prediction.stddev[:, 0]
    mu = prediction.mean[:, 0]

    def numpy(t: Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    return pd.DataFrame({
        "x": numpy(x_sorted[:, 0]), "network": numpy(network[:, 0]), "mean": numpy(mu),
        "std": numpy(std), "lower": numpy(mu - num_std * std), "upper": numpy(mu + num_std * std),
        "noise_variance": float(noise_variance),
    })  # fmt: skip


def _shape(text: str) -> list[int]:
    try:
        widths = [int(part) for part in str(text).split("-")]
    except ValueError:
        widths = []
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"a layer shape looks like '100-100-100' (positive ints), got {text!r}")
    return widths


def inductive_biases(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    relu_widths: tuple[int, ...] = RELU_WIDTHS,
    tanh_shapes: tuple[str, ...] = TANH_SHAPES,
    mean: str = "zero",
    prior_variance: float = 1.0,
    n_grid: int | None = None,
) -> ExperimentTables:
    """Figure 3: linearized-network posteriors vs network predictions for MLPs of several
    widths (ReLU, untrained and trained) and shapes (tanh, about 21,000 parameters).

    Networks are the zoo's ``mlp`` trained with ``zoo.fetch`` (cached) on the source split
    of ``toy-gap`` (``variant="relu"`` and ``"sine"``, ``source_seed=seed``) with seed
    ``seed``; "untrained" networks are the same networks at their initialization. See the
    module docstring for the GP. ``small`` and ``full`` use the paper's widths; ``full``
    draws on a finer grid over the task's test range (1,000 points instead of 200). The
    small preset takes about 6 s of CPU time with the networks cached and 38 s when it
    trains the seven networks.

    Parameters
    ----------
    preset : {"small", "full"}
    seed : int
        Seed of the data draw and of the networks.
    progress : callable, optional
    device : torch.device or str, optional
    relu_widths : tuple of int
        Hidden units of the single-layer ReLU networks (Figure 3 left/centre).
    tanh_shapes : tuple of str
        Hidden-layer shapes ``"a-b-c"`` of the tanh networks (Figure 3 right).
    mean : {"zero", "network"}
        GP prior mean (see :func:`model_curves`).
    prior_variance : float
        s².
    n_grid : int, optional
        Grid points per curve (default by preset: 200 / 1,000).

    Returns
    -------
    ExperimentTables
        ``main``: one row per model × trained × grid point with ``panel`` (``relu-width`` or
        ``tanh-shape``), ``task``, ``model``, ``trained``, ``width`` (hidden units per layer,
        ``"5000"`` or ``"10-1000-10"``), ``depth``, ``num_params``, ``noise_variance`` and the
        curve columns of :func:`model_curves` (``x, network, mean, std, lower, upper``).
        ``data``: the training points (``task, x, y``).
    """
    preset = check_preset(preset)
    device = resolve_device(device, preset)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n_grid = _GRID[preset] if n_grid is None else n_grid
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 2:
        raise ValueError(f"n_grid must be an int >= 2, got {n_grid!r}")
    relu_widths = (relu_widths,) if isinstance(relu_widths, int) else tuple(relu_widths)
    tanh_shapes = (tanh_shapes,) if isinstance(tanh_shapes, str) else tuple(tanh_shapes)
    for w in relu_widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"relu_widths must be positive ints, got {relu_widths!r}")
    shapes = [_shape(s) for s in tanh_shapes]
    if not relu_widths and not shapes:
        raise ValueError("nothing to draw: relu_widths and tanh_shapes are both empty")
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
    if not (isinstance(prior_variance, int | float) and math.isfinite(prior_variance)
            and prior_variance > 0):  # fmt: skip
        raise ValueError(f"prior_variance must be a positive number, got {prior_variance!r}")

    panels = []  # (panel, variant, arch keywords, training, label, width text)
    for w in relu_widths:
        panels.append(("relu-width", "relu", {"width": w, "depth": 1, "activation": "relu"},
                       RELU_TRAINING, f"relu-{w}", str(w)))  # fmt: skip
    for widths in shapes:
        label = "-".join(map(str, widths))
        panels.append(("tanh-shape", "sine", {"width": tuple(widths), "depth": len(widths),
                       "activation": "tanh"}, TANH_TRAINING, f"tanh-{label}", label))  # fmt: skip
    steps = ProgressSteps(progress, [2.0] * len(panels) + [1.0] * (2 * len(panels)))
    tasks = {
        variant: data.load("toy-gap", variant=variant, source_seed=seed)
        for variant in sorted({p[1] for p in panels})
    }
    trained: list[tuple[nn.Module, nn.Module]] = []
    for _, variant, arch, training, label, _ in panels:
        sub = steps.start(f"training {label} on toy-gap ({variant})")
        task = tasks[variant]
        entry = zoo.fetch("mlp", "toy-gap", seed, task=task,
                          data_kw={"variant": variant, "source_seed": seed}, device=device,
                          progress=sub, **arch, **training)  # fmt: skip
        with zoo.seeded(seed, device):
            initial = zoo.create("mlp", in_features=1, out_features=1, **arch)
        trained.append((initial.to(device).eval(), entry.model))
    curves = []
    for (panel, variant, arch, _, label, width), (initial, network) in zip(
        panels, trained, strict=True
    ):
        task = tasks[variant]
        x_train, y_train = (t.to(device) for t in task.source)
        low, high = task.meta.params["test_range"]
        x_grid = torch.linspace(low, high, n_grid, device=device)[:, None]
        num_params = sum(p.numel() for p in network.parameters())
        for is_trained, model in ((False, initial), (True, network)):
            steps.start(f"posterior of {label} ({'trained' if is_trained else 'untrained'})")
            table = model_curves(model, x_train, y_train, x_grid, prior_variance=prior_variance,
                                 mean=mean)  # fmt: skip
            table.insert(0, "panel", panel)
            table.insert(1, "task", f"toy-gap-{variant}")
            table.insert(2, "model", label)
            table.insert(3, "trained", is_trained)
            table.insert(4, "width", width)
            table.insert(5, "depth", arch["depth"])
            table.insert(6, "num_params", num_params)
            curves.append(table)
    points = [
        pd.DataFrame({"task": f"toy-gap-{variant}", "x": task.source[0][:, 0].double().numpy(),
                      "y": task.source[1][:, 0].double().numpy()})  # fmt: skip
        for variant, task in sorted(tasks.items())
    ]
    steps.done()
    return ExperimentTables(
        {"main": pd.concat(curves, ignore_index=True), "data": pd.concat(points, ignore_index=True)}
    )
