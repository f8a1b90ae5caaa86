"""Tests of ntkcore.data: offline loading, shapes, determinism, real shifts, integrity, errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ntkcore import data
from ntkcore.data import _files
from ntkcore.data.task import Task, TaskMeta

NAMES = [
    "sinusoids",
    "linear-to-sine",
    "toy-gap",
    "spatial",
    "faces-rotation",
    "mnist",
    "fashion-mnist",
    "fashion-mnist-32",
]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a network connection fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv(_files.ENV_VAR, raising=False)
    data.clear_cache()
    yield
    data.clear_cache()


def splits(task: Task):
    return {"source": task.source, "target": task.target, "test": task.test}


def assert_same(a: Task, b: Task) -> None:
    for (xa, ya), (xb, yb) in zip(splits(a).values(), splits(b).values(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --- registry, shapes, offline --------------------------------------------------------------


def test_available_lists_every_task():
    assert data.available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_loads_offline_with_documented_shapes(name, no_network):
    spec = data.info(name)
    task = data.load(name)
    meta = task.meta
    assert meta.name == name and meta.kind == spec["kind"]
    assert meta.input_shape == spec["input_shape"] and meta.output_dim == spec["output_dim"]
    assert meta.description and meta.citation and meta.provenance
    for split, (x, y) in splits(task).items():
        n = x.shape[0]
        assert n >= 1, split
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == spec["input_shape"]
        assert np.isfinite(x.numpy()).all()
        if spec["kind"] == "regression":
            assert y.dtype == torch.float32 and y.shape == (n, spec["output_dim"])
            assert np.isfinite(y.numpy()).all()
        else:
            assert y.dtype == torch.int64 and y.shape == (n,)
            assert 0 <= int(y.min()) and int(y.max()) < spec["num_classes"]
            assert meta.num_classes == spec["num_classes"] == spec["output_dim"]
        if x.ndim == 4:  # images: pixels in [0, 1]
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_source_independent_of_target_seed(name):
    first = data.load(name, seed=3)
    data.clear_cache()
    assert_same(first, data.load(name, seed=3))
    other = data.load(name, seed=4)
    for x, y in zip(first.source, other.source, strict=True):  # one source model for all seeds
        assert torch.equal(x, y)
    assert not torch.equal(first.target[0], other.target[0])
    # source_seed drives the source side (spatial: only when the map is subsampled)
    subsample = {"n_source": 500} if name == "spatial" else {}
    base = data.load(name, seed=3, **subsample)
    changed = data.load(name, seed=3, source_seed=1, **subsample)
    assert not torch.equal(base.source[0], changed.source[0])


@pytest.mark.parametrize("name", NAMES)
def test_float64_and_pickle_round_trip(name):
    task = data.load(name, dtype=torch.float64)
    assert task.source[0].dtype == torch.float64 and task.test[0].dtype == torch.float64
    if task.kind == "regression":
        assert task.target[1].dtype == torch.float64
    assert torch.allclose(task.source[0].float(), data.load(name).source[0])
    copy = pickle.loads(pickle.dumps(task))
    assert_same(task, copy)
    assert copy.meta == task.meta


def test_loaded_tensors_do_not_alias_the_cache():
    task = data.load("mnist")
    expected = task.source[0].clone()
    task.source[0].zero_()
    assert torch.equal(data.load("mnist").source[0], expected)
    arrays = _files.read_npz("mnist_5k.npz")
    with pytest.raises(ValueError):
        arrays["images"][0, 0, 0] = 1


@pytest.mark.parametrize("name", NAMES)
def test_loading_is_fast(name):
    data.load(name)  # first load reads and verifies the files
    times = []
    for seed in range(3):
        start = time.perf_counter()
        data.load(name, seed=seed)
        times.append(time.perf_counter() - start)
    assert sorted(times)[1] < 1.0, times


# --- sinusoids and linear-to-sine -----------------------------------------------------------


def sine(params, x):
    return params["amplitude"] * np.sin(params["frequency"] * x + params["phase"])


def test_sinusoids_follow_the_kim_process_and_differ():
    task = data.load("sinusoids", seed=5, n_source=400, n_target=400)
    src, tgt = task.meta.params["source"], task.meta.params["target"]
    for params, (x, y) in ((src, task.source), (tgt, task.target)):
        x, y = x.double().numpy()[:, 0], y.double().numpy()[:, 0]
        assert x.min() >= -5 and x.max() <= 5
        residual = y - sine(params, x)
        noise = 0.01 * params["amplitude"]
        assert params["noise_std"] == pytest.approx(noise)
        assert 0.8 * noise < residual.std() < 1.2 * noise and abs(residual.mean()) < 0.2 * noise
    x_test = task.test[0].double().numpy()[:, 0]
    assert np.allclose(x_test, np.linspace(-5, 5, 200))
    truth = task.meta.target_function(task.test[0].double())
    assert truth.shape == (200, 1)
    assert np.allclose(truth.numpy()[:, 0], sine(tgt, x_test))
    # a real shift: the source function is a poor model of the target data
    shift = np.mean((task.meta.source_function(x_test) - sine(tgt, x_test)) ** 2)
    assert shift > 100 * tgt["noise_std"] ** 2


def test_sinusoid_parameters_are_uniform_on_the_documented_ranges():
    draws = np.array(
        [
            [p["amplitude"], p["frequency"], p["phase"]]
            for p in (
                data.load("sinusoids", seed=s, n_source=1, n_target=1, n_test=1).meta.params[
                    "target"
                ]
                for s in range(400)
            )
        ]
    )
    low, high = np.array([0.1, 0.5, 0.0]), np.array([5.0, 2.0, 2 * math.pi])
    assert (draws >= low).all() and (draws <= high).all()
    scaled = (draws - low) / (high - low)  # U[0, 1]: mean 1/2, sd 1/sqrt(12)
    assert np.allclose(scaled.mean(axis=0), 0.5, atol=0.05)
    assert np.allclose(scaled.std(axis=0), 1 / math.sqrt(12), atol=0.03)
    assert len(np.unique(draws[:, 0])) == 400


def test_same_seed_gives_different_source_and_target_tasks():
    task = data.load("sinusoids", seed=0, source_seed=0)
    assert task.meta.params["source"] != task.meta.params["target"]


def test_target_pool_prefixes_are_stable():
    small = data.load("sinusoids", seed=2, n_target=10)
    large = data.load("sinusoids", seed=2, n_target=100)
    assert torch.equal(small.target[0], large.target[0][:10])
    assert torch.equal(small.target[1], large.target[1][:10])
    x, y = large.context(10)
    assert torch.equal(x, small.target[0]) and torch.equal(y, small.target[1])


def test_linear_to_sine_source_is_linear_and_target_is_the_sinusoid():
    task = data.load("linear-to-sine", seed=7, n_source=500)
    params = task.meta.params["source"]
    x, y = task.source[0].double().numpy()[:, 0], task.source[1].double().numpy()[:, 0]
    slope, intercept = np.polyfit(x, y, 1)
    assert slope == pytest.approx(params["slope"], abs=0.05)
    assert intercept == pytest.approx(params["intercept"], abs=0.1)
    assert -3 <= params["slope"] <= 3 and -3 <= params["intercept"] <= 3
    assert np.std(y - (slope * x + intercept)) == pytest.approx(0.3, rel=0.15)
    same_target = data.load("sinusoids", seed=7)
    assert torch.equal(task.target[0], same_target.target[0])
    assert torch.equal(task.test[1], same_target.test[1])
    for seed in range(5):  # no line explains a sinusoidal target
        xt, yt = (t.double().numpy()[:, 0] for t in data.load("linear-to-sine", seed=seed).test)
        fit = np.polyval(np.polyfit(xt, yt, 1), xt)
        amplitude = data.load("sinusoids", seed=seed).meta.params["target"]["amplitude"]
        assert np.std(yt - fit) > 0.1 * amplitude


# --- toy-gap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["relu", "sine"])
def test_toy_gap_has_an_empty_gap_that_the_test_grid_covers(variant):
    for seed in range(3):
        task = data.load("toy-gap", variant=variant, seed=seed, source_seed=seed)
        low, high = task.meta.params["gap"]
        assert high > 1.0
        for x, _ in (task.source, task.target):
            x = x.numpy()[:, 0]
            assert not ((x > low) & (x < high)).any()
            assert (x < low).sum() == (x > high).sum()  # two equal clusters
        x_test = task.test[0].numpy()[:, 0]
        assert ((x_test > low) & (x_test < high)).mean() > 0.1
        assert x_test.min() < task.source[0].min() and x_test.max() > task.source[0].max()


def test_toy_gap_relu_matches_the_reference_process():
    task = data.load("toy-gap", n_source=2000)
    x, y = task.source[0].double().numpy()[:, 0], task.source[1].double().numpy()[:, 0]
    residual = y - (0.1 * x**2 + np.abs(x))
    assert residual.std() == pytest.approx(0.9, rel=0.08)
    assert np.abs(x).mean() == pytest.approx(5.0, abs=0.1)
    assert np.abs(x).std() == pytest.approx(0.8, rel=0.1)


# --- spatial ------------------------------------------------------------------------------------


def raw_table(name: str):
    import pandas as pd

    with gzip.open(REPO / "datasets" / name, "rt") as handle:
        return pd.read_csv(handle)


def test_spatial_climate_matches_the_file_and_shows_uneven_warming():
    task = data.load("spatial", n_target=1000)
    tr, extra = task.meta.transform, task.meta.extra
    table = raw_table("a1b_north_america_decadal.csv.gz")
    assert extra["grid_shape"] == (37, 49) and len(table) == 37 * 49
    # source: the whole 1860s map in file order, standardised with its own statistics
    y_src = task.source[1].double().numpy()[:, 0]
    assert np.allclose(y_src * tr["y_std"] + tr["y_mean"], table["t1860"], atol=1e-3)
    assert abs(y_src.mean()) < 1e-5 and y_src.std() == pytest.approx(1.0, abs=1e-5)
    lon = task.source[0].double().numpy()[:, 0] * tr["x_std"][0] + tr["x_mean"][0]
    assert np.allclose(lon, table["lon"], atol=1e-3)
    rows = extra["target_rows"].numpy()
    kelvin_target = task.target[1].double().numpy()[:, 0] * tr["y_std"] + tr["y_mean"]
    assert np.allclose(kelvin_target, table["t2090"].to_numpy()[rows], atol=1e-3)
    assert set(rows).isdisjoint(extra["test_rows"].numpy())
    assert len(rows) + len(extra["test_rows"]) == 37 * 49
    warming = kelvin_target - table["t1860"].to_numpy()[rows]
    assert warming.mean() > 3.0  # a real shift: ~5 K of warming by the 2090s ...
    assert warming.std() > 1.0  # ... that is spatially uneven (not a constant offset)
    assert task.target[1].mean() > 0.3  # visible in the source's standardised units


def test_spatial_ontario_uses_census_densities():
    task = data.load("spatial", variant="ontario", seed=1)
    tr, extra = task.meta.transform, task.meta.extra
    table = raw_table("ontario_density.csv.gz")
    src = task.source[1].double().numpy()[:, 0] * tr["y_std"] + tr["y_mean"]
    assert np.allclose(src, np.log10(1 + table["density_1996"].dropna()), atol=1e-4)
    rows = np.concatenate([extra["target_rows"].numpy(), extra["test_rows"].numpy()])
    assert len(rows) == table["density_2021"].notna().sum()
    both = table.loc[rows, ["density_1996", "density_2021"]].dropna()
    growth = np.log10(1 + both["density_2021"]) - np.log10(1 + both["density_1996"])
    assert growth.mean() > 0.01 and growth.std() > 0.05  # growth that differs by place


def test_spatial_options_are_validated():
    with pytest.raises(ValueError, match="source_time"):
        data.load("spatial", source_time=1865)
    with pytest.raises(ValueError, match="differ"):
        data.load("spatial", source_time=1900, target_time=1900)
    with pytest.raises(ValueError, match="n_target"):
        data.load("spatial", n_target=1813)
    task = data.load("spatial", source_time=1950, target_time=2000, n_source=100, n_test=50)
    assert task.sizes == {"source": 100, "target": 200, "test": 50}


# --- faces-rotation and the rotation ------------------------------------------------------------


def test_rotate_and_crop_matches_torch_references():
    images = torch.rand(4, 2, 9, 9, dtype=torch.float64)
    angles = torch.tensor([0.0, 12.5, 30.0, 90.0], dtype=torch.float64)
    out = data.rotate_and_crop(images, angles, size=7, crop=0.7)
    rad = torch.deg2rad(angles)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros(4, dtype=torch.float64)
    theta = 0.7 * torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2
    )
    grid = F.affine_grid(theta, [4, 2, 7, 7], align_corners=False)
    assert torch.allclose(out, F.grid_sample(images, grid, align_corners=False), atol=1e-12)
    quarter = data.rotate_and_crop(images, torch.full((4,), 90.0), size=9)
    assert torch.allclose(quarter, torch.rot90(images, 1, dims=(-2, -1)), atol=1e-12)
    identity = data.rotate_and_crop(images, torch.zeros(4), size=9)
    assert torch.allclose(identity, images, atol=1e-12)


def test_face_crops_never_read_outside_the_rotated_frame():
    crop = data.load("faces-rotation").meta.params["crop"]
    assert crop == data.inscribed_crop(25, 45, 30.0)
    assert 0.65 < crop < 1 / (math.cos(math.radians(30)) + math.sin(math.radians(30)))
    ones = torch.ones(400, 1, 25, 25)
    out = data.rotate_and_crop(ones, torch.linspace(0, 30, 400), size=45, crop=crop)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)  # zero padding never read
    wider = data.rotate_and_crop(ones[:1], torch.tensor([30.0]), size=45, crop=1.02 * crop)
    assert float(wider.min()) < 0.99  # and the crop is tight: a slightly larger one reads it


def test_faces_rotation_splits_identities_and_standardises_angles():
    task = data.load("faces-rotation")
    extra, tr = task.meta.extra, task.meta.transform
    assert len(extra["source_identities"]) == len(extra["target_identities"]) == 20
    assert set(extra["source_identities"]).isdisjoint(extra["target_identities"])
    assert set(extra["source_identity"].tolist()) == set(extra["source_identities"])
    assert set(extra["test_identity"].tolist()) <= set(extra["target_identities"])
    assert task.sizes == {"source": 600, "target": 200, "test": 400}
    for _, y in splits(task).values():
        degrees = y.double().numpy()[:, 0] * tr["y_std"] + tr["y_mean"]
        assert degrees.min() >= 0.0 and degrees.max() <= 30.0
    y = task.source[1].double().numpy()[:, 0]
    assert abs(y.mean()) < 0.15 and y.std() == pytest.approx(1.0, abs=0.1)
    # the image really is the shipped face rotated by the recorded angle
    faces = torch.as_tensor(_files.read_npz("lfw_faces_25.npz")["images"]).float() / 255
    k = 7
    angle = float(task.source[1][k, 0]) * tr["y_std"] + tr["y_mean"]
    face = faces[int(extra["source_identity"][k])][None, None]
    expected = data.rotate_and_crop(
        face, torch.tensor([angle]), size=45, crop=task.meta.params["crop"], padding_mode="border"
    )
    assert torch.allclose(task.source[0][k : k + 1], expected, atol=1e-4)
    other = data.rotate_and_crop(
        face, torch.tensor([angle + 10]), size=45, crop=task.meta.params["crop"]
    )
    assert not torch.allclose(task.source[0][k : k + 1], other, atol=1e-2)


def test_faces_rotation_digits_variant_shifts_classes():
    task = data.load("faces-rotation", variant="digits", n_identities=30, rotations=5, n_target=50)
    labels = _files.read_npz("digits_8x8.npz")["labels"]
    assert (labels[task.meta.extra["source_identities"]] < 5).all()
    assert (labels[task.meta.extra["target_identities"]] >= 5).all()
    assert task.sizes == {"source": 150, "target": 50, "test": 100}
    corners = task.source[0][:, 0, :4, :4]
    assert float(corners.abs().max()) == 0.0  # zero background, no artefacts from padding


# --- MNIST-like ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_halves_are_disjoint_balanced_draws_of_one_distribution(name):
    task = data.load(name)
    extra = task.meta.extra
    idx = [extra[k].numpy() for k in ("source_index", "target_index", "test_index")]
    assert [len(i) for i in idx] == [2000, 2000, 1000]
    assert len(np.unique(np.concatenate(idx))) == 5000
    for (_, y), per_class in zip(splits(task).values(), (200, 200, 100), strict=True):
        assert np.array_equal(np.bincount(y.numpy(), minlength=10), np.full(10, per_class))
    file = "mnist_5k.npz" if name == "mnist" else "fashion_mnist_5k.npz"
    raw = _files.read_npz(file)
    assert np.array_equal(task.target[1].numpy(), raw["labels"][idx[1]])
    assert np.allclose(task.target[0].numpy()[:, 0] * 255, raw["images"][idx[1]])


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_classes_split_is_a_label_shift(name):
    task = data.load(name, split="classes", n_target=300)
    assert set(task.source[1].unique().tolist()) == {0, 1, 2, 3, 4}
    assert set(task.target[1].unique().tolist()) == {5, 6, 7, 8, 9}
    assert set(task.test[1].unique().tolist()) == {5, 6, 7, 8, 9}
    assert task.sizes == {"source": 2500, "target": 300, "test": 1000}


def test_mnist_and_fashion_mnist_are_different_domains():
    mnist, fashion = data.load("mnist"), data.load("fashion-mnist")
    m, f = mnist.source[0].mean(dim=0), fashion.source[0].mean(dim=0)
    assert abs(float(mnist.source[0].mean()) - float(fashion.source[0].mean())) > 0.1
    cosine = float((m * f).sum() / (m.norm() * f.norm()))
    assert cosine < 0.9
    halves = float(
        (m * mnist.target[0].mean(dim=0)).sum() / (m.norm() * mnist.target[0].mean(dim=0).norm())
    )
    assert halves > 0.99  # the two MNIST halves share one distribution


def test_fashion_mnist_32_is_padded_and_tiled():
    small, big = data.load("fashion-mnist", seed=2), data.load("fashion-mnist-32", seed=2)
    assert "tiled" in big.meta.description and "32" in big.meta.description
    for (xs, ys), (xb, yb) in zip(splits(small).values(), splits(big).values(), strict=True):
        assert torch.equal(ys, yb)
        assert torch.equal(xb[:, :, 2:30, 2:30], xs.expand(-1, 3, -1, -1))
        assert float(xb[:, :, :2].abs().max()) == 0.0 and float(xb[:, :, :, 30:].abs().max()) == 0
        assert torch.equal(xb[:, 0], xb[:, 2])


# --- integrity ------------------------------------------------------------------------------


def test_sources_md_records_the_checksums_of_the_shipped_files():
    text = (REPO / "datasets" / "SOURCES.md").read_text()
    recorded = dict(re.findall(r"\| `([\w.\-]+)` \| \d+ \| `([0-9a-f]{64})` \|", text))
    assert recorded == _files.CHECKSUMS
    for name, digest in recorded.items():
        path = REPO / "datasets" / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
        assert f"| `{name}` | {path.stat().st_size} |" in text
    total = sum((REPO / "datasets" / name).stat().st_size for name in recorded)
    assert total < 5_000_000
    assert not (REPO / "datasets" / "__init__.py").exists()  # never shadow HF `datasets`


def test_checksum_mismatch_raises(tmp_path, monkeypatch):
    copy = tmp_path / "datasets"
    shutil.copytree(REPO / "datasets", copy, ignore=shutil.ignore_patterns("scripts"))
    payload = bytearray((copy / "mnist_5k.npz").read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (copy / "mnist_5k.npz").write_bytes(bytes(payload))
    monkeypatch.setenv("NTKCORE_DATASETS", str(copy))
    assert data.datasets_dir() == copy
    with pytest.raises(data.DatasetIntegrityError, match="checksum mismatch"):
        data.load("mnist")
    assert data.load("spatial").sizes["source"] == 1813  # intact files still load
    monkeypatch.delenv("NTKCORE_DATASETS")
    assert data.load("mnist").sizes["source"] == 2000  # the repository copy is fine


def test_missing_dataset_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKCORE_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="NTKCORE_DATASETS"):
        data.load("mnist")
    assert data.load("sinusoids").sizes["source"] == 200  # generated tasks need no files


# --- errors ------------------------------------------------------------------------------------


def test_unknown_names_and_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="available: .*sinusoids"):
        data.load("cifar-10")
    with pytest.raises(ValueError, match="available"):
        data.info("nope")
    with pytest.raises(ValueError, match=r"unknown option.*n_context.*valid options.*n_target"):
        data.load("sinusoids", n_context=5)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("sinusoids", {"seed": -1}, "seed"),
        ("sinusoids", {"seed": True}, "seed"),
        ("sinusoids", {"seed": 1.5}, "seed"),
        ("sinusoids", {"n_target": 0}, "n_target"),
        ("sinusoids", {"dtype": torch.int64}, "dtype"),
        ("toy-gap", {"variant": "cubic"}, "variant"),
        ("spatial", {"variant": "malaria"}, "variant"),
        ("faces-rotation", {"n_identities": 51}, "n_identities"),
        ("faces-rotation", {"max_angle": 60.0}, "max_angle"),
        ("faces-rotation", {"n_target": 600}, "n_target"),
        ("mnist", {"split": "thirds"}, "split"),
        ("mnist", {"n_target": 2001}, "n_target"),
    ],
)
def test_bad_option_values_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(name, **kwargs)


def test_info_describes_options_without_loading():
    spec = data.info("sinusoids")
    assert spec["options"]["n_source"] == 200 and spec["options"]["source_seed"] == 0
    assert spec["options"]["seed"] == 0 and spec["options"]["dtype"] == torch.float32
    assert data.info("faces-rotation")["input_shape"] == (1, 45, 45)
    assert data.info("mnist")["files"] == ("mnist_5k.npz",)
    assert "halves" in data.info("mnist")["doc"]


# --- Task validation ---------------------------------------------------------------------------


def regression_meta(**overrides):
    fields = dict(name="t", description="d", kind="regression", input_shape=(2,), output_dim=1)
    return TaskMeta(**{**fields, **overrides})


def pair(n=4, d=2, o=1):
    return torch.zeros(n, d), torch.zeros(n, o)


def test_task_validates_shapes_and_dtypes():
    meta = regression_meta()
    Task(pair(), pair(), pair(), meta)
    cases = [
        ((torch.zeros(4, 3), torch.zeros(4, 1)), "shape"),
        ((torch.zeros(4, 2), torch.zeros(4)), r"\(n, output_dim\)"),
        ((torch.zeros(4, 2), torch.zeros(5, 1)), "number of points"),
        ((torch.zeros(0, 2), torch.zeros(0, 1)), "at least one"),
        ((torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 1)), "floating"),
        ((torch.full((4, 2), float("nan")), torch.zeros(4, 1)), "non-finite"),
        ((torch.zeros(4, 2), torch.full((4, 1), float("inf"))), "non-finite"),
        ((torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 1)), "dtype"),
        ((torch.zeros(4, 2),), "pair"),
        ((np.zeros((4, 2)), np.zeros((4, 1))), "tensors"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            Task(pair(), bad, pair(), meta)
    with pytest.raises(ValueError, match="TaskMeta"):
        Task(pair(), pair(), pair(), dict(meta))


def test_classification_tasks_need_int64_labels_in_range():
    meta = TaskMeta(
        name="c", description="d", kind="classification", input_shape=(2,), output_dim=3,
        num_classes=3,
    )  # fmt: skip
    good = (torch.zeros(4, 2), torch.tensor([0, 1, 2, 1]))
    Task(good, good, good, meta)
    for labels, match in [
        (torch.tensor([0.0, 1.0, 2.0, 1.0]), "int64"),
        (torch.tensor([0, 1, 3, 1]), r"\[0, 3\)"),
        (torch.tensor([[0], [1], [2], [1]]), "shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            Task(good, (torch.zeros(4, 2), labels), good, meta)


def test_task_meta_validation_and_mapping_access():
    with pytest.raises(ValueError, match="kind"):
        regression_meta(kind="ranking")
    with pytest.raises(ValueError, match="input_shape"):
        regression_meta(input_shape=(0,))
    with pytest.raises(ValueError, match="num_classes"):
        regression_meta(kind="classification", output_dim=3)
    with pytest.raises(ValueError, match="output_dim == num_classes"):
        regression_meta(kind="classification", output_dim=2, num_classes=3)
    with pytest.raises(ValueError, match="num_classes=None"):
        regression_meta(num_classes=3)
    with pytest.raises(ValueError, match="callable"):
        regression_meta(target_function=3)
    meta = regression_meta(input_shape=[2])
    assert meta.input_shape == (2,)
    assert meta["description"] == meta.description == "d"
    assert meta.get("num_classes") is None and "citation" in meta
    assert dict(meta)["kind"] == "regression"
    with pytest.raises(KeyError):
        meta["nope"]


def test_context_and_to():
    task = data.load("sinusoids", n_target=20)
    x, y = task.context(0)
    assert x.shape == (0, 1) and y.shape == (0, 1)
    with pytest.raises(ValueError, match=r"\[0, 20\]"):
        task.context(21)
    with pytest.raises(ValueError, match="floating"):
        task.to(dtype=torch.int32)
    assert task.to(dtype=torch.float64).source[1].dtype == torch.float64
    labels = data.load("mnist").to(dtype=torch.float64).source[1]
    assert labels.dtype == torch.int64


def test_true_functions_work_on_arrays_and_tensors():
    f = data.load("sinusoids").meta.target_function
    x = np.linspace(-5, 5, 11)[:, None]
    assert np.allclose(f(x), f(torch.as_tensor(x)).numpy())
    assert "sin" in f.formula()
    assert isinstance(pickle.loads(pickle.dumps(f)), type(f))
    buffer = io.BytesIO()
    pickle.dump(data.load("toy-gap").meta.target_function, buffer)
