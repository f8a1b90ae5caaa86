"""Deterministic, seeded training of zoo networks.

The source models of the transfer experiments (Maddox et al., 2021, Section 5) are ordinary
networks trained to convergence on the source task: least squares for regression, the
Gaussian negative log likelihood for the heteroscedastic spatial model, and cross-entropy
for classification.  Training here is reproducible: the same seed, data and hyperparameters
give bit-identical weights on the same machine (fixed thread count), because the data order
comes from a private ``torch.Generator`` and any stochastic layer draws from a forked, seeded
global RNG; the caller's RNG state is left untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ntkcore.parameters import ParameterFilter, select_parameters
from ntkcore.zoo.architectures import softplus_scale

__all__ = ["LOSSES", "FULL_BATCH_MAX", "TrainRecord", "evaluate_loss", "seeded", "train"]

#: Training objectives: least squares, heteroscedastic Gaussian NLL, cross-entropy.
LOSSES = ("mse", "gaussian_nll", "cross_entropy")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
#: With ``batch_size=None``, datasets up to this size are trained full batch.
FULL_BATCH_MAX = 2048
_AUTO_BATCH = 128
_EVAL_BATCH = 1024

Progress = Callable[[float], None]


@dataclass(frozen=True)
class TrainRecord:
    """Summary of a training run.

    Attributes
    ----------
    loss : str
        Objective name (one of :data:`LOSSES`).
    final_loss : float
        Objective on the whole training set after training, network in eval mode.
    history : tuple of float
        Mean training objective of every epoch (network in train mode).
    epochs, steps, batch_size, n_train : int
        Epochs, optimizer steps, mini-batch size and number of training samples.
    seconds : float
        Wall-clock training time.
    """

    loss: str
    final_loss: float
    history: tuple[float, ...]
    epochs: int
    steps: int
    batch_size: int
    n_train: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dictionary."""
        d = asdict(self)
        d["history"] = list(self.history)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "history": tuple(d["history"])})


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Seed torch's global RNGs inside the block and restore the caller's state on exit.

    Parameters
    ----------
    seed : int
        Seed passed to ``torch.manual_seed``.
    device : torch.device or str, optional
        If a CUDA device, its RNG is forked and restored as well.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _objective(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if loss == "mse":
        return F.mse_loss
    if loss == "cross_entropy":
        return F.cross_entropy
    return _gaussian_nll


def _gaussian_nll(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian NLL of ``y`` under ``N(mean, softplus(raw)^2)``; output = [mean, raw]."""
    k = y.shape[-1]
    mean, scale = output[..., :k], softplus_scale(output[..., k:])
    z = (y - mean) / scale
    return (0.5 * z.square() + scale.log()).mean() + 0.5 * math.log(2 * math.pi)


def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Validate ``x``/``y`` against the loss and the network's output; return ``y`` reshaped."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, *input_shape) with n >= 1, got {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y disagree on the number of samples: {x.shape[0]} vs {y.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains non-finite values")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # a shape probe must not update BatchNorm statistics
    with torch.no_grad():
        out = model(x[:2])
    for m, mode in modes:
        m.train(mode)
    if out.ndim != 2:
        raise ValueError(f"the network must return (n, outputs), got {tuple(out.shape)}")
    n_out = out.shape[1]
    if loss == "cross_entropy":
        if y.is_floating_point() or y.ndim != 1:
            raise ValueError("cross_entropy needs integer class labels y of shape (n,)")
        if int(y.min()) < 0 or int(y.max()) >= n_out:
            raise ValueError(
                f"class labels must lie in [0, {n_out}) for a network with {n_out} outputs, "
                f"got range [{int(y.min())}, {int(y.max())}]"
            )
        return y.long()
    if not y.is_floating_point():
        raise ValueError(f"{loss} needs floating-point targets y, got dtype {y.dtype}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains non-finite values")
    y2 = y.reshape(y.shape[0], -1) if y.ndim != 1 else y[:, None]
    expected = n_out // 2 if loss == "gaussian_nll" else n_out
    if loss == "gaussian_nll" and n_out % 2:
        raise ValueError(f"gaussian_nll needs [mean, raw scale] outputs (even count), got {n_out}")
    if y2.shape[1] != expected:
        raise ValueError(
            f"targets have {y2.shape[1]} column(s) but the network predicts {expected} "
            f"for loss {loss!r}"
        )
    return y2.to(x.dtype)


@torch.no_grad()
def _mean_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int = _EVAL_BATCH
) -> float:
    """Sample-weighted mean of the objective over batches (= the full-batch objective)."""
    objective = _objective(loss)
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        total += float(objective(model(xb), yb)) * xb.shape[0]
    return total / x.shape[0]


def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> float:
    """Training objective ``loss`` of ``model`` on ``(x, y)``, with the model as it is.

    The network is evaluated in its current mode (call ``model.eval()`` first for the
    deployed function) on the device of its parameters; ``x`` and ``y`` follow the
    conventions of :func:`train`.

    Returns
    -------
    float
        Mean squared error, mean Gaussian negative log likelihood (per target value) or
        mean cross-entropy over the samples.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("the network has no parameters")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    x = x.to(first.device, dtype=first.dtype) if x.is_floating_point() else x.to(first.device)
    y = _prepare(model, x, y.to(first.device), loss)
    return _mean_objective(model, x, y, loss)


def _check_config(
    loss: str,
    epochs: int,
    lr: float,
    batch_size: int | None,
    optimizer: str,
    weight_decay: float,
    schedule: str,
) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not (isinstance(weight_decay, int | float) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    params: ParameterFilter = None,
) -> tuple[nn.Module, TrainRecord]:
    """Train ``model`` in place on ``(x, y)``, deterministically for a given ``seed``.

    Parameters
    ----------
    model : nn.Module
        Network mapping ``(n, *input_shape)`` to ``(n, outputs)``.
    x : torch.Tensor
        Inputs, ``(n, *input_shape)``.
    y : torch.Tensor
        Targets: ``(n,)`` or ``(n, k)`` floats for ``"mse"`` (``k = outputs``) and
        ``"gaussian_nll"`` (``k = outputs / 2``: the network returns means then raw scales,
        see :class:`~ntkcore.zoo.architectures.HeteroscedasticMLP`); ``(n,)`` integer class
        labels for ``"cross_entropy"``.
    loss : {"mse", "gaussian_nll", "cross_entropy"}
        Objective.
    epochs : int
        Passes over the data (with full-batch training, the number of optimizer steps).
    lr : float
        Initial learning rate.
    batch_size : int or None
        Mini-batch size; ``None`` trains full batch when ``n <= FULL_BATCH_MAX`` and with
        batches of 128 otherwise.
    optimizer : {"adam", "sgd"}
        Adam (default) or SGD with Nesterov momentum 0.9.
    weight_decay : float
        L2 penalty coefficient passed to the optimizer.
    schedule : {"cosine", "constant"}
        Learning-rate schedule over all steps (cosine annealing to zero, or constant).
    seed : int
        Seed of the data order and of any stochastic layer.
    progress : callable, optional
        Called with the fraction of training done, from 0.0 to 1.0 (about 100 calls).
    device : torch.device or str, optional
        Where to train; defaults to the device of the model's parameters.
    params : None, str, iterable of str, or callable
        Which parameters to train, as for :func:`ntkcore.select_parameters` (``None``:
        every parameter with ``requires_grad``; ``"head"``: the read-out layer only, the
        last-layer retraining baseline of the paper's Section 5). The others keep their
        values: their ``requires_grad`` is switched off while training (so no gradient is
        computed for them) and restored afterwards.

    Returns
    -------
    model : nn.Module
        The same network, trained and in eval mode.
    record : TrainRecord
        Final loss, per-epoch history and timing.

    Raises
    ------
    ValueError
        For invalid hyperparameters or data that does not match the loss or the network.
    """
    _check_config(loss, epochs, lr, batch_size, optimizer, weight_decay, schedule)
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("the network has no parameters to train")
    device = first.device if device is None else torch.device(device)
    model.to(device)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    x = x.to(device, dtype=first.dtype) if x.is_floating_point() else x.to(device)
    y = _prepare(model, x, y.to(device), loss)
    chosen = set(select_parameters(model, params))
    frozen = [
        (p, p.requires_grad) for name, p in model.named_parameters() if name not in chosen
    ]
    trainable = [p for name, p in model.named_parameters() if name in chosen]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        return _train_loop(
            model, x, y, trainable, loss=loss, epochs=epochs, lr=lr, batch_size=batch_size,
            optimizer=optimizer, weight_decay=weight_decay, schedule=schedule, seed=seed,
            progress=progress, device=device,
        )
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)


def _train_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    params: list[nn.Parameter],
    *,
    loss: str,
    epochs: int,
    lr: float,
    batch_size: int | None,
    optimizer: str,
    weight_decay: float,
    schedule: str,
    seed: int,
    progress: Progress | None,
    device: torch.device,
) -> tuple[nn.Module, TrainRecord]:
    """The optimization loop of :func:`train` over ``params`` (inputs already validated)."""
    n = x.shape[0]
    bs = min(batch_size or (n if n <= FULL_BATCH_MAX else _AUTO_BATCH), n)
    steps_per_epoch = math.ceil(n / bs)
    total_steps = epochs * steps_per_epoch
    report_every = max(1, total_steps // 100)

    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
        if schedule == "cosine"
        else None
    )
    objective = _objective(loss)
    generator = torch.Generator().manual_seed(int(seed))
    history: list[float] = []
    step = 0
    start_time = time.perf_counter()
    if progress is not None:
        progress(0.0)
    with seeded(seed, device):
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device) if bs < n else None
            epoch_sum = torch.zeros((), device=device)
            for start in range(0, n, bs):
                if order is None:
                    xb, yb = x, y
                else:
                    idx = order[start : start + bs]
                    xb, yb = x[idx], y[idx]
                opt.zero_grad(set_to_none=True)
                batch_loss = objective(model(xb), yb)
                batch_loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                epoch_sum += batch_loss.detach() * xb.shape[0]
                step += 1
                if progress is not None and step % report_every == 0 and step < total_steps:
                    progress(step / total_steps)
            history.append(float(epoch_sum) / n)
    model.eval()
    final = _mean_objective(model, x, y, loss)
    seconds = time.perf_counter() - start_time
    if progress is not None:
        progress(1.0)
    if not math.isfinite(final):
        raise FloatingPointError(
            f"training diverged (final {loss} = {final}); lower the learning rate"
        )
    record = TrainRecord(
        loss=loss,
        final_loss=final,
        history=tuple(history),
        epochs=epochs,
        steps=total_steps,
        batch_size=bs,
        n_train=n,
        seconds=seconds,
    )
    return model, record
