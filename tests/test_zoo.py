"""Tests of ``ntkcore.zoo``: architectures, seeded training, the checkpoint cache and the CLI."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ntkcore import zoo
from ntkcore.linearization import Linearization
from ntkcore.zoo import cli
from ntkcore.zoo import pretraining as pretraining
from ntkcore.zoo.cache import CacheCorruptionWarning

ALL_ARCHS = [
    "mlp",
    "hetero-mlp",
    "lenet3",
    "preresnet20",
    "preresnet56",
    "preresnet110",
    "wrn16-4",
    "alexnet",
]


# ----------------------------------------------------------------------------- fake tasks


@dataclass
class FakeTask:
    """Minimal stand-in for ``ntkcore.data.Task`` (the seam ``pretrained(..., task=...)``)."""

    source: tuple[torch.Tensor, torch.Tensor]
    meta: dict[str, Any]


def regression_task(n: int = 64, seed: int = 0) -> FakeTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 6 - 3
    y = torch.sin(2 * x) + 0.05 * torch.randn(n, 1, generator=g)
    return FakeTask((x, y), {"input_shape": (1,), "output_dim": 1, "kind": "regression"})


def image_task(n: int = 32, size: int = 28, classes: int = 3) -> FakeTask:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % classes
    x = 0.3 * torch.randn(n, 1, size, size, generator=g)
    x[:, 0, : size // 2] += y[:, None, None].float()  # class-dependent brightness
    meta = {"input_shape": (1, size, size), "output_dim": classes, "kind": "classification"}
    return FakeTask((x, y), meta)


# Small training budgets keep every cache test at a fraction of a second.
FAST = {"width": 16, "depth": 2, "epochs": 30}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NTKCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "zoo"


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- registry


def test_available_lists_every_required_architecture() -> None:
    assert set(ALL_ARCHS) <= set(zoo.available())


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_architecture_forward_shape_and_metadata(name: str) -> None:
    torch.manual_seed(0)
    meta = zoo.info(name)
    model = zoo.create(name).eval()
    assert meta.num_params == sum(p.numel() for p in model.parameters())
    assert meta.input_shape == model.input_shape and meta.output_dim == model.output_dim
    assert meta.description and meta.outputs
    x = torch.randn(3, *meta.input_shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, meta.output_dim)
    assert torch.isfinite(out).all()
    # The read-out is always `head` (used for last-layer baselines).
    assert {"head.weight", "head.bias"} <= dict(model.named_parameters()).keys()


def test_documented_parameter_counts() -> None:
    # Hand-computed: 1*40+40 + 2*(40*40+40) + 40+1.
    assert zoo.info("mlp", width=40, depth=3).num_params == 3401
    # conv 1->6 (5x5), conv 6->16 (5x5), dense 16*4*4 -> 120, read-out 120 -> 10.
    assert zoo.info("lenet3").num_params == 156 + 2416 + (256 * 120 + 120) + 1210
    # 45x45: 41 -> 20 -> 16 -> 8, so the dense layer sees 16*8*8 features.
    info45 = zoo.info("lenet3", in_size=45, out_features=1)
    assert info45.input_shape == (1, 45, 45)
    assert info45.num_params == 156 + 2416 + (1024 * 120 + 120) + 121
    # PreResNet-20 of He et al. (2016): 0.27M parameters.
    assert 0.26e6 < zoo.info("preresnet20").num_params < 0.28e6
    assert zoo.info("alexnet", num_classes=100).output_dim == 100


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mlp", {"in_features": 3, "out_features": 2, "activation": "gelu"}),
        ("mlp", {"activation": "relu", "depth": 1}),
        ("hetero-mlp", {}),
        ("lenet3", {"in_size": 45, "out_features": 1}),
        ("preresnet20", {"num_classes": 4}),
        ("preresnet56", {"num_classes": 3}),
        ("preresnet110", {"num_classes": 2}),
        ("wrn16-4", {"num_classes": 2}),
        ("alexnet", {"num_classes": 3}),
    ],
)
def test_linearization_jvp_matches_finite_differences(name: str, kwargs: dict) -> None:
    """J v from the engine equals a central difference of the network in float64."""
    torch.manual_seed(0)
    model = zoo.create(name, **kwargs).double().eval()
    x = torch.randn(2, *model.input_shape, dtype=torch.float64)
    lin = Linearization(model)
    assert lin.num_params == zoo.info(name, **kwargs).num_params
    with torch.no_grad():
        torch.testing.assert_close(lin(x), model(x))
    v = torch.randn(lin.num_params, dtype=torch.float64)
    v /= v.norm()
    jv = lin.jvp(x, v)
    assert jv.shape == (2, model.output_dim)

    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    direction = lin.unflatten(v)
    eps = 1e-6

    def f(sign: float) -> torch.Tensor:
        shifted = {k: p + sign * eps * direction[k] for k, p in params.items()}
        return functional_call(model, {**shifted, **buffers}, (x,))

    with torch.no_grad():
        fd = (f(1.0) - f(-1.0)) / (2 * eps)
    torch.testing.assert_close(jv, fd, rtol=1e-5, atol=1e-7)


def test_unknown_architecture_lists_available() -> None:
    with pytest.raises(ValueError, match="available") as err:
        zoo.create("resnet9000")
    assert all(name in str(err.value) for name in ALL_ARCHS)
    with pytest.raises(ValueError, match="available"):
        zoo.info("resnet9000")


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("mlp", {"widht": 3}, r"unknown keyword.*'widht'.*accepted.*'width'"),
        ("preresnet20", {"depth": 56}, r"unknown keyword.*'depth'"),  # bound by the name
        ("mlp", {"activation": "sigmoid"}, r"activation must be one of \['gelu', 'relu', 'tanh'\]"),
        ("mlp", {"width": 0}, "width must be a positive integer"),
        ("lenet3", {"in_size": 12}, "in_size must be at least 16"),
        ("lenet3", {"channels": (6,)}, "channels must be a pair"),
        ("wrn16-4", {"dropout": 1.5}, r"dropout must lie in \[0, 1\)"),
    ],
)
def test_bad_kwargs_raise_clear_value_errors(name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        zoo.create(name, **kwargs)


def test_residual_depth_validation() -> None:
    from ntkcore.zoo.architectures import PreResNet, WideResNet

    with pytest.raises(ValueError, match="9n\\+2"):
        PreResNet(depth=57)
    with pytest.raises(ValueError, match="6n\\+2"):
        PreResNet(depth=21)
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=15)


def test_heteroscedastic_split_and_mean_model() -> None:
    torch.manual_seed(0)
    net = zoo.create("hetero-mlp", in_features=2, out_features=3).eval()
    x = torch.randn(5, 2)
    out = net(x)
    assert out.shape == (5, 6)
    mean, std = net.predict(x)
    torch.testing.assert_close(mean, out[:, :3])
    torch.testing.assert_close(std, F.softplus(out[:, 3:]) + 1e-4)
    assert (std > 0).all()
    mean_net = net.mean_model()
    torch.testing.assert_close(mean_net(x), mean)
    assert mean_net.output_dim == 3
    # Parameters are shared, not copied.
    assert {id(p) for p in mean_net.parameters()} == {id(p) for p in net.parameters()}


# ----------------------------------------------------------------------------- training


def test_training_is_deterministic_and_leaves_global_rng_alone() -> None:
    x, y = regression_task().source
    state = torch.get_rng_state()

    def run(seed: int) -> tuple[torch.nn.Module, zoo.TrainRecord]:
        with zoo.seeded(seed):
            model = zoo.create("mlp", width=16, depth=2)
        return zoo.train(model, x, y, loss="mse", epochs=40, batch_size=16, seed=seed)

    a, rec_a = run(0)
    b, rec_b = run(0)
    c, _ = run(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert _state_equal(a, b)
    assert rec_a.history == rec_b.history and rec_a.final_loss == rec_b.final_loss
    assert not _state_equal(a, c)
    assert not a.training


def test_mse_training_fits_and_reports_the_true_loss() -> None:
    x, y = regression_task(n=128).source
    with zoo.seeded(0):
        model = zoo.create("mlp", width=16, depth=2)
    model, rec = zoo.train(model, x, y, loss="mse", epochs=300, lr=2e-2)
    with torch.no_grad():
        mse = float(((model(x) - y) ** 2).mean())
    assert rec.final_loss == pytest.approx(mse, rel=1e-5)
    # evaluate_loss accepts (n,) targets for a one-output network and matches too.
    assert zoo.evaluate_loss(model, x, y[:, 0], "mse") == pytest.approx(mse, rel=1e-5)
    assert mse < 0.05 * float(y.var())  # the sinusoid is learned, not just its mean
    assert rec.batch_size == 128 and rec.steps == 300  # small data: full batch
    assert rec.history[-1] < rec.history[0]
    assert rec.seconds > 0


def test_gaussian_nll_learns_heteroscedastic_noise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 1, generator=g) * 2 - 1
    true_std = torch.where(x < 0, 0.1, 1.0)
    y = 0.5 * x + true_std * torch.randn(400, 1, generator=g)
    with zoo.seeded(0):
        model = zoo.create("hetero-mlp", in_features=1, width=16, depth=2)
    model, rec = zoo.train(model, x, y, loss="gaussian_nll", epochs=300, lr=2e-2)
    _, std = model.predict(torch.tensor([[-0.5], [0.5]]))
    assert std[0, 0].item() == pytest.approx(0.1, rel=0.35)
    assert std[1, 0].item() == pytest.approx(1.0, rel=0.35)
    # The objective is the Gaussian negative log likelihood (independent reference).
    with torch.no_grad():
        mean, scale = model.predict(x)
        ref = -torch.distributions.Normal(mean, scale).log_prob(y).mean()
    assert rec.final_loss == pytest.approx(float(ref), rel=1e-5)


def test_cross_entropy_training_classifies() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = centres[y] + 0.4 * torch.randn(300, 2, generator=g)
    with zoo.seeded(0):
        model = zoo.create("mlp", in_features=2, out_features=3, width=16, depth=1)
    model, rec = zoo.train(model, x, y, loss="cross_entropy", epochs=20, batch_size=32, lr=1e-2)
    with torch.no_grad():
        logits = model(x)
    assert (logits.argmax(1) == y).float().mean() > 0.97
    ref = -logits.log_softmax(1).gather(1, y[:, None]).mean()
    assert rec.final_loss == pytest.approx(float(ref), rel=1e-5)
    assert rec.steps == 20 * math.ceil(300 / 32)


def test_progress_callback_reports_monotone_fractions() -> None:
    x, y = regression_task().source
    seen: list[float] = []
    zoo.train(
        zoo.create("mlp", width=8, depth=1), x, y, loss="mse", epochs=500, progress=seen.append
    )
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False))
    assert 10 <= len(seen) <= 102


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"loss": "mse", "epochs": 0}, "epochs must be a positive integer"),
        ({"loss": "mse", "lr": -1.0}, "lr must be a positive number"),
        ({"loss": "mse", "batch_size": 0}, "batch_size must be a positive integer"),
        ({"loss": "mse", "optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"loss": "mse", "schedule": "step"}, "schedule must be one of"),
        ({"loss": "cross_entropy"}, "integer class labels"),
    ],
)
def test_train_rejects_bad_configuration(kwargs: dict, pattern: str) -> None:
    x, y = regression_task(n=8).source
    with pytest.raises(ValueError, match=pattern):
        zoo.train(zoo.create("mlp"), x, y, **kwargs)


def test_train_rejects_mismatched_data() -> None:
    x = torch.randn(8, 1)
    with pytest.raises(ValueError, match="2 column"):
        zoo.train(zoo.create("mlp"), x, torch.randn(8, 2), loss="mse")
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        zoo.train(zoo.create("mlp"), x, torch.randn(7, 1), loss="mse")
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        zoo.train(zoo.create("mlp", out_features=3), x, torch.full((8,), 3), loss="cross_entropy")
    with pytest.raises(ValueError, match="non-finite"):
        zoo.train(zoo.create("mlp"), x, torch.full((8, 1), math.nan), loss="mse")


# ----------------------------------------------------------------------------- cache


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the zoo cache must never unpickle")

    for target in (pickle, pickle._Unpickler):  # type: ignore[attr-defined]
        for name in ("load", "loads", "Unpickler"):
            if hasattr(target, name):
                monkeypatch.setattr(target, name, boom)
    monkeypatch.setattr(torch, "load", boom)


def _assert_no_pickle(directory: Path) -> None:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    assert files, "cache is empty"
    for path in files:
        assert path.suffix in {".safetensors", ".json"}, path
        raw = path.read_bytes()
        assert not raw.startswith(b"\x80"), f"{path} looks like a pickle"  # protocol >= 2
        assert not raw.startswith(b"PK"), f"{path} looks like a torch.save zip archive"
        if path.suffix == ".json":
            json.loads(raw)
        else:  # safetensors: little-endian u64 header length, then a JSON header
            (length,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8 : 8 + length])
            assert header["__metadata__"]["ntkcore_format"] == "1"


def test_pretrained_trains_once_and_reloads_identically(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = regression_task()
    first = zoo.fetch("mlp", "fake-sine", task=task, **FAST)
    assert not first.from_cache and not first.model.training
    assert first.path.parent == cache and first.path.exists()
    _assert_no_pickle(cache)

    calls: list[object] = []
    monkeypatch.setattr(pretraining, "train", lambda *a, **k: calls.append(a))
    _forbid_unpickling(monkeypatch)
    seen: list[float] = []
    second = zoo.fetch("mlp", "fake-sine", task=task, progress=seen.append, **FAST)
    assert second.from_cache and not calls and seen == [1.0]
    assert _state_equal(first.model, second.model)
    assert not second.model.training
    model = zoo.pretrained("mlp", "fake-sine", task=task, **FAST)
    assert _state_equal(first.model, model)
    # Provenance in the sidecar.
    meta = second.metadata
    assert meta["arch"] == "mlp" and meta["seed"] == 0 and meta["dataset"] == "fake-sine"
    assert meta["arch_kwargs"]["width"] == 16 and meta["train"]["epochs"] == 30
    assert meta["torch_version"] == torch.__version__
    assert second.record.final_loss == first.record.final_loss


def test_cache_key_covers_seed_hyperparameters_and_data(cache: Path) -> None:
    task = regression_task()
    base = zoo.fetch("mlp", "fake", task=task, **FAST)
    variants = [
        zoo.fetch("mlp", "fake", seed=1, task=task, **FAST),
        zoo.fetch("mlp", "fake", task=task, **{**FAST, "lr": 3e-3}),
        zoo.fetch("mlp", "fake", task=task, **{**FAST, "activation": "relu"}),
        zoo.fetch("mlp", "fake", task=regression_task(seed=5), **FAST),
        zoo.fetch("mlp", "other-name", task=task, **FAST),
    ]
    assert not any(v.from_cache for v in variants)
    paths = {base.path, *(v.path for v in variants)}
    assert len(paths) == 1 + len(variants)
    assert not _state_equal(base.model, variants[0].model)
    # The explicit default of a keyword is the same model as leaving it out.
    again = zoo.fetch("mlp", "fake", task=task, **FAST, optimizer="adam", activation="tanh")
    assert again.from_cache and again.path == base.path


def test_cache_dir_argument_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NTKCORE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_root() == tmp_path / "home" / ".cache" / "ntkcore"
    entry = zoo.fetch("mlp", "fake", task=regression_task(), cache_dir=tmp_path / "c", **FAST)
    assert entry.path.parent == tmp_path / "c" / "zoo"


def _corrupt_truncate(weights: Path, sidecar: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:-100])


def _corrupt_flip(weights: Path, sidecar: Path) -> None:
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF  # inside the tensor data, after the header
    weights.write_bytes(bytes(raw))


def _corrupt_header(weights: Path, sidecar: Path) -> None:
    """A damaged safetensors header whose checksum was 'fixed up' to match."""
    import hashlib

    raw = b"\xff" * 16 + weights.read_bytes()[16:]
    weights.write_bytes(raw)
    meta = json.loads(sidecar.read_text())
    meta["weights_sha256"] = hashlib.sha256(raw).hexdigest()
    sidecar.write_text(json.dumps(meta))


def _corrupt_sidecar(weights: Path, sidecar: Path) -> None:
    sidecar.write_text('{"format": 1, "key": ')


def _remove_sidecar(weights: Path, sidecar: Path) -> None:
    sidecar.unlink()


def _remove_weights(weights: Path, sidecar: Path) -> None:
    weights.unlink()


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_truncate,
        _corrupt_flip,
        _corrupt_header,
        _corrupt_sidecar,
        _remove_sidecar,
        _remove_weights,
    ],
)
def test_corrupt_entry_is_removed_and_retrained(cache: Path, corrupt: Any) -> None:
    task = regression_task()
    first = zoo.fetch("mlp", "fake", task=task, **FAST)
    corrupt(first.path, first.path.with_suffix(".json"))
    with pytest.warns(CacheCorruptionWarning, match="corrupt cache entry"):
        again = zoo.fetch("mlp", "fake", task=task, **FAST)
    assert not again.from_cache
    assert _state_equal(first.model, again.model)  # deterministic retraining
    third = zoo.fetch("mlp", "fake", task=task, **FAST)
    assert third.from_cache
    _assert_no_pickle(cache)


def test_tensors_of_the_wrong_architecture_are_rejected(cache: Path) -> None:
    """A well-formed entry whose tensors do not fit the architecture is caught by shape."""
    from ntkcore.zoo.cache import CheckpointStore

    task = regression_task()
    first = zoo.fetch("mlp", "fake", task=task, **FAST)
    sidecar = json.loads(first.path.with_suffix(".json").read_text())
    wrong = zoo.create("mlp", width=17, depth=2).state_dict()
    CheckpointStore().save(first.path.stem, sidecar["key"], wrong, {"record": sidecar["record"]})
    with pytest.warns(CacheCorruptionWarning, match="expected torch.float32"):
        again = zoo.fetch("mlp", "fake", task=task, **FAST)
    assert not again.from_cache and _state_equal(first.model, again.model)


def test_interrupted_write_leaves_no_committed_entry(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = regression_task()
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.warns(RuntimeWarning, match="could not write the model cache"):
        first = zoo.fetch("mlp", "fake", task=task, **FAST)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not any(p.name.endswith(".tmp") for p in cache.iterdir())  # temp file cleaned up
    assert not any(p.suffix == ".json" for p in cache.iterdir())
    with pytest.warns(CacheCorruptionWarning, match="incomplete entry"):
        again = zoo.fetch("mlp", "fake", task=task, **FAST)
    assert not again.from_cache and _state_equal(first.model, again.model)
    assert zoo.fetch("mlp", "fake", task=task, **FAST).from_cache


def test_read_only_cache_never_crashes(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged entry that cannot be removed or rewritten: warnings, and a trained model."""
    task = regression_task()
    first = zoo.fetch("mlp", "fake", task=task, **FAST)
    if os.name == "posix":
        assert first.path.stat().st_mode & 0o777 == 0o644
    _corrupt_flip(first.path, first.path.with_suffix(".json"))

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(Path, "unlink", deny)
    monkeypatch.setattr(os, "replace", deny)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = zoo.fetch("mlp", "fake", task=task, **FAST)
    messages = [(w.category, str(w.message)) for w in caught]
    assert any(c is CacheCorruptionWarning and "checksum mismatch" in m for c, m in messages)
    assert any(c is CacheCorruptionWarning and "could not remove" in m for c, m in messages)
    assert any(c is RuntimeWarning and "could not write the model" in m for c, m in messages)
    assert not again.from_cache and _state_equal(first.model, again.model)


