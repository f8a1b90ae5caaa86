"""Classification with the linearized network (Figure 4, Table 1 of Maddox et al., 2021).

:func:`classification` — Figure 4: a network trained on a classification task against the
Bayesian GLM on its Jacobian (Eq. 4; :func:`ntkcore.adapt_classifier`) fit on the same
training points, with the finite NTK (``mean="zero"``) and the linearized NN
(``mean="network"``), by MAP, Laplace and variational inference; test accuracy, negative
log-likelihood and expected calibration error (15 equal-width bins), plus the
reliability-diagram bins.

:func:`unsupervised_transfer` — Table 1: a network trained *without labels* (the encoder of
an autoencoder, :class:`ntkcore.zoo.ConvAutoencoder`, trained to reconstruct the source
images), a fixed random projection of its code to 10 outputs, and a GLM on the Jacobian of
the top k encoder layers or of all of them (``ntkcore.last_layers``), against a linear
classifier on the encoder's activations.

Prior variance
--------------
s² is chosen per network and mean function by the Laplace evidence
(:meth:`ntkcore.LinearizedClassifier.log_marginal_likelihood`) on a grid, on the training
points only (no test data; the ``evidence`` table lists every grid value). MAP and Laplace
use the chosen s²; VI starts at that MAP with the same prior.

Presets
-------
``small`` (CPU, the app runs it live): LeNet-3 trained on the 2,000 MNIST source images
(zoo preset ``mnist-lenet3``), the GLM on the Jacobian of its **last layer** (p = 1,210) at
the first 500 source images, scored on the 1,000 test images; s² from the grid
{10⁻², 10⁻¹, 1}; VI 300 full-batch steps. The last-layer restriction and the 500
points are what fit the time budget: the all-layer Jacobian (p = 34,622) needs matrix-free
Newton–CG with hundreds of products per MAP (about 20 s per MAP at n = 500 on one busy CPU
core, measured), and a dense last-layer Newton step at n = 1,000 costs 14.6 GFLOP
(``benchmarks/RESULTS.md``). ``full`` (GPU when present): PreResNet-20/56/110 trained on
``fashion-mnist-32`` (Figure 4's depth sweep on our 32×32 stand-in for CIFAR-10), all
layers, all 2,000 source images, matrix-free with a Nyström-sketched Laplace covariance,
VI on mini-batches of 256 for 2,000 steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ntkcore import data as datasets
from ntkcore import zoo
from ntkcore.classifier import ExplicitJacobian, LinearizedClassifier, adapt_classifier
from ntkcore.experiments.registry import (
    ExperimentTables,
    Progress,
    ProgressSteps,
    check_preset,
    resolve_device,
)
from ntkcore.linearization import Linearization
from ntkcore.metrics import accuracy, categorical_nll, reliability_bins
from ntkcore.parameters import last_layers

__all__ = ["METHODS", "MODELS", "FixedProjection", "classification", "unsupervised_transfer"]

#: Methods of :func:`classification`: the network itself and the GLM's three posteriors.
METHODS: tuple[str, ...] = ("network", "map", "laplace", "vi")
#: GLM mean functions and the names the tables give them.
MODELS: dict[str, str] = {"zero": "finite-ntk", "network": "linearized-nn"}
ECE_BINS = 15


@dataclass(frozen=True)
class _Config:
    dataset: str
    archs: tuple[str, ...]
    n_train: int | None
    n_test: int | None
    layers: int  # 0: all layers
    grid: tuple[float, ...]
    vi_steps: int
    vi_batch: int | None


_PRESETS = {
    "small": _Config("mnist", ("lenet3",), 500, None, 1, (1e-2, 1e-1, 1.0), 300, None),
    "full": _Config(
        "fashion-mnist-32", ("preresnet20", "preresnet56", "preresnet110"), None, None, 0,
        (1e-3, 1e-2, 1e-1, 1.0), 2000, 256,
    ),
}


# ---------------------------------------------------------------------------- helpers
def _source_network(
    arch: str, dataset: str, seed: int, device: torch.device, progress
) -> nn.Module:
    """The trained network: the zoo preset ``<dataset>-<arch>`` when there is one (with this
    seed), else ``zoo.pretrained(arch, dataset, seed)`` with the architecture's defaults."""
    try:
        p = zoo.preset(f"{dataset}-{arch}")
    except ValueError:
        return zoo.pretrained(arch, dataset, seed, device=device, progress=progress)
    return zoo.pretrained(
        p.arch, p.dataset, seed, data_kw=dict(p.data_kw), device=device, progress=progress,
        **p.hyper,
    )


