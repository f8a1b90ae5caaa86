"""Jacobian similarity across tasks (Section 4, Figure 5) and the NTK spectra (Appendix E.1).

Maddox et al. (2021) train 25 LeNet-3s on each of MNIST1 and MNIST2 (two halves of MNIST)
and Fashion-MNIST, fine-tune the Fashion networks' final layer on MNIST ("to remove
distinctions in class labels and predictions", footnote 3), compute every network's Jacobian
on 5,000 MNIST1 images and compare them pairwise with
sim(A, B) = tr(AᵀBBᵀA) / (‖AAᵀ‖_F ‖BBᵀ‖_F). Their finding: MNIST1 and MNIST2 networks are
"vastly more similar" than either is to a Fashion network, which has "nearly zero"
similarity to them.

What this module runs, on the data shipped with ntkcore (``ntkcore.data``: a 5,000-image
MNIST slice and a 5,000-image Fashion-MNIST slice):

* networks: the zoo's ``lenet3`` trained (``zoo.fetch``, cached) on MNIST1 =
  ``data.load("mnist").source`` (2,000 images), MNIST2 = ``data.load("mnist", half=2).source``
  (the other 2,000) and Fashion = ``data.load("fashion-mnist").source`` (2,000 images), with
  the hyperparameters of the zoo's ``mnist-lenet3`` preset (Adam, lr 1e-3, batch 128,
  20 epochs, cosine schedule). Replicate i of every dataset is trained with seed
  ``seed + i``, so with ``shared_init=True`` (default) the three networks of one replicate
  start from the same initialization (as one training script run with one seed per dataset
  would); ``shared_init=False`` gives every network its own initialization.
* footnote 3: each Fashion network's ``head`` is retrained on MNIST1 with the rest frozen
  (Adam on the frozen 120-d features, the source training's budget: 20 epochs of batches
  of 128, lr 1e-3), starting from the Fashion head.
* probes: the first ``n_probe`` MNIST1 images (at most 2,000 here; the paper used 5,000).
* similarity: :func:`ntkcore.compare_jacobians` over all networks at once (each network's
  Gram matrix is computed once; cross terms only for the pairs reported). Two readings of
  the formula (:mod:`ntkcore.similarity`): ``kernel`` — the cosine of the n·o × n·o NTK
  Gram matrices, invariant to how parameters are indexed; ``parameter`` — the paper's own
  p × n·o layout, the cosine of the p × p matrices JᵀJ, which compares parameters
  coordinate by coordinate and is therefore only meaningful between networks that share
  their initialization.
* spectra: eigenvalues of each network's Gram matrix; from the Gram matrices the
  comparison kept when they fit in memory (products in float32: eigenvalues below about
  1e-6 of the largest are at rounding level), otherwise the top ``n_eigenvalues`` by
  Lanczos (:func:`ntkcore.ntk_eigenvalues`).
* pairs: ``pairing="seed"`` compares replicate i with replicate i (S comparisons per pair,
  the paper's 25); ``"all"`` every replicate with every other (S² per pair, S(S−1)/2 for a
  dataset with itself). A pair of one dataset with itself (e.g. ``"mnist1-mnist1"``,
  optional) compares replicate i with replicate i+1 under ``"seed"`` pairing: the spread
  between seeds on identical data, a reference for the other pairs.

What our data show (``benchmarks/RESULTS.md``, 25 seeds, 100 probes): the paper's direction
holds under both readings — every MNIST1–MNIST2 similarity exceeds every MNIST–Fashion one
(kernel 0.990–0.997 vs 0.763–0.951; parameter 0.765–0.902 vs 0.252–0.440) — but nothing is
"nearly zero" under the kernel reading (trained LeNets' NTKs on the same images share their
dominant directions), and the parameter reading mostly measures the shared initialization:
networks trained on the same data from different initializations score 0.11–0.19, and with
``shared_init=False`` the MNIST1–MNIST2 and MNIST–Fashion ranges overlap.

Returns :class:`~ntkcore.experiments.ExperimentTables` with tables ``main`` (``pair,
dataset_a, dataset_b, seed_a, seed_b, measure, similarity``: the violins of Figure 5),
``spectra`` (``model, dataset, seed, index, eigenvalue``: the largest eigenvalues of every
network's NTK Gram matrix on the probes, Appendix E.1) and ``models`` (``model, dataset,
seed, mnist_accuracy, source_accuracy``: accuracy on the MNIST test split, for the Fashion
networks after the head is retrained, and on the network's own test split before).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

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
from ntkcore.linearization import Linearization, as_linearization
from ntkcore.similarity import MEASURES, compare_jacobians, ntk_eigenvalues

__all__ = ["DATASETS", "ClassKernel", "jacobian_similarity", "ntk_by_class"]

#: Network families: name -> (ntkcore.data name, loader options).
DATASETS: dict[str, tuple[str, dict[str, object]]] = {
    "mnist1": ("mnist", {}),
    "mnist2": ("mnist", {"half": 2}),
    "fashion": ("fashion-mnist", {}),
}
DEFAULT_PAIRS = ("mnist1-mnist2", "mnist1-fashion", "mnist2-fashion")
PAIRINGS = ("seed", "all")
#: The zoo's mnist-lenet3 preset: the same networks as the app's MNIST source model.
TRAINING = {"epochs": 20, "lr": 1e-3, "batch_size": 128}
_PRESETS = {
    # small: 3 × 3 networks, 100 probes (N = 1,000 rows of 34,622 parameters)
    "small": {"seeds": 3, "n_probe": 100, "n_eigenvalues": None},
    # full: the paper's 25 seeds; all 2,000 MNIST1 images (the paper: 5,000)
    "full": {"seeds": 25, "n_probe": 2000, "n_eigenvalues": 100},
}
#: Eigenvalues per network when all were asked for but the Gram matrices were not kept.
_TOP_EIGENVALUES = 100


def _parse_pairs(pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    if isinstance(pairs, str):
        pairs = (pairs,)
    parsed = []
    for pair in pairs:
        parts = str(pair).split("-")
        if len(parts) != 2 or any(p not in DATASETS for p in parts):
            raise ValueError(
                f"pair {pair!r} must be 'a-b' with a, b in {list(DATASETS)}, e.g. 'mnist1-fashion'"
            )
        parsed.append((parts[0], parts[1]))
    if not parsed:
        raise ValueError("pairs must name at least one pair")
    return parsed


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def _retrain_head(
    model: nn.Module, x: Tensor, y: Tensor, *, seed: int, device: torch.device
) -> nn.Module:
    """Footnote 3: a copy of ``model`` whose ``head`` is retrained on (x, y), the rest frozen.

    The frozen layers are deterministic in eval mode (LeNet-3 has no BatchNorm or Dropout),
    so training the head on precomputed features is training it inside the network.
    """
    tuned = copy.deepcopy(model).eval()
    with torch.no_grad():
        features = tuned.features(x)  # shape: (n, 120)
    zoo.train(tuned.head, features, y, loss="cross_entropy", seed=seed, device=device,
              **TRAINING)  # fmt: skip
    return tuned.eval()


@dataclass(frozen=True)
class _Network:
    dataset: str
    seed: int
    model: nn.Module

    @property
    def name(self) -> str:
        return f"{self.dataset}-s{self.seed}"


def _replicate_pairs(
    a: str, b: str, seeds: list[int], pairing: str
) -> list[tuple[int, int]]:
    """Replicate index pairs (i, j) compared for datasets a and b."""
    s = len(seeds)
    if a == b:
        if s < 2:
            raise ValueError(f"pair {a}-{b} needs at least 2 seeds, got {s}")
        if pairing == "seed":
            return [(i, (i + 1) % s) for i in range(s)] if s > 2 else [(0, 1)]
        return list(itertools.combinations(range(s), 2))
    if pairing == "seed":
        return [(i, i) for i in range(s)]
    return list(itertools.product(range(s), range(s)))


def jacobian_similarity(
    *,
    preset: str = "small",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    seeds: int | None = None,
    n_probe: int | None = None,
    pairs: tuple[str, ...] = DEFAULT_PAIRS,
    pairing: str = "seed",
    measures: tuple[str, ...] = MEASURES,
    shared_init: bool = True,
    n_eigenvalues: int | None = None,
) -> ExperimentTables:
    """Figure 5: cosine similarity of LeNet-3 Jacobians across MNIST halves and Fashion-MNIST.

    See the module docstring for the construction. ``small`` preset: 3 networks per dataset,
    100 probes (25 s of CPU time with the networks cached, 55 s when it trains the nine
    networks; 1.7 GB peak memory). ``full``: the paper's 25 networks per dataset and all
    2,000 MNIST1 images as probes (n·o = 20,000: GPU; top-100 eigenvalues by Lanczos).

    Parameters
    ----------
    preset : {"small", "full"}
    seed : int
        Seed of the first replicate; replicate i trains with seed ``seed + i`` (times 3 plus
        0, 1, 2 for mnist1, mnist2, fashion when ``shared_init=False``).
    progress : callable, optional
        ``progress(fraction, message)``.
    device : torch.device or str, optional
        Default: the CPU for ``small``, the GPU (if any) for ``full``.
    seeds : int, optional
        Networks per dataset (default by preset: 3 / 25).
    n_probe : int, optional
        MNIST1 probe images, at most 2,000 (default by preset: 100 / 2,000).
    pairs : tuple of str
        Dataset pairs ``"a-b"`` with a, b in ``mnist1``, ``mnist2``, ``fashion``.
    pairing : {"seed", "all"}
        Replicate i against replicate i, or all replicate pairs.
    measures : tuple of str
        ``"kernel"`` and/or ``"parameter"`` (see :mod:`ntkcore.similarity`).
    shared_init : bool
        Whether replicate i of every dataset starts from the same initialization.
    n_eigenvalues : int, optional
        Eigenvalues per network in ``spectra`` (default by preset: all min(n·o, p) / 100;
        0: none). Without a number, all of them when the comparison kept the Gram matrices
        (they fit in memory), else the top 100 (Lanczos).

    Returns
    -------
    ExperimentTables
        ``main``, ``spectra`` and ``models`` (see the module docstring).
    """
    preset = check_preset(preset)
    device = resolve_device(device, preset)
    seed = _positive("seed", seed, minimum=0)
    defaults = _PRESETS[preset]
    seeds = _positive("seeds", defaults["seeds"] if seeds is None else seeds)
    n_probe = _positive("n_probe", defaults["n_probe"] if n_probe is None else n_probe)
    if n_eigenvalues is None:
        n_eigenvalues = defaults["n_eigenvalues"]
    elif n_eigenvalues != 0:
        n_eigenvalues = _positive("n_eigenvalues", n_eigenvalues)
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    measures = (measures,) if isinstance(measures, str) else tuple(measures)
    if not measures or any(m not in MEASURES for m in measures):
        raise ValueError(f"measures must be a non-empty subset of {MEASURES}, got {measures!r}")
    parsed = _parse_pairs(pairs)
    if not isinstance(shared_init, bool):
        raise ValueError(f"shared_init must be a bool, got {shared_init!r}")
    needed = [d for d in DATASETS if any(d in pair for pair in parsed)]
    mnist1 = data.load("mnist")
    available = mnist1.sizes["source"]
    if n_probe > available:
        raise ValueError(f"n_probe must be at most {available} (MNIST1 images), got {n_probe}")
    replicate_seeds = list(range(seed, seed + seeds))
    replicates = [
        (f"{a}-{b}", a, b, i, j)
        for a, b in parsed
        for i, j in _replicate_pairs(a, b, replicate_seeds, pairing)
    ]

    def training_seed(dataset: str, i: int) -> int:
        if shared_init:
            return replicate_seeds[i]
        return 3 * replicate_seeds[i] + list(DATASETS).index(dataset)

    num_fashion = seeds if "fashion" in needed else 0
    steps = ProgressSteps(
        progress, [1.0] * (seeds * len(needed)) + [0.2] * num_fashion + [2.0 * seeds, seeds]
    )
    tasks = {d: data.load(name, **kw) for d, (name, kw) in DATASETS.items() if d in needed}
    networks: dict[str, list[_Network]] = {}
    rows_by_model: dict[str, dict[str, object]] = {}
    for d in needed:
        name, kw = DATASETS[d]
        task = tasks[d]
        x_test, y_test = (t.to(device) for t in task.test)
        networks[d] = []
        for i in range(seeds):
            s = training_seed(d, i)
            sub = steps.start(f"training LeNet-3 on {d} (seed {s})")
            entry = zoo.fetch("lenet3", name, s, task=task, data_kw=kw, device=device,
                              progress=sub, **TRAINING)  # fmt: skip
            net = _Network(d, s, entry.model)
            networks[d].append(net)
            rows_by_model[net.name] = {
                "model": net.name, "dataset": d, "seed": s, "retrained_head": False,
                "source_accuracy": _accuracy(entry.model, x_test, y_test),
            }  # fmt: skip
    if "fashion" in needed:
        x1, y1 = (t.to(device) for t in mnist1.source)
        for i, net in enumerate(networks["fashion"]):
            steps.start(f"retraining the head of {net.name} on MNIST1")
            tuned = _retrain_head(net.model, x1, y1, seed=net.seed, device=device)
            networks["fashion"][i] = _Network("fashion", net.seed, tuned)
            rows_by_model[net.name]["retrained_head"] = True
    x_mnist_test, y_mnist_test = (t.to(device) for t in mnist1.test)
    flat: list[_Network] = []
    index: dict[tuple[str, int], int] = {}
    for d in needed:
        for i, net in enumerate(networks[d]):
            index[(d, i)] = len(flat)
            flat.append(net)
            rows_by_model[net.name]["mnist_accuracy"] = _accuracy(
                net.model, x_mnist_test, y_mnist_test
            )
    compared = [(pair, a, b, index[(a, i)], index[(b, j)]) for pair, a, b, i, j in replicates]
    probes = mnist1.source[0][:n_probe].to(device)
    result = compare_jacobians(
        [net.model for net in flat],
        probes,
        pairs=[(ka, kb) for *_, ka, kb in compared] if "parameter" in measures else "none",
        progress=steps.start(f"comparing {len(flat)} Jacobians on {n_probe} MNIST1 images"),
    )
    matrices = {m: result.similarity(m).cpu() for m in measures}
    rows = []
    for pair, a, b, ka, kb in compared:
        for m in measures:
            rows.append({
                "pair": pair, "dataset_a": a, "dataset_b": b, "seed_a": flat[ka].seed,
                "seed_b": flat[kb].seed, "measure": m, "similarity": float(matrices[m][ka, kb]),
            })  # fmt: skip
    main = pd.DataFrame(rows)

    spectrum_step = steps.start("NTK spectra")
    spectra = []
    if n_eigenvalues != 0:
        for k, net in enumerate(flat):
            if result.grams is not None:
                values = torch.linalg.eigvalsh(result.grams[k]).flip(0).clamp_min(0.0)
                values = values if n_eigenvalues is None else values[:n_eigenvalues]
            else:  # the Gram matrices did not fit: the top eigenvalues by Lanczos
                top = _TOP_EIGENVALUES if n_eigenvalues is None else n_eigenvalues
                values = ntk_eigenvalues(net.model, probes, k=top)
            spectra.append(pd.DataFrame({
                "model": net.name, "dataset": net.dataset, "seed": net.seed,
                "index": np.arange(values.numel()), "eigenvalue": values.cpu().numpy(),
            }))  # fmt: skip
            spectrum_step((k + 1) / len(flat))
    columns = ["model", "dataset", "seed", "index", "eigenvalue"]
    spectra_table = pd.concat(spectra, ignore_index=True) if spectra else pd.DataFrame(
        columns=columns)  # fmt: skip
    models = pd.DataFrame(list(rows_by_model.values()))[
        ["model", "dataset", "seed", "retrained_head", "mnist_accuracy", "source_accuracy"]
    ]
    steps.done()
    return ExperimentTables({"main": main, "spectra": spectra_table, "models": models})


@dataclass(frozen=True)
class ClassKernel:
    """One network's NTK on a probe batch, points sorted by class (the app's heatmap).

    Attributes
    ----------
    gram : np.ndarray
        (n, n) kernel between the sorted points: Σ_a K[(i,a), (j,a)] (the trace of each
        o × o block) or one output's block, divided by √(k_ii k_jj) when normalized.
    labels : np.ndarray
        (n,) class of each sorted point.
    order : np.ndarray
        (n,) position of each sorted point in the input batch.
    class_names : tuple of str or None
    """

    gram: np.ndarray
    labels: np.ndarray
    order: np.ndarray
    class_names: tuple[str, ...] | None

    def class_means(self) -> pd.DataFrame:
        """Mean kernel value between every pair of classes (diagonal entries excluded for a
        class with itself): tidy ``class_a, class_b, mean``."""
        classes = np.unique(self.labels)
        rows = []
        for a in classes:
            for b in classes:
                block = self.gram[np.ix_(self.labels == a, self.labels == b)]
                if a == b:
                    count = block.shape[0]
                    values = block[~np.eye(count, dtype=bool)] if count > 1 else block.ravel()
                else:
                    values = block.ravel()
                rows.append({"class_a": a, "class_b": b, "mean": float(values.mean())})
        return pd.DataFrame(rows)


def ntk_by_class(
    model: nn.Module | Linearization,
    x: Tensor,
    y: Tensor,
    *,
    output: int | None = None,
    normalize: bool = True,
    class_names: tuple[str, ...] | None = None,
) -> ClassKernel:
    """The finite NTK of ``model`` on a probe batch, with the points grouped by class.

    Holds the explicit Jacobian, n·o·p floats (140 MB for 100 MNIST images and a LeNet-3).

    Parameters
    ----------
    model : nn.Module or Linearization
        A network with o outputs.
    x : Tensor
        Inputs, shape (n, *input_shape).
    y : Tensor
        Integer class labels, shape (n,).
    output : int, optional
        Use output ``output``'s kernel K[(i,a), (j,a)]; default: the trace over outputs.
    normalize : bool
        Divide by √(k_ii k_jj) (a kernel correlation in [−1, 1]).
    class_names : tuple of str, optional

    Returns
    -------
    ClassKernel
    """
    y = torch.as_tensor(y)
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},), got {tuple(y.shape)}")
    lin = as_linearization(model)
    x = lin.prepare_inputs(x)
    o = lin.output_dim(x)
    if output is not None and (
        isinstance(output, bool) or not isinstance(output, int) or not 0 <= output < o
    ):
        raise ValueError(f"output must be an int in [0, {o}), got {output!r}")
    # Only the n × n kernel is needed, not the n·o × n·o Gram matrix: with the Jacobian rows
    # of each point flattened, F = J.reshape(n, o·p), F Fᵀ = Σ_a K[(i,a), (j,a)] (the trace
    # of each o × o block) in one product of n² · o·p flops instead of (n·o)² · p. Measured
    # for a LeNet-3 (p = 34,622, o = 10) on 100 MNIST images, one CPU thread: 0.2 s for the
    # product vs 3.5 s for the float64 Gram matrix (8 s for ntk_by_class before, 1.2 s now
    # with the Jacobian). Products in the network's dtype, accumulated to float64 after:
    # relative error ~1e-6 in float32, which a heatmap does not show.
    features = torch.cat([
        block.reshape(block.shape[0], -1) if output is None else block[:, output]
        for _, block in lin.jacobian_blocks(x)
    ])  # shape: (n, o·p), or (n, p) for one output  # fmt: skip
    kernel = (features @ features.mT).to(torch.float64)  # shape: (n, n)
    if normalize:
        scale = kernel.diagonal().clamp_min(torch.finfo(kernel.dtype).tiny).sqrt()
        kernel = kernel / (scale[:, None] * scale[None, :])
    labels = y.cpu().numpy()
    order = np.argsort(labels, kind="stable")
    sorted_kernel = kernel.cpu().numpy()[np.ix_(order, order)]
    return ClassKernel(sorted_kernel, labels[order], order, class_names)
