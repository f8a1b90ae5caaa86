"""Generated 1-D regression tasks: ``sinusoids``, ``linear-to-sine`` and ``toy-gap``.

Nothing is read from disk; every draw comes from NumPy generators seeded as described in
:mod:`ntkcore.data.registry` (``source_seed`` -> source side, ``seed`` -> target side), with one
generator per quantity so that a larger pool only appends points.  The true noise-free functions
are returned in ``meta.source_function`` / ``meta.target_function``.
"""

from __future__ import annotations

import numpy as np
import torch

from ntkcore.data.functions import Line, QuadraticAbs, Sinusoid, kim_sinusoid
from ntkcore.data.registry import (
    check_choice,
    check_int,
    register,
    rngs,
)
from ntkcore.data.task import Task, TaskMeta

KIM_CITATION = (
    "Kim, T., Yoon, J., Dia, O., Kim, S., Bengio, Y., and Ahn, S. (2018). Bayesian "
    "Model-Agnostic Meta-Learning. NeurIPS. Used for transfer in Maddox et al. (2021), "
    "Fast Adaptation with Linearized Neural Networks, AISTATS, Section 5 (Figure 6)."
)
LINEAR_CITATION = (
    "Reference implementation of Maddox et al. (2021), amzn/xfer finite_ntk "
    "experiments/simple_reg (--transfer_fn: linear functions vs sinusoids); " + KIM_CITATION
)
X_RANGE = (-5.0, 5.0)
GENERATED = "generated on the fly by ntkcore.data (no data files)"


def _column(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32).reshape(-1, 1))


def _kim_target(seed: int, n_target: int, n_test: int) -> tuple[Sinusoid, tuple, tuple]:
    """The target side shared by ``sinusoids`` and ``linear-to-sine`` (same seed, same task)."""
    params_rng, x_rng, noise_rng, test_rng = rngs("sinusoid-target", seed, 4)
    f = kim_sinusoid(params_rng)
    noise_std = 0.01 * f.amplitude
    x = x_rng.uniform(*X_RANGE, size=n_target)
    y = f(x) + noise_std * noise_rng.standard_normal(n_target)
    x_test = np.linspace(*X_RANGE, n_test)
    y_test = f(x_test) + noise_std * test_rng.standard_normal(n_test)
    return f, (_column(x), _column(y)), (_column(x_test), _column(y_test))


def _sizes(n_source: int, n_target: int, n_test: int) -> tuple[int, int, int]:
    return (
        check_int("n_source", n_source, minimum=1, maximum=1_000_000),
        check_int("n_target", n_target, minimum=1, maximum=1_000_000),
        check_int("n_test", n_test, minimum=1, maximum=1_000_000),
    )


def _sinusoid_params(f: Sinusoid) -> dict[str, float]:
    return {
        "amplitude": f.amplitude,
        "frequency": f.frequency,
        "phase": f.phase,
        "noise_std": 0.01 * f.amplitude,
    }


@register(
    "sinusoids",
    description=(
        "Few-shot sinusoid regression (Kim et al., 2018): each task is y = A sin(w x + b) + "
        "N(0, (0.01 A)^2) with A ~ U[0.1, 5], b ~ U[0, 2 pi], w ~ U[0.5, 2], x ~ U[-5, 5]. The "
        "source task (source_seed) and the target task (seed) are independent draws, so they "
        "differ in amplitude, frequency and phase."
    ),
    kind="regression",
    input_shape=(1,),
    output_dim=1,
    citation=KIM_CITATION,
    rank=1,
)
def load_sinusoids(
    seed: int,
    *,
    source_seed: int = 0,
    n_source: int = 200,
    n_target: int = 100,
    n_test: int = 200,
) -> Task:
    """Sinusoid transfer: source and target are two draws of the Kim et al. (2018) process.

    Options
    -------
    source_seed : int
        Seed of the source task (the model is trained on it); independent of ``seed``.
    n_source : int
        Source points, x ~ U[-5, 5] (random order).
    n_target : int
        Size of the target adaptation pool, x ~ U[-5, 5] (random order; prefixes are random
        subsets and a larger pool only appends points).
    n_test : int
        Target test points on an even grid over [-5, 5] (sorted), with observation noise.

    ``seed == source_seed`` still gives different source and target tasks (separate streams).
    ``meta.params`` holds the true amplitude, frequency, phase and noise std of both tasks;
    ``meta.target_function`` / ``meta.source_function`` evaluate the noise-free curves.
    """
    n_source, n_target, n_test = _sizes(n_source, n_target, n_test)
    source_seed = check_int("source_seed", source_seed, minimum=0)
    params_rng, x_rng, noise_rng = rngs("sinusoid-source", source_seed, 3)
    f_source = kim_sinusoid(params_rng)
    x = x_rng.uniform(*X_RANGE, size=n_source)
    y = f_source(x) + 0.01 * f_source.amplitude * noise_rng.standard_normal(n_source)
    f_target, target, test = _kim_target(seed, n_target, n_test)
    meta = TaskMeta(
        name="sinusoids",
        description=(
            f"Sinusoid transfer (Kim et al., 2018 process). Source: y = {f_source.formula()} "
            f"(source_seed={source_seed}); target: y = {f_target.formula()} (seed={seed}); "
            f"noise std 0.01 A; x in [-5, 5]."
        ),
        kind="regression",
        input_shape=(1,),
        output_dim=1,
        citation=KIM_CITATION,
        provenance=GENERATED,
        params={
            "seed": seed,
            "source_seed": source_seed,
            "x_range": X_RANGE,
            "source": _sinusoid_params(f_source),
            "target": _sinusoid_params(f_target),
        },
        source_function=f_source,
        target_function=f_target,
    )
    return Task(source=(_column(x), _column(y)), target=target, test=test, meta=meta)