def _scores(probs: Tensor, labels: Tensor) -> dict[str, float]:
    return {
        "accuracy": accuracy(probs, labels),
        "nll": categorical_nll(probs, labels),
        "ece": reliability_bins(probs, labels, ECE_BINS).ece,
    }


def _reliability_rows(probs: Tensor, labels: Tensor, **keys: Any) -> list[dict[str, Any]]:
    bins = reliability_bins(probs, labels, ECE_BINS)
    return [
        {
            **keys,
            "bin": b,
            "lower": float(bins.lower[b]),
            "upper": float(bins.upper[b]),
            "confidence": float(bins.confidence[b]),
            "accuracy": float(bins.accuracy[b]),
            "count": int(bins.count[b]),
        }
        for b in range(ECE_BINS)
    ]


class _Ticker:
    """Advances a step's sub-progress by one of ``total`` parts per call."""

    def __init__(self, sub, total: int) -> None:
        self.sub, self.total, self.done = sub, total, 0

    def __call__(self) -> None:
        self.done += 1
        self.sub(self.done / self.total)


def _check_methods(methods: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    methods = tuple(methods)
    bad = [m for m in methods if m not in allowed]
    if not methods or bad:
        raise ValueError(f"methods must be a non-empty subset of {tuple(allowed)}, got {methods}")
    return methods


def _check_means(means: Sequence[str]) -> tuple[str, ...]:
    means = tuple(means)
    bad = [m for m in means if m not in MODELS]
    if not means or bad:
        raise ValueError(f"means must be a non-empty subset of {tuple(MODELS)}, got {means}")
    return means


def _select_prior(
    products, y: Tensor, mean: str, grid: Sequence[float], *, seed: int, tick
) -> tuple[LinearizedClassifier, list[dict[str, Any]]]:
    """Laplace fits over ``grid`` (each Newton warm-started at the previous MAP); the fit
    with the largest evidence and one row per grid value."""
    best: LinearizedClassifier | None = None
    rows, weights = [], None
    for s2 in grid:
        t0 = time.perf_counter()
        clf = adapt_classifier(
            products, None, y, method="laplace", prior_variance=s2, mean=mean,
            initial_weights=weights, seed=seed,
        )
        clf.diagnostics["fit_seconds"] = time.perf_counter() - t0
        weights = clf.weights
        evidence = clf.log_marginal_likelihood()
        rows.append({"prior_variance": s2, "log_evidence": evidence})
        if best is None or evidence > best.log_marginal_likelihood():
            best = clf
        tick()
    assert best is not None
    for row in rows:
        row["chosen"] = row["prior_variance"] == best.prior_variance
    return best, rows


def _products(lin: Linearization, x: Tensor):
    """Explicit Jacobian when the GLM is small enough, else cached products (as ``auto``)."""
    from ntkcore.classifier import _choose_strategy

    strategy, _ = _choose_strategy(x.shape[0] * lin.output_dim(x), lin.num_params, lin.device)
    return ExplicitJacobian(lin, x) if strategy == "dense" else lin.at(x)


def _glm_rows(
    lin: Linearization,
    x: Tensor,
    y: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    methods: tuple[str, ...],
    means: tuple[str, ...],
    grid: Sequence[float],
    prior_variance: float | None,
    link: str,
    family: str,
    vi_steps: int,
    vi_batch: int | None,
    seed: int,
    keys: dict[str, Any],
    steps: ProgressSteps,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows of the main, reliability and evidence tables for the GLM methods."""
    main, reliability, evidence = [], [], []
    glm_methods = [m for m in methods if m != "network"]
    if not glm_methods:
        return main, reliability, evidence
    products = _products(lin, x)
    for mean in means:
        model_name = MODELS[mean]
        grid_here = (prior_variance,) if prior_variance is not None else tuple(grid)
        sub = steps.start(f"{keys.get('arch', '')} {model_name}: Laplace evidence over s²")
        tick = _Ticker(sub, len(grid_here))

        t0 = time.perf_counter()
        fit, ev_rows = _select_prior(products, y, mean, grid_here, seed=seed, tick=tick)
        select_seconds = time.perf_counter() - t0
        for row in ev_rows:
            evidence.append({**keys, "model": model_name, **row})
        s2 = fit.prior_variance
        d = fit.diagnostics
        fits: dict[str, tuple[LinearizedClassifier, str, float]] = {
            "map": (fit, "map", d["map_seconds"]),
            "laplace": (fit, link, d["fit_seconds"]),
        }
        if "vi" in glm_methods:
            steps.start(f"{keys.get('arch', '')} {model_name}: variational inference")
            t0 = time.perf_counter()
            vi = adapt_classifier(
                products, None, y, method="vi", prior_variance=s2, mean=mean, family=family,
                vi_steps=vi_steps, batch_size=vi_batch, initial_weights=fit.weights, seed=seed,
            )
            # VI starts at the MAP: its time includes the MAP's
            fits["vi"] = (vi, link, time.perf_counter() - t0 + d["map_seconds"])
        for method in glm_methods:
            clf, method_link, seconds = fits[method]
            t0 = time.perf_counter()
            probs = clf.predict_proba(x_test, link=method_link, seed=seed)
            seconds += time.perf_counter() - t0
            row_keys = {**keys, "model": model_name, "method": method}
            main.append({
                **row_keys,
                **_scores(probs, y_test),
                "seconds": seconds,
                "prior_variance": s2,
                "link": method_link,
                "num_params": lin.num_params,
                "selection_seconds": select_seconds,
            })
            reliability.extend(_reliability_rows(probs, y_test, **row_keys))
    return main, reliability, evidence


# ---------------------------------------------------------------------------- Figure 4
def classification(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    dataset: str | None = None,
    arch: tuple[str, ...] = (),
    methods: tuple[str, ...] = METHODS,
    means: tuple[str, ...] = ("zero", "network"),
    n_train: int | None = None,
    n_test: int | None = None,
    layers: int | None = None,
    prior_variance: float | None = None,
    link: str = "probit",
    family: str = "meanfield",
    vi_steps: int | None = None,
) -> ExperimentTables:
    """The network vs the GLM on its Jacobian: accuracy, NLL and ECE (Figure 4).

    The network is trained on the task's source split (cached in the zoo); the GLM
    (:func:`ntkcore.adapt_classifier`) is fit on the first ``n_train`` of the same source
    images and every model is scored on the task's test split. See the module docstring for
    the presets and the choice of s².

    Parameters
    ----------
    preset : {"small", "full"}
    seed : int
        Seed of the network's training (the zoo preset's weights for seed 0) and of the
        sketches, VI samples and Monte Carlo draws.
    progress : callable, optional
        ``progress(fraction, message)``; exceptions it raises propagate.
    device : torch.device or str, optional
        Default: CPU for ``small``, the GPU (when present) for ``full``.
    dataset : str, optional
        An ``ntkcore.data`` classification task; default the preset's.
    arch : tuple of str
        Zoo architectures (one row group each); ``()`` takes the preset's.
    methods : tuple of str
        From ``network``, ``map``, ``laplace``, ``vi``.
    means : tuple of str
        GLM mean functions: ``zero`` (finite NTK) and/or ``network`` (linearized NN).
    n_train, n_test : int, optional
        Training points of the GLM (a prefix of the source split) and test points; default
        the preset's.
    layers : int, optional
        Linearize the last ``layers`` parameterized layers (``ntkcore.last_layers``); 0 for
        all; default the preset's.
    prior_variance : float, optional
        Fix s² instead of choosing it by the Laplace evidence.
    link : {"probit", "mc"}
        Predictive of ``laplace`` and ``vi``.
    family : {"meanfield", "lowrank"}
        VI family.
    vi_steps : int, optional
        Default the preset's.

    Returns
    -------
    ExperimentTables
        ``main``: ``arch, dataset, seed, model, method, accuracy, nll, ece, seconds,
        prior_variance, link, num_params, selection_seconds, n_train, n_test, layers``
        (``model`` is ``network``, ``finite-ntk`` or ``linearized-nn``; ``seconds`` is the
        method's fit — VI's includes the MAP it starts from — plus its predictions;
        ``selection_seconds`` the evidence search); ``reliability``: ``arch, dataset,
        seed, model, method, bin, lower, upper, confidence, accuracy, count`` (15 bins);
        ``evidence``: ``arch, dataset, seed, model, prior_variance, log_evidence,
        chosen``.
    """
    preset = check_preset(preset)
    cfg = _PRESETS[preset]
    dev = resolve_device(device, preset)
    methods = _check_methods(methods, METHODS)
    means = _check_means(means)
    if link not in ("probit", "mc"):
        raise ValueError(f"link must be 'probit' or 'mc', got {link!r}")
    if family not in ("meanfield", "lowrank"):
        raise ValueError(f"family must be 'meanfield' or 'lowrank', got {family!r}")
    dataset = cfg.dataset if dataset is None else dataset
    archs = tuple(arch) if arch else cfg.archs
    if isinstance(arch, str):
        archs = (arch,)
    layers = cfg.layers if layers is None else layers
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
        raise ValueError(f"layers must be an int >= 0 (0: all layers), got {layers!r}")
    vi_steps = cfg.vi_steps if vi_steps is None else vi_steps
    task = datasets.load(dataset)
    if task.kind != "classification":
        raise ValueError(f"dataset {dataset!r} is a {task.kind} task, not classification")
    x_src, y_src = task.source
    x_test, y_test = task.test
    n_train = cfg.n_train if n_train is None else n_train
    n_test = cfg.n_test if n_test is None else n_test
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 2):
            raise ValueError(f"{name} must be an int >= 2 or None, got {value!r}")
    x, y = x_src[:n_train].to(dev), y_src[:n_train].to(dev)
    x_test, y_test = x_test[:n_test].to(dev), y_test[:n_test].to(dev)
    grid = cfg.grid if prior_variance is None else (float(prior_variance),)
    glm = [m for m in methods if m != "network"]
    weights = [3.0]  # per architecture: the network, then per mean the evidence grid and VI
    if glm:
        weights += ([float(len(grid))] + ([2.0] if "vi" in glm else [])) * len(means)
    steps = ProgressSteps(progress, weights * len(archs))
    main, reliability, evidence = [], [], []
    for name in archs:
        keys = {"arch": name, "dataset": dataset, "seed": seed}
        net = _source_network(name, dataset, seed, dev, steps.start(f"training {name}"))
        t0 = time.perf_counter()
        with torch.no_grad():
            probs = torch.softmax(net.eval()(x_test).double(), -1)
        if "network" in methods:
            main.append({
                **keys, "model": "network", "method": "network", **_scores(probs, y_test),
                "seconds": time.perf_counter() - t0, "prior_variance": math.nan,
                "link": "softmax", "num_params": sum(p.numel() for p in net.parameters()),
                "selection_seconds": 0.0,
            })
            reliability.extend(
                _reliability_rows(probs, y_test, **keys, model="network", method="network")
            )
        params = None if layers == 0 else last_layers(net, layers)
        lin = Linearization(net, params=params)
        rows = _glm_rows(
            lin, x, y, x_test, y_test, methods=methods, means=means, grid=grid,
            prior_variance=prior_variance, link=link, family=family, vi_steps=vi_steps,
            vi_batch=cfg.vi_batch, seed=seed, keys=keys, steps=steps,
        )
        main += rows[0]
        reliability += rows[1]
        evidence += rows[2]
    steps.done()
    table = pd.DataFrame(main)
    table["n_train"] = x.shape[0]
    table["n_test"] = x_test.shape[0]
    table["layers"] = "all" if layers == 0 else f"last {layers}"
    return ExperimentTables({
        "main": table,
        "reliability": pd.DataFrame(reliability),
        "evidence": pd.DataFrame(
            evidence,
            columns=["arch", "dataset", "seed", "model", "prior_variance", "log_evidence",
                     "chosen"],
        ),
    })


# ---------------------------------------------------------------------------- Table 1
class FixedProjection(nn.Module):
    """A fixed random linear map code → outputs (a buffer, not a parameter: never trained
    nor linearized), W_ab ~ N(0, 1/code) from ``seed``."""

    def __init__(self, code: int, outputs: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(outputs, code, generator=g) / code**0.5)

    def forward(self, h: Tensor) -> Tensor:
        return h @ self.weight.mT


@dataclass(frozen=True)
class _Unlabelled:
    """The source images as a reconstruction task (what ``zoo.fetch`` trains on)."""

    source: tuple[Tensor, Tensor]
    meta: dict[str, Any]


def _unit_prior_variance(lin: Linearization, x: Tensor, probes: int = 8, seed: int = 0) -> float:
    """s² = 1 / (mean diagonal of J Jᵀ) at ``x``: prior logits of unit variance on average,
    tr(J Jᵀ) = E‖J v‖² (v ~ N(0, I)) estimated by Hutchinson with ``probes`` products."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(probes, lin.num_params, generator=g).to(lin.device, lin.dtype)
    jv = lin.jvp(x, v)  # shape: (probes, n, o)
    return float(jv[0].numel() / jv.double().square().sum((1, 2)).mean())


_TRANSFER = {
    "small": {"n_train": 500, "vi_steps": 150, "vi_batch": 128},
    "full": {"n_train": None, "vi_steps": 2000, "vi_batch": 256},
}


def unsupervised_transfer(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    dataset: str = "mnist",
    layers: tuple[int, ...] = (1, 2, 3, 0),
    methods: tuple[str, ...] = ("linear", "map", "vi"),
    n_train: int | None = None,
    n_test: int | None = None,
    prior_variance: float | str = 1.0,
    vi_steps: int | None = None,
) -> pd.DataFrame:
    """Classification from the Jacobian of an unsupervised network (Table 1's setting).

    An autoencoder (zoo ``autoencoder``, :class:`ntkcore.zoo.ConvAutoencoder`) is trained
    to reconstruct the task's source images, labels unused; its encoder followed by a fixed
    random projection of the 16-unit code to 10 outputs is the network. A finite-NTK GLM
    (``mean="zero"``, Eq. 4) on the Jacobian of its top k parameterized encoder layers
    (``last_layers``; 0 = all four) is fit on the first ``n_train`` labelled images of the
    target pool — MAP for every k, VI for all layers (as in Table 1) — and compared with a
    linear classifier on the encoder's code (scikit-learn's multinomial
    ``LogisticRegression``, C = 1: the paper's "activation baseline"). Scored on the test
    split.

    s² defaults to 1, the paper's prior θ' ~ N(0, I_p) (Section 3): the evidence search of
    :func:`classification` would need a Laplace covariance of the all-layer GLM
    (p = 20,912), too slow for the small preset. ``prior_variance="unit-logits"`` takes
    s² = 1 / (mean diagonal of J Jᵀ) at the training inputs instead (prior logits of unit
    variance on average, the Figure 2 problem's rule); on MNIST it gave s² ≈ 0.005 and
    over-regularized (all layers: 54% against 82% with s² = 1, the linear baseline 63%;
    ``benchmarks/RESULTS.md``).

    Parameters
    ----------
    preset : {"small", "full"}
        ``small``: 500 labelled images, VI 150 steps on mini-batches of 128; ``full``: all
        2,000 target-pool images, VI 2,000 steps of 256.
    seed, progress, device
        As :func:`classification` (``seed`` also draws the projection).
    dataset : {"mnist", "fashion-mnist"}
    layers : tuple of int
        k values (0: all layers).
    methods : tuple of str
        From ``linear``, ``map``, ``vi``.
    n_train, n_test : int, optional
    prior_variance : float or "unit-logits"
        s² for every k (default 1), or the unit-prior-logits rule above.
    vi_steps : int, optional
        Default the preset's (``small``: 150 steps of 128 images).

    Returns
    -------
    pandas.DataFrame
        ``features, method, accuracy, nll, ece, seconds, prior_variance, num_params,
        dataset, seed, n_train`` with ``features`` one of ``activations``, ``top-1``,
        ``top-2``, ``top-3``, ``all``.
    """
    preset = check_preset(preset)
    dev = resolve_device(device, preset)
    cfg = _TRANSFER[preset]
    methods = _check_methods(methods, ("linear", "map", "vi"))
    if prior_variance != "unit-logits" and not (
        isinstance(prior_variance, int | float) and not isinstance(prior_variance, bool)
        and math.isfinite(prior_variance) and prior_variance > 0
    ):
        raise ValueError(
            f"prior_variance must be a positive number or 'unit-logits', got {prior_variance!r}"
        )
    layers = tuple(layers)
    if not layers or any(isinstance(k, bool) or not isinstance(k, int) or k < 0
                         for k in layers):
        raise ValueError(f"layers must be ints >= 0 (0: all layers), got {layers}")
    task = datasets.load(dataset)
    if task.kind != "classification":
        raise ValueError(f"dataset {dataset!r} is a {task.kind} task, not classification")
    n_train = cfg["n_train"] if n_train is None else n_train
    vi_steps = cfg["vi_steps"] if vi_steps is None else vi_steps
    x_src, _ = task.source
    x, y = (t[:n_train].to(dev) for t in task.target)
    x_test, y_test = (t[:n_test].to(dev) for t in task.test)
    glm_layers = layers if "map" in methods else ((0,) if "vi" in methods else ())
    steps = ProgressSteps(progress, [3.0, 1.0] + [2.0] * len(glm_layers))
    unlabelled = _Unlabelled(
        (x_src, x_src.flatten(1)),
        {"input_shape": tuple(task.input_shape), "output_dim": x_src[0].numel(),
         "kind": "reconstruction"},
    )
    auto = zoo.pretrained(
        "autoencoder", f"{dataset}-unlabelled", seed, task=unlabelled, device=dev,
        progress=steps.start("training the autoencoder (no labels)"),
    )
    net = nn.Sequential(auto.encoder, FixedProjection(auto.code, 10, seed)).to(dev).eval()
    keys = {"dataset": dataset, "seed": seed, "n_train": x.shape[0]}
    rows: list[dict[str, Any]] = []
    steps.start("linear classifier on the code")
    if "linear" in methods:
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        with torch.no_grad():
            code, code_test = auto.encoder(x).cpu().double(), auto.encoder(x_test).cpu().double()
        reg = LogisticRegression(C=1.0, max_iter=5000).fit(code.numpy(), y.cpu().numpy())
        probs = torch.as_tensor(reg.predict_proba(code_test.numpy()))
        rows.append({
            "features": "activations", "method": "linear",
            **_scores(probs, y_test.cpu()), "seconds": time.perf_counter() - t0,
            "prior_variance": 1.0, "num_params": int(reg.coef_.size + reg.intercept_.size),
            **keys,
        })
    for k in glm_layers:
        name = "all" if k == 0 else f"top-{k}"
        steps.start(f"GLM on the Jacobian of {name} layers")
        lin = Linearization(net, params=None if k == 0 else last_layers(net, k))
        s2 = (
            _unit_prior_variance(lin, x, seed=seed)
            if prior_variance == "unit-logits"
            else float(prior_variance)
        )
        products = _products(lin, x)
        t0 = time.perf_counter()
        fit = adapt_classifier(
            products, None, y, method="map", prior_variance=s2, mean="zero", seed=seed
        )
        map_seconds = time.perf_counter() - t0
        todo = [("map", fit, map_seconds)] if "map" in methods else []
        if "vi" in methods and k == 0:
            t0 = time.perf_counter()
            vi = adapt_classifier(
                products, None, y, method="vi", prior_variance=s2, mean="zero",
                vi_steps=vi_steps, batch_size=cfg["vi_batch"], initial_weights=fit.weights,
                seed=seed,
            )
            todo.append(("vi", vi, time.perf_counter() - t0 + map_seconds))
        for method, clf, seconds in todo:
            t0 = time.perf_counter()
            probs = clf.predict_proba(x_test, seed=seed)
            rows.append({
                "features": name, "method": method, **_scores(probs, y_test),
                "seconds": seconds + time.perf_counter() - t0, "prior_variance": s2,
                "num_params": lin.num_params, **keys,
            })
    steps.done()
    return pd.DataFrame(rows)
