"""Property-based robustness: malformed input to every public entry point is a clear error.

Hypothesis generates malformed tensors (wrong shapes and dtypes, NaN/inf, empty, huge values,
non-tensors, sparse/meta tensors, ragged lists), malformed CSV text and bytes, and damaged
model files (random bytes, byte flips and truncations of valid safetensors and torch.export
files, random replacements inside a program's JSON).  The property everywhere: the call
returns, or raises ``ValueError``/``TypeError`` with a non-empty message - never another
exception - and a returned posterior predicts finite values.

Reproducible in CI: the ``fuzz`` profile is derandomized and keeps no example database.
Hangs: a generous per-example ``deadline`` (the machine is shared) and a per-test timeout.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import ntkcore
from ntkcore import Linearization, data, zoo

settings.register_profile(
    "ntkcore-fuzz",
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=5),
    max_examples=30,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("ntkcore-fuzz")


def fuzz(examples: int) -> settings:
    """The fuzz profile with ``examples`` examples."""
    return settings(FUZZ, max_examples=examples)

pytestmark = pytest.mark.timeout(180)

D_IN, D_OUT, N = 3, 2, 5


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return zoo.create("mlp", in_features=D_IN, out_features=D_OUT, width=6, depth=1).eval()


MODEL = make_model()
LIN = Linearization(MODEL)
P = LIN.num_params
X0 = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(1))
Y0 = torch.randn(N, D_OUT, generator=torch.Generator().manual_seed(2))


def clean(call, *args, **kwargs) -> Any:
    """Run ``call``; a ValueError/TypeError must carry a message; nothing else may escape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call(*args, **kwargs)
    except (ValueError, TypeError) as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


# ----------------------------------------------------------------------------- tensors
SPECIAL = [0.0, -0.0, 1.0, float("nan"), float("inf"), -float("inf"), 1e38, -3e38, 1e300, 5e-324]
DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8,
    torch.uint8, torch.bool, torch.complex64,
]