@register(
    "linear-to-sine",
    description=(
        "Negative-transfer check from the reference implementation's transfer split: the "
        "network is trained on a linear function y = a x + c + N(0, 0.3^2) (a, c ~ U[-3, 3]) "
        "and adapted to a Kim et al. (2018) sinusoid (the same target as 'sinusoids' for the "
        "same seed)."
    ),
    kind="regression",
    input_shape=(1,),
    output_dim=1,
    citation=LINEAR_CITATION,
    rank=2,
)
def load_linear_to_sine(
    seed: int,
    *,
    source_seed: int = 0,
    n_source: int = 200,
    n_target: int = 100,
    n_test: int = 200,
) -> Task:
    """Transfer from a linear source function to a sinusoidal target.

    The reference code mixes linear tasks (slope and intercept ~ U[-3, 3], noise std 0.3) and
    Kim et al. sinusoids; here the split is made explicit: the source is one linear task drawn
    with ``source_seed``, the target the sinusoid that ``load("sinusoids", seed)`` uses, so the
    two tasks can be compared on identical targets.

    Options
    -------
    source_seed : int
        Seed of the linear source function.
    n_source, n_target, n_test : int
        As for ``sinusoids`` (source and pool x ~ U[-5, 5]; test on an even grid).
    """
    n_source, n_target, n_test = _sizes(n_source, n_target, n_test)
    source_seed = check_int("source_seed", source_seed, minimum=0)
    params_rng, x_rng, noise_rng = rngs("linear-source", source_seed, 3)
    slope, intercept = params_rng.uniform(-3.0, 3.0, size=2)
    f_source = Line(slope=float(slope), intercept=float(intercept))
    noise_std = 0.3
    x = x_rng.uniform(*X_RANGE, size=n_source)
    y = f_source(x) + noise_std * noise_rng.standard_normal(n_source)
    f_target, target, test = _kim_target(seed, n_target, n_test)
    meta = TaskMeta(
        name="linear-to-sine",
        description=(
            f"Linear -> sinusoid transfer. Source: y = {f_source.formula()} + N(0, 0.3^2) "
            f"(source_seed={source_seed}); target: y = {f_target.formula()} (seed={seed}). A "
            f"network trained on a line carries little information about a sinusoid."
        ),
        kind="regression",
        input_shape=(1,),
        output_dim=1,
        citation=LINEAR_CITATION,
        provenance=GENERATED,
        params={
            "seed": seed,
            "source_seed": source_seed,
            "x_range": X_RANGE,
            "source": {
                "slope": f_source.slope,
                "intercept": f_source.intercept,
                "noise_std": noise_std,
            },
            "target": _sinusoid_params(f_target),
        },
        source_function=f_source,
        target_function=f_target,
    )
    return Task(source=(_column(x), _column(y)), target=target, test=test, meta=meta)


#: The two toy problems of Maddox et al. (2021), Figure 3.
TOY_VARIANTS = {
    "relu": {
        "function": QuadraticAbs(quadratic=0.1, absolute=1.0),
        "noise_std": 0.9,
        "centres": (-5.0, 5.0),
        "spread": 0.8,
        "test_range": (-15.0, 15.0),
        "n_source": 300,
        "figure": "Figure 3 (left/centre): one-hidden-layer ReLU networks",
    },
    "sine": {
        "function": Sinusoid(amplitude=1.5, frequency=1.2, phase=0.4),
        "noise_std": 0.1,
        "centres": (-4.0, 4.0),
        "spread": 0.8,
        "test_range": (-10.0, 10.0),
        "n_source": 200,
        "figure": "Figure 3 (right): three-layer tanh networks on a sinusoid",
    },
}
TOY_CITATION = (
    "Maddox et al. (2021), Fast Adaptation with Linearized Neural Networks, AISTATS, Figure 3; "
    "data process of the reference notebook finite_ntk/notebooks/relu_plots (amzn/xfer)."
)
TRUNCATION = 3.0  # cluster inputs are N(centre, spread^2) truncated at +-3 spread