def test_retrain_overwrites(cache: Path) -> None:
    task = regression_task()
    zoo.fetch("mlp", "fake", task=task, **FAST)
    entry = zoo.fetch("mlp", "fake", task=task, retrain=True, **FAST)
    assert not entry.from_cache
    assert len(list(cache.glob("*.safetensors"))) == 1


def test_pretrained_classifier_on_images(cache: Path) -> None:
    task = image_task()
    entry = zoo.fetch("lenet3", "fake-images", task=task, epochs=3, batch_size=8)
    assert entry.metadata["train"]["loss"] == "cross_entropy"
    assert entry.metadata["arch_kwargs"]["in_size"] == 28
    assert entry.metadata["arch_kwargs"]["out_features"] == 3
    assert entry.record.steps == 3 * 4
    x, _ = task.source
    assert entry.model(x[:2]).shape == (2, 3)
    assert zoo.fetch("lenet3", "fake-images", task=task, epochs=3, batch_size=8).from_cache


def test_pretrained_residual_network_fits_the_task(cache: Path) -> None:
    task = image_task(n=16, size=32)  # one channel, 3 classes: the stem and head adapt
    entry = zoo.fetch("preresnet20", "fake-images", task=task, epochs=1, batch_size=8)
    assert entry.metadata["arch_kwargs"] == {"num_classes": 3, "in_channels": 1, "in_size": 32}
    assert entry.metadata["train"]["weight_decay"] == 5e-4  # CIFAR default
    again = zoo.fetch("preresnet20", "fake-images", task=task, epochs=1, batch_size=8)
    assert again.from_cache and _state_equal(entry.model, again.model)  # BN buffers too
    assert not again.model.training