@st.composite
def tensors(draw, shape: tuple[int, ...]) -> Any:
    """Mostly near-valid tensors of ``shape``; sometimes anything at all."""
    kind = draw(st.sampled_from(["right", "right", "shape", "special", "other", "python"]))
    if kind in ("right", "special", "shape"):
        if kind == "shape":
            ndim = draw(st.integers(0, 4))
            shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
        dtype = draw(st.sampled_from(DTYPES)) if draw(st.booleans()) else torch.float32
        seed = torch.Generator().manual_seed(draw(st.integers(0, 9)))
        values = torch.randn(shape, generator=seed, dtype=torch.float64)
        if kind == "special" and values.numel():
            flat = values.reshape(-1)
            for _ in range(draw(st.integers(1, 3))):
                flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(SPECIAL))
            values = flat.reshape(shape) * draw(st.sampled_from([1.0, 1e20, 1e-30]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dtype.is_floating_point or dtype.is_complex:
                t = values.to(dtype)  # out-of-range values become inf
            else:
                t = values.nan_to_num(0.0).clamp(-100, 100).to(dtype)
        form = draw(st.sampled_from(["tensor", "tensor", "numpy", "list", "transposed", "grad"]))
        if form == "numpy" and dtype not in (torch.bfloat16,):
            return t.numpy()
        if form == "list":
            return t.tolist()
        if form == "transposed" and t.dim() >= 2:
            return t.mT.contiguous().mT
        if form == "grad" and t.is_floating_point():
            return t.clone().requires_grad_(True)
        return t
    if kind == "other":
        return draw(
            st.sampled_from(
                [
                    torch.zeros(shape).to_sparse() if shape else torch.zeros(1).to_sparse(),
                    torch.empty(shape, device="meta"),
                    torch.zeros(0),
                    torch.tensor(1.0),
                    np.array([["a", "b"]], dtype=object),
                ]
            )
        )
    return draw(
        st.one_of(
            st.none(),
            st.text(max_size=5),
            st.integers(min_value=-(2**80), max_value=2**80),
            st.floats(),
            st.lists(st.one_of(st.floats(), st.lists(st.floats(), max_size=3)), max_size=4),
            st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
            st.just(object()),
        )
    )


@FUZZ
@given(x=tensors((N, D_IN)), v=tensors((P,)), u=tensors((N, D_OUT)))
def test_linearization_products(x, v, u):
    clean(LIN, x)
    clean(LIN.jvp, x, v)
    clean(LIN.vjp, x, u)
    clean(LIN.jvp, X0, v)
    clean(LIN.vjp, X0, u)
    clean(LIN.ntk, x)
    clean(LIN.ntk, X0, x)
    clean(LIN.ntk_diag, x)
    clean(LIN.jacobian, x)


AT_X0 = LIN.at(X0)


@FUZZ
@given(x=tensors((N, D_IN)), v=tensors((P,)), u=tensors((N, D_OUT)))
def test_products_at_fixed_inputs(x, v, u):
    at = clean(LIN.at, x, cache="none")
    for products in (at, AT_X0):
        if products is None:
            continue
        clean(products.jvp, v)
        clean(products.vjp, u)
        clean(products.ntk_vp, u)


def finite_prediction(posterior: Any) -> None:
    if posterior is None:
        return
    prediction = posterior.predict(X0)
    assert torch.isfinite(prediction.mean).all() and torch.isfinite(prediction.variance).all()


@FUZZ
@given(
    x=tensors((N, D_IN)),
    y=tensors((N, D_OUT)),
    strategy=st.sampled_from(["dense", "function", "parameter"]),
)
def test_adapt_inputs(x, y, strategy):
    options = {"noise_variance": 0.1, "strategy": strategy, "rank": 4, "max_iter": 50}
    finite_prediction(clean(ntkcore.adapt, MODEL, x, Y0, **options))
    finite_prediction(clean(ntkcore.adapt, MODEL, X0, y, **options))
    posterior = ntkcore.adapt(MODEL, X0, Y0, noise_variance=0.1)
    clean(posterior.predict, x)


OPTION_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(), st.text(max_size=6),
    st.just([1, 2]), st.just(float("nan")), st.just(torch.tensor(0.5)),
)


@FUZZ
@given(
    option=st.sampled_from(
        ["noise_variance", "prior_variance", "mean", "strategy", "tol", "max_iter", "rank",
         "max_rank", "variance_tol", "fisher", "seed", "cache"]
    ),
    value=OPTION_VALUES,
)
def test_adapt_options(option, value):
    options = {"noise_variance": 0.1, "rank": 4, "max_iter": 50, option: value}
    finite_prediction(clean(ntkcore.adapt, MODEL, X0, Y0, **options))
    clean(ntkcore.adapt, value, X0, Y0, noise_variance=0.1)


@FUZZ
@given(
    x=tensors((N, D_IN)),
    v=tensors((P,)),
    likelihood=st.sampled_from(["gaussian", "categorical", "heteroscedastic", "poisson", 3]),
    method=st.sampled_from(["fd", "exact", "autograd", None]),
    option=st.sampled_from(["eps", "central", "kinks", "chunk_size", "scale_floor"]),
    value=OPTION_VALUES,
)
def test_fisher_vp(x, v, likelihood, method, option, value):
    clean(ntkcore.fisher_vp, MODEL, x, v, likelihood=likelihood, method=method)
    clean(ntkcore.fisher_vp, MODEL, X0, v)
    clean(ntkcore.fisher_vp, MODEL, X0, torch.randn(P), **{option: value})
    clean(ntkcore.fisher_vp, AT_X0, x, v)


@FUZZ
@given(model=st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just(nn.Identity())),
       params=st.one_of(st.none(), st.text(max_size=4), st.lists(st.text(max_size=4), max_size=2),
                        st.integers()),
       chunk=st.one_of(st.none(), st.integers(-2, 3), st.floats(), st.text(max_size=2)))
def test_linearization_construction(model, params, chunk):
    clean(Linearization, model)
    clean(Linearization, MODEL, params=params, chunk_size=chunk)


# ----------------------------------------------------------------------------- CSV
NUMBER_TOKENS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(
        ["", " ", "nan", "NaN", "inf", "-Infinity", "1e400", "-1e-400", "1_000", "0x1f", "1,5",
         "1.2.3", "١", "−1", '"3"', '"a,b"', '"', "TRUE", "N/A", "\x00", "\x1b", "\u2028"]
    ),
    st.text(max_size=4),
)