def _clustered_inputs(
    rng: np.random.Generator, n: int, centres: tuple[float, float], spread: float
) -> np.ndarray:
    """Two equal clusters N(centre, spread^2), truncated at 3 spread, in random order."""
    z = rng.standard_normal(n)
    bad = np.abs(z) > TRUNCATION
    while bad.any():  # rejection sampling of the truncated normal; deterministic given rng
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > TRUNCATION
    side = rng.permutation(np.arange(n) % 2)
    return np.asarray(centres)[side] + spread * z


@register(
    "toy-gap",
    description=(
        "The 1-D toy problems of Maddox et al. (2021), Figure 3: two clusters of noisy "
        "observations with an empty gap in between; the test grid spans the gap and beyond, "
        "where the linearised network's predictive variance should grow away from the data."
    ),
    kind="regression",
    input_shape=(1,),
    output_dim=1,
    citation=TOY_CITATION,
    rank=3,
)
def load_toy_gap(
    seed: int,
    *,
    variant: str = "relu",
    source_seed: int = 0,
    n_source: int | None = None,
    n_target: int | None = None,
    n_test: int = 400,
) -> Task:
    """Figure 3 toy problems: clustered 1-D data with a gap, test grid across the gap.

    Variants
    --------
    ``"relu"`` (default; Figure 3 left/centre, the reference notebook's process): x from two
    clusters N(-5, 0.8^2) and N(5, 0.8^2), y = 0.1 x^2 + |x| + N(0, 0.9^2); test grid over
    [-15, 15]; 300 source points by default.
    ``"sine"`` (Figure 3 right, a sinusoidal problem for tanh networks): clusters at -4 and 4
    (spread 0.8), y = 1.5 sin(1.2 x + 0.4) + N(0, 0.1^2); test grid over [-10, 10]; 200 source
    points by default.

    Cluster inputs are truncated at 3 standard deviations, so no source or pool input falls in
    the gap (|x| < 2.6 for "relu", |x| < 1.6 for "sine") whatever the seed.  Figure 3 is not a
    transfer experiment: the target pool is a fresh draw from the same process (the paper
    conditions the linearisation on the training data, i.e. the source split), and the
    shift to probe is covariate: the test grid covers the gap and the far field.

    Options
    -------
    variant : {"relu", "sine"}
    source_seed : int
        Seed of the source draw.
    n_source, n_target : int or None
        Source and pool sizes (default: the variant's figure size for both).
    n_test : int
        Points of the evenly spaced test grid (sorted), with observation noise.
    """
    variant = check_choice("variant", variant, tuple(TOY_VARIANTS))
    spec = TOY_VARIANTS[variant]
    n_source = spec["n_source"] if n_source is None else n_source
    n_target = spec["n_source"] if n_target is None else n_target
    n_source, n_target, n_test = _sizes(n_source, n_target, n_test)
    source_seed = check_int("source_seed", source_seed, minimum=0)
    f, noise_std = spec["function"], spec["noise_std"]

    def draw(rng_x: np.random.Generator, rng_noise: np.random.Generator, n: int) -> tuple:
        x = _clustered_inputs(rng_x, n, spec["centres"], spec["spread"])
        return _column(x), _column(f(x) + noise_std * rng_noise.standard_normal(n))

    source = draw(*rngs("toy-source", source_seed, 2), n_source)
    x_rng, noise_rng, test_rng = rngs("toy-target", seed, 3)
    target = draw(x_rng, noise_rng, n_target)
    x_test = np.linspace(*spec["test_range"], n_test)
    test = (_column(x_test), _column(f(x_test) + noise_std * test_rng.standard_normal(n_test)))
    half_gap = min(abs(c) for c in spec["centres"]) - TRUNCATION * spec["spread"]
    meta = TaskMeta(
        name="toy-gap",
        description=(
            f"Toy regression with a gap ({spec['figure']}): y = {f.formula()} + "
            f"N(0, {noise_std}^2), inputs in two clusters around {spec['centres']} and none in "
            f"({-half_gap:.2g}, {half_gap:.2g}); the test grid spans {spec['test_range']}."
        ),
        kind="regression",
        input_shape=(1,),
        output_dim=1,
        citation=TOY_CITATION,
        provenance=GENERATED,
        params={
            "seed": seed,
            "source_seed": source_seed,
            "variant": variant,
            "noise_std": noise_std,
            "centres": spec["centres"],
            "spread": spec["spread"],
            "truncation": TRUNCATION,
            "gap": (-half_gap, half_gap),
            "test_range": spec["test_range"],
        },
        source_function=f,
        target_function=f,
    )
    return Task(source=source, target=target, test=test, meta=meta)