def test_pretrained_heteroscedastic_defaults_to_gaussian_nll(cache: Path) -> None:
    entry = zoo.fetch("hetero-mlp", "fake", task=regression_task(), **FAST)
    assert entry.metadata["train"]["loss"] == "gaussian_nll"
    assert entry.metadata["arch_kwargs"]["in_features"] == 1


@pytest.mark.parametrize(
    ("arch", "task", "kwargs", "pattern"),
    [
        ("mlp", regression_task(), {"in_features": 3}, "in_features=3 conflicts with dataset"),
        ("mlp", regression_task(), {"momentum": 0.9}, r"unknown keyword.*training keywords"),
        ("hetero-mlp", image_task(), {}, "supports \\['regression'\\] tasks"),
        ("lenet3", regression_task(), {}, "lenet3 needs square images"),
        ("alexnet", image_task(), {}, "alexnet needs 32x32 RGB images"),
        ("nope", regression_task(), {}, "unknown architecture"),
        ("mlp", regression_task(), {"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_pretrained_rejects_bad_requests(
    cache: Path, arch: str, task: FakeTask, kwargs: dict, pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        zoo.fetch(arch, "fake", task=task, **kwargs)


def test_pretrained_loads_named_datasets_through_ntkcore_data(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requested: list[tuple[str, dict]] = []

    def fake_load(name: str, data_kw: dict) -> FakeTask:
        requested.append((name, data_kw))
        return regression_task()

    monkeypatch.setattr(pretraining, "load_task", fake_load)
    entry = zoo.fetch("mlp", "sinusoids", data_kw={"seed": 3}, **FAST)
    assert requested == [("sinusoids", {"seed": 3})]
    assert entry.metadata["data_kwargs"] == {"seed": 3}


# ----------------------------------------------------------------------------- presets, CLI


def test_presets_are_well_formed() -> None:
    workshop = zoo.PRESETS["workshop"]
    ids = [p.id for p in workshop]
    assert len(ids) == len(set(ids))
    wanted = {
        ("mlp", "sinusoids"),
        ("hetero-mlp", "spatial"),
        ("lenet3", "faces-rotation"),
        ("lenet3", "mnist"),
    }
    assert wanted <= {(p.arch, p.dataset) for p in workshop}
    sine = zoo.preset("sinusoids-mlp")
    assert dict(sine.hyper).items() >= {"width": 40, "depth": 3, "activation": "tanh"}.items()
    assert zoo.preset("faces-rotation-lenet3").hyper["in_size"] == 45
    with pytest.raises(ValueError, match="sinusoids-mlp"):
        zoo.preset("nope")


def test_presets_resolve_against_the_shipped_datasets() -> None:
    data = pytest.importorskip("ntkcore.data")
    for p in zoo.PRESETS["workshop"]:
        task = data.load(p.dataset, **p.data_kw)
        r = pretraining.resolve(p.arch, p.dataset, task, p.seed, p.data_kw, **p.hyper)
        assert zoo.info(p.arch, **r.arch_kwargs).input_shape == tuple(task.meta.input_shape)


def test_cli_archs_lists_every_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["archs"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ALL_ARCHS)


def test_cli_build_and_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    group = (
        zoo.Preset("fake-mlp", "mlp", "fake-sine", "test MLP", {"width": 8, "epochs": 20}),
        zoo.Preset("fake-lenet", "lenet3", "fake-images", "test LeNet", {"epochs": 1}),
        zoo.Preset("broken", "alexnet", "fake-images", "cannot fit 28x28 images"),
    )
    tasks = {"fake-sine": regression_task(), "fake-images": image_task()}
    monkeypatch.setattr(pretraining, "load_task", lambda name, kw: tasks[name])
    monkeypatch.setattr(cli, "load_task", lambda name, kw: tasks[name])
    monkeypatch.setattr(cli, "PRESETS", {"workshop": group})
    root = str(tmp_path / "c")

    assert cli.main(["build", "--list", "--cache-dir", root]) == 0
    out = capsys.readouterr().out
    assert "fake-mlp" in out and "not built" in out and "alexnet needs 32x32" in out

    assert cli.main(["build", "--only", "fake-mlp", "fake-lenet", "--cache-dir", root]) == 0
    out = capsys.readouterr().out
    assert "fake-mlp: trained" in out and "fake-lenet: trained" in out

    assert cli.main(["build", "--cache-dir", root]) == 1  # the broken entry fails
    out = capsys.readouterr().out
    assert "fake-mlp: cached" in out and "broken: FAILED" in out

    assert cli.main(["build", "--list", "--cache-dir", root]) == 0
    assert capsys.readouterr().out.count("cached") == 2
    with pytest.raises(SystemExit, match="unknown preset id"):
        cli.main(["build", "--only", "nope", "--cache-dir", root])
