"""What every inference strategy of :func:`ntkcore.adapt` receives and returns.

A strategy is a typed fit function ``fit(problem: FitProblem) -> FitResult``; the table
:data:`ntkcore.strategies.FITS` maps its name to it. :func:`ntkcore.adapt` validates the
arguments once, builds the :class:`FitProblem`, looks the strategy up in the table and
wraps the :class:`FitResult` into a :class:`~ntkcore.posterior.Posterior`. A new strategy
(a classifier's, a distributed one) is one more entry, not one more branch.

Notation (Section 3 of the paper, with a prior scale s²): g(x) = m(x) + J(x) w,
w ~ N(0, s² I_p), y = g(x) + ε, ε ~ N(0, σ² I); N = n·o, r = y − m(X), c = σ²/s².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ntkcore.distributed.reduction import LOCAL, DataReduction
from ntkcore.linearization import Linearization

__all__ = ["FitFunction", "FitOptions", "FitProblem", "FitResult"]

# (log marginal likelihood, its standard error) — evaluated on first request only
LmlClosure = Callable[[], tuple[float, float]]


@dataclass(frozen=True)
class FitOptions:
    """The solver settings of :func:`ntkcore.adapt` (validated there; see its docstring).

    A strategy reads the options it uses and ignores the rest (``dense`` uses none).
    """

    tol: float
    max_iter: int
    rank: int | str
    max_rank: int
    variance_tol: float
    variance: str
    variance_rtol: float
    refinement: str
    fisher: str
    seed: int
    cache: str
    stream: int | None = None


@dataclass(frozen=True)
class FitProblem:
    """The regression problem of one adaptation (Eq. 1–3), validated.

    Attributes
    ----------
    linearization : Linearization
    x : Tensor
        Training inputs, prepared (on the network's device and dtype), shape (n, ...).
    y : Tensor
        Targets, shape (n, o), in the network's dtype.
    mean : {"network", "zero"}
        Prior mean m(x).
    noise_variance, prior_variance : float
        σ² and s².
    options : FitOptions
    reduction : DataReduction
        Sums over the data shards when ``x`` and ``y`` are this rank's shard of data
        split across a process group (:mod:`ntkcore.distributed`); a no-op by default.
    """

    linearization: Linearization
    x: Tensor
    y: Tensor
    mean: str
    noise_variance: float
    prior_variance: float
    options: FitOptions
    reduction: DataReduction = LOCAL

    @property
    def shift(self) -> float:
        """c = σ²/s², the shift of the Gram systems J Jᵀ + cI and JᵀJ + cI."""
        return self.noise_variance / self.prior_variance

    @property
    def num_observations(self) -> int:
        """N = n·o of this rank's shard (all the data on one process)."""
        return int(self.y.numel())

    def residual(self, network_output: Callable[[], Tensor]) -> Tensor:
        """r = y − m(X), shape (n, o); ``network_output()`` gives f(X; θ) when m is the
        network (strategies pass the cheapest way they have of computing it)."""
        return self.y - network_output() if self.mean == "network" else self.y


@dataclass
class FitResult:
    r"""What a strategy hands back to :func:`ntkcore.adapt`.

    Attributes
    ----------
    weights : Tensor
        w̄, the posterior mean of the linear weights, shape (p,), float64.
    factor : Tensor
        F, shape (r, p), float64, a factor of the weight posterior covariance Σ.
    factor_form : {"subtract", "direct"}
        ``"subtract"``: Σ ≈ s² (I − FᵀF) (exact when the factor's basis spans range(J));
        ``"direct"``: Σ = s² FᵀF.
    log_marginal_likelihood : callable
        ``() -> (log p(y), standard error)``, evaluated on first request.
    diagnostics : dict
        What the strategy did (merged into ``Posterior.diagnostics``).
    variance_corrector : VarianceCorrector, optional
        What accurate predictive variances need beyond the factor
        (:class:`ntkcore.variance.VarianceCorrector`); None when the factor is exact.
    """

    weights: Tensor
    factor: Tensor
    factor_form: str
    log_marginal_likelihood: LmlClosure
    diagnostics: dict[str, Any]
    variance_corrector: Any = field(default=None, repr=False)


FitFunction = Callable[[FitProblem], FitResult]