@st.composite
def csv_texts(draw) -> str:
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t", "|", " "]))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    columns = draw(st.integers(1, 5))
    header = [draw(st.sampled_from(["x", "y", "z", "d", "", "x", "a b", '"q"'])) + str(k)
              for k in range(columns)]
    if draw(st.booleans()):
        header[draw(st.integers(0, columns - 1))] = draw(st.text(max_size=3))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        width = columns if draw(st.integers(0, 9)) else draw(st.integers(0, columns + 2))
        rows.append([
            draw(NUMBER_TOKENS) if draw(st.integers(0, 4)) == 0
            else repr(draw(st.floats(-1e3, 1e3, allow_nan=False)))
            for _ in range(width)
        ])
    lines = [delimiter.join(header)] + [delimiter.join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")
    return newline.join(lines) + (newline if draw(st.booleans()) else "")


@st.composite
def csv_options(draw, text: str) -> dict[str, Any]:
    names = [part.strip() for part in text.split("\n", 1)[0].replace(";", ",").split(",")]
    name = st.sampled_from(names + ["missing"]) if names else st.just("missing")
    options: dict[str, Any] = {}
    if draw(st.booleans()):
        options["y_column"] = draw(name)
    if draw(st.booleans()):
        options["domain_column"] = draw(name)
    if draw(st.booleans()):
        options["x_columns"] = draw(st.lists(name, max_size=3))
    if draw(st.booleans()):
        options["kind"] = draw(st.sampled_from(["regression", "classification"]))
    if draw(st.booleans()):
        options["test_fraction"] = draw(st.sampled_from([0.01, 0.5, 0.99, 0.0, 1.5, "x"]))
    if draw(st.booleans()):
        options["max_rows"] = draw(st.sampled_from([1, 3, 10**6, 0]))
    return options


@fuzz(150)
@given(st.data())
def test_from_csv_text(drawn):
    text = drawn.draw(csv_texts())
    options = drawn.draw(csv_options(text))
    encode = drawn.draw(st.sampled_from(["str", "bytes", "utf-16", "stringio"]))
    source = {
        "str": text + ("\n" if "\n" not in text else ""),
        "bytes": text.encode("utf-8", "surrogatepass"),
        "utf-16": text.encode("utf-16", "surrogatepass"),
        "stringio": io.StringIO(text),
    }[encode]
    task = clean(data.from_csv, source, **options)
    if task is not None:
        assert isinstance(task, data.Task)
        for split in task.splits:
            x, y = getattr(task, split)
            assert torch.isfinite(x).all()
    if encode == "stringio":
        source.seek(0)
    clean(data.read_csv_columns, source)


@fuzz(100)
@given(st.binary(max_size=300), st.sampled_from([None, "target"]))
def test_from_csv_bytes(content, second):
    target = content[::-1] if second else None
    clean(data.from_csv, content, target)
    clean(data.read_csv_columns, content)
    clean(data.from_csv, b"a,b,c\n1,2,3\n4,5,7\n" + content)


# ----------------------------------------------------------------------------- model files
def _valid_files() -> dict[str, bytes]:
    buffer = io.BytesIO()
    zoo.save_model(MODEL, buffer, arch="mlp", in_features=D_IN, out_features=D_OUT, width=6,
                   depth=1)
    program = torch.export.export(
        MODEL, (X0,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    exported = io.BytesIO()
    torch.export.save(program, exported)
    return {"safetensors": buffer.getvalue(), "pt2": exported.getvalue()}


@pytest.fixture(scope="module")
def valid_files() -> dict[str, bytes]:
    return _valid_files()


def model_is_clean(model: Any) -> None:
    """An accepted model either runs on a valid batch or fails with a ValueError."""
    if model is not None:
        assert isinstance(model, nn.Module)
        clean(zoo.check_input_shape, model, X0)
        clean(Linearization(model).jvp, X0, torch.ones(sum(p.numel() for p in model.parameters())))


@FUZZ
@given(content=st.binary(max_size=200))
def test_load_model_random_bytes(content):
    model_is_clean(clean(zoo.load_model, content))
    model_is_clean(clean(zoo.load_model, b"PK\x03\x04" + content))
    length = len(content).to_bytes(8, "little")
    model_is_clean(clean(zoo.load_model, length + b"{" + content))


@fuzz(40)
@given(
    which=st.sampled_from(["safetensors", "pt2"]),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                   min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_load_model_damaged_files(valid_files, which, edits, cut):
    blob = bytearray(valid_files[which])
    for where, value in edits:
        blob[int(where * len(blob))] = value
    if cut is not None:
        blob = blob[: int(cut * len(blob))]
    model_is_clean(clean(zoo.load_model, bytes(blob)))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
              st.text(max_size=12)),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:4]):
            found += _paths(value, (*prefix, index))
    return found


@fuzz(40)
@given(st.data())
def test_load_model_program_json_mutations(valid_files, drawn):
    archive = zipfile.ZipFile(io.BytesIO(valid_files["pt2"]))
    program = json.loads(archive.read("archive/models/model.json"))
    paths = _paths(program)
    for _ in range(drawn.draw(st.integers(1, 3))):
        path = drawn.draw(st.sampled_from(paths[1:]))
        value = drawn.draw(JSON_VALUES)
        node = program
        try:  # an earlier mutation may have replaced part of this path
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in archive.infolist():
            content = archive.read(info)
            if info.filename == "archive/models/model.json":
                content = json.dumps(program).encode()
            target.writestr(info.filename, content)
    model_is_clean(clean(zoo.load_model, out.getvalue()))


@FUZZ
@given(
    arch=st.one_of(st.none(), st.sampled_from(zoo.available()), st.text(max_size=5)),
    kwargs=st.dictionaries(
        st.sampled_from(["width", "depth", "in_features", "out_features", "activation", "x"]),
        st.one_of(st.integers(-5, 20), st.text(max_size=4), st.floats(), st.none(),
                  st.lists(st.integers(0, 3), max_size=2)),
        max_size=3,
    ),
)
def test_load_model_architecture_arguments(valid_files, arch, kwargs):
    model_is_clean(clean(zoo.load_model, valid_files["safetensors"], arch, **kwargs))
