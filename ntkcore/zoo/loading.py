"""Your own model, loaded safely: safetensors weights of a zoo architecture, or a torch.export file.

:func:`load_model` accepts exactly two formats, recognised by their **content** (never by the
file name):

(a) **safetensors** weights of a zoo architecture: an 8-byte little-endian header length, a JSON
    header, raw tensor bytes.  The architecture's name and keyword arguments come from the
    header's metadata (``ntkcore_arch``, ``ntkcore_arch_kwargs``, as written by
    :func:`save_model`) or from the caller; every tensor is checked name by name, shape by shape
    and dtype by dtype against ``zoo.create(arch, **kwargs)`` before the weights are copied in.
    The tensors are decoded by the ``safetensors`` library (Rust; no code in the file can run).

(b) a **torch.export ExportedProgram** saved with ``torch.export.save`` (a ``.pt2`` zip archive
    with an ``archive_format`` record reading ``pt2``), returned as an ``nn.Module``
    (``ep.module()`` inside an :class:`ExportedModel`).

Everything else is refused with a ``ValueError`` listing the accepted formats, pickles above
all: no uploaded byte ever reaches ``pickle`` or ``torch.load`` without ``weights_only=True``.

Why a ``.pt2`` file is not simply handed to ``torch.export.load``
------------------------------------------------------------------
``torch.export.load`` (torch 2.13, ``torch/export/__init__.py`` and
``torch/export/pt2_archive/_package.py``) is documented as unsafe for untrusted files, and
reading its source shows why.  Code can run from an archive through

1. ``torch.load(..., weights_only=False)`` of weights or constants flagged ``use_pickle`` and of
   legacy ``.pt`` weight/constant files; ``pickle.loads`` of "opaque" constants;
   ``torch._C._pickle_load_obj`` of TorchScript custom objects;
2. the sample inputs: ``deserialize_torch_artifact`` tries ``torch.load(weights_only=True)`` and,
   on *any* exception, retries with ``weights_only=False`` - a crafted pickle that fails the
   safe load is then unpickled unrestricted;
3. AOTInductor entries (``data/aotinductor/...``): compiled shared libraries that are loaded;
4. the graph JSON: node targets are resolved by ``getattr`` chains on ``torch``, ``math`` and
   ``operator`` and any callable found is accepted (``torch.os.system``, ``torch.ops.load_library``
   ...), symbolic expressions are parsed with ``sympy.sympify`` (which ``eval``\\ s its string),
   and ``guards_code``, ``forward_arg_names`` and stack traces are pasted into Python source that
   ``ep.module()`` compiles with ``exec``;
5. the legacy pre-2.8 zip layout, which deserializes its state dict through the same
   ``weights_only=False`` fallback.

So the archive is first read by Python's ``zipfile`` (bounded sizes, no extraction to disk) and
validated strictly: only the records of a plain ``torch.export.save`` archive (one program named
``model``; weights and tensor constants stored raw, never pickled; no AOTInductor, no extra or
legacy files); the program JSON checked field by field against the export schema
(``torch._export.serde.schema``: every value of the declared JSON type, no unknown keys) with
allowlists - node targets restricted to a list of pure ATen tensor operators and Python
symbolic-shape arithmetic, symbolic expressions to a small grammar (``Symbol('s0', ...)``,
integers, ``+ - * /`` and a few sympy functions; no attribute access, no strings other than
symbol names, no ``**``), every other string to identifier characters, a single tensor input
and a single tensor output with the canonical pytree specs, no custom objects, no subgraphs,
no buffer mutations; node metadata (stack traces), module metadata and ``guards_code`` are
cleared.  The sample inputs are read with ``torch.load(weights_only=True)`` and written again by
us.  A fresh archive is then written from the validated records only
(``torch.export.pt2_archive.PT2ArchiveWriter``), so ``torch.export.load`` reads exactly the
bytes that were checked (no zip-parser differential between Python's ``zipfile`` and PyTorch's
reader), and after loading every graph node is audited again against the same operator allowlist
before ``ep.module()`` is built.  Integer arguments of the graph are bounded as a mitigation of
memory exhaustion (see ``_MAX_INT_ARG``); the size of a program's intermediate tensors is not
otherwise bounded.

:func:`save_model` writes format (a) for a zoo model; :func:`check_input_shape` runs one sample
of a task through a model before any computation and names both shapes if they disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import keyword
import math
import operator
import os
import re
import types
import typing
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ntkcore.data._source import Upload, read_upload
from ntkcore.zoo.cache import _atomic_write, canonical_json
from ntkcore.zoo.registry import available, spec

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "ExportedModel",
    "check_input_shape",
    "detect_format",
    "load_model",
    "save_model",
]

#: Default size limit of a model file.
DEFAULT_MAX_BYTES = 200 * 2**20
#: Metadata keys of the safetensors files written by :func:`save_model`.
ARCH_KEY, KWARGS_KEY, FORMAT_KEY = "ntkcore_arch", "ntkcore_arch_kwargs", "ntkcore_format"
ACCEPTED_FORMATS = (
    "(a) safetensors weights of a zoo architecture (ntkcore.zoo.save_model writes them; the "
    "architecture comes from the file's metadata or the arch= argument), "
    "(b) a torch.export program saved with torch.export.save (.pt2)"
)
_REFUSAL_TAIL = (
    f"Accepted model formats: {ACCEPTED_FORMATS}. Pickle-based files (torch.save checkpoints, "
    ".pt/.pth/.pkl/.ckpt, TorchScript) are refused: loading them can run arbitrary code."
)

# Bounds on what a file may ask for (a hostile header must not make us build a huge network).
_MAX_HEADER_BYTES = 16 * 2**20
_MAX_ARCH_INT = 10_000
_MAX_JSON_BYTES = 64 * 2**20
_MAX_RECORDS = 100_000
_MAX_NODES = 200_000
_MAX_STRING = 256
_MAX_EXPR = 512
#: Largest integer argument of a graph node, and largest product of an integer list (a shape):
#: about 1 GiB of float32.  A mitigation of memory exhaustion by ``full``/``expand``-like ops.
_MAX_INT_ARG = 2**31 - 1
_MAX_INT_PRODUCT = 2**28


# ============================================================================= format detection
def _zip_names(data: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()[:_MAX_RECORDS]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return None


def _safetensors_header(data: bytes) -> dict[str, Any] | None:
    """The JSON header if ``data`` is shaped like a safetensors file, else ``None``."""
    if len(data) < 10:
        return None
    length = int.from_bytes(data[:8], "little")
    if length < 2 or length > min(len(data) - 8, _MAX_HEADER_BYTES) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def detect_format(data: bytes) -> str:
    """What ``data`` is, by content: ``"safetensors"``, ``"pt2"`` or a description of the refusal.

    Parameters
    ----------
    data : bytes
        The file's content.

    Returns
    -------
    str
        ``"safetensors"`` or ``"pt2"`` for the accepted formats; otherwise a phrase naming what
        the content looks like (used in the refusal message).
    """
    if _safetensors_header(data) is not None:
        return "safetensors"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        names = _zip_names(data)
        if names is None:
            return "a damaged zip archive"
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "pt2"
        if any(n.endswith("data.pkl") for n in names):
            if any("/code/" in n or n.endswith("constants.pkl") for n in names):
                return "a TorchScript archive (it contains pickles)"
            return "a torch.save checkpoint (a zip archive holding a pickle, data.pkl)"
        if any(n.endswith(".pkl") for n in names):
            return "a zip archive holding pickles"
        return "a zip archive that is not a torch.export program"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        if data[2:3] == b"\x8a":
            return "a legacy torch.save checkpoint (a pickle)"
        return "a Python pickle"
    if data[:1] in (b"(", b"c", b"]", b"}") and data.rstrip().endswith(b"."):
        return "a Python pickle (protocol 0/1)"
    if data[:4] == b"\x89HDF":
        return "an HDF5 file (Keras?)"
    if data[:1] == b"\x08" and b"onnx" in data[:64].lower():
        return "an ONNX model"
    if not data:
        return "an empty file"
    if data[8:9] == b"{" and len(data) >= 8:
        return "a damaged safetensors file (its header length or JSON is invalid)"
    return "unrecognised content"


def _refuse(name: str, what: str) -> ValueError:
    return ValueError(f"{name}: {what} is not accepted. {_REFUSAL_TAIL}")


# ============================================================================= public entry
def load_model(
    file: Any,
    arch: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    **kwargs: Any,
) -> nn.Module:
    """Load an uploaded model without ever unpickling it.

    Parameters
    ----------
    file : path-like, bytes or file-like
        A path, the file's bytes, or an object with ``read()`` (an open file, ``io.BytesIO``,
        Streamlit's ``UploadedFile``).  The format is recognised from the content.
    arch : str, optional
        Zoo architecture (:func:`ntkcore.zoo.available`) of safetensors weights; default the
        file's ``ntkcore_arch`` metadata.  Must agree with the metadata when both are given.
        Not allowed for a ``.pt2`` program (the program carries its own graph).
    max_bytes : int
        Size limit, checked before the content is read.
    **kwargs
        Constructor keywords of ``arch`` (:func:`ntkcore.zoo.info` lists them); merged over the
        file's ``ntkcore_arch_kwargs`` metadata, which they must not contradict.

    Returns
    -------
    nn.Module
        The network in eval mode on the CPU: a zoo module (float64 if every floating tensor of
        the file is float64, else float32), or an :class:`ExportedModel`.  Either has
        ``input_shape`` and ``output_dim`` attributes; pass it to :func:`check_input_shape`
        with the target data before adapting.

    Raises
    ------
    ValueError
        For a refused format (the message lists the accepted ones), a file over ``max_bytes``,
        an unknown architecture or keyword, missing, unexpected, mis-shaped, non-floating or
        non-finite tensors, or a ``.pt2`` program that fails validation (the message says
        which record, node or field).
    """
    upload = read_upload(file, max_bytes=max_bytes, what="model file")
    kind = detect_format(upload.data)
    if kind == "safetensors":
        return _load_safetensors(upload, arch, kwargs)
    if kind == "pt2":
        if arch is not None or kwargs:
            raise ValueError(
                f"{upload.name}: a torch.export program carries its own graph; do not pass "
                f"arch or architecture keywords (got arch={arch!r}, {sorted(kwargs)})"
            )
        return _load_pt2(upload)
    raise _refuse(upload.name, kind)


# ============================================================================= (a) safetensors
def _check_arch_kwargs(name: str, arch: str, kwargs: Mapping[str, Any], source: str) -> None:
    def walk(value: Any, key: str) -> None:
        if isinstance(value, bool) or value is None or isinstance(value, str | float):
            return
        if isinstance(value, int):
            if abs(value) > _MAX_ARCH_INT:
                raise ValueError(
                    f"{name}: architecture keyword {key}={value} ({source}) exceeds the limit "
                    f"of {_MAX_ARCH_INT:,} for integers"
                )
            return
        if isinstance(value, list | tuple) and len(value) <= 64:
            for item in value:
                walk(item, key)
            return
        raise ValueError(
            f"{name}: architecture keyword {key}={value!r} ({source}) must be a number, string, "
            f"bool or a short list of them"
        )

    for key, value in kwargs.items():
        walk(value, key)


def _resolve_arch(
    upload: Upload, metadata: Mapping[str, str], arch: str | None, kwargs: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    name = upload.name
    file_arch = metadata.get(ARCH_KEY)
    file_kwargs: dict[str, Any] = {}
    if KWARGS_KEY in metadata:
        try:
            file_kwargs = json.loads(metadata[KWARGS_KEY])
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"{name}: metadata {KWARGS_KEY} is not valid JSON") from None
        if not isinstance(file_kwargs, dict):
            raise ValueError(f"{name}: metadata {KWARGS_KEY} must be a JSON object")
    if arch is None:
        if file_arch is None:
            raise ValueError(
                f"{name}: the safetensors file does not name its architecture (no "
                f"{ARCH_KEY!r} metadata); pass arch= (one of {available()}) and its keywords"
            )
        arch = file_arch
    elif file_arch is not None and file_arch != arch:
        raise ValueError(
            f"{name}: arch={arch!r} contradicts the file's metadata {ARCH_KEY}={file_arch!r}"
        )
    if not isinstance(arch, str) or arch not in available():
        raise ValueError(f"{name}: unknown architecture {arch!r}; available: {available()}")
    conflicts = {
        k: (v, file_kwargs[k])
        for k, v in kwargs.items()
        if k in file_kwargs and file_kwargs[k] != v
    }
    if conflicts:
        shown = ", ".join(f"{k}={a!r} (file: {b!r})" for k, (a, b) in sorted(conflicts.items()))
        raise ValueError(f"{name}: keyword(s) contradict the file's metadata: {shown}")
    _check_arch_kwargs(name, arch, file_kwargs, "from the file's metadata")
    _check_arch_kwargs(name, arch, kwargs, "given")
    merged = {**file_kwargs, **kwargs}
    try:
        resolved = spec(arch).resolve(merged)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return arch, resolved


def _build(name: str, arch: str, kwargs: Mapping[str, Any], device: str) -> nn.Module:
    s = spec(arch)
    try:
        with torch.device(device):
            return s.cls(**kwargs, **s.fixed)
    except ValueError as err:
        raise ValueError(f"{name}: cannot build {arch!r} with {dict(kwargs)}: {err}") from None
    except (TypeError, RuntimeError, OverflowError, IndexError, KeyError) as err:
        raise ValueError(
            f"{name}: cannot build {arch!r} with {dict(kwargs)}: {type(err).__name__}: {err}"
        ) from None


def _load_safetensors(upload: Upload, arch: str | None, kwargs: Mapping[str, Any]) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    name = upload.name
    header = _safetensors_header(upload.data)
    assert header is not None
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{name}: safetensors __metadata__ must map strings to strings")
    arch, resolved = _resolve_arch(upload, metadata, arch, kwargs)
    # Reference names, shapes and dtypes from a model on the meta device (nothing allocated).
    reference = _build(name, arch, resolved, "meta").state_dict()
    declared = {k: v for k, v in header.items() if k != "__metadata__"}
    _compare_declared(name, arch, declared, reference)
    try:
        tensors = load_safetensors(upload.data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as err:
        raise ValueError(f"{name}: invalid safetensors data: {err}") from None
    float_dtypes = set()
    for key, ref in reference.items():
        t = tensors[key]
        if tuple(t.shape) != tuple(ref.shape):  # pragma: no cover - the header was checked
            raise ValueError(f"{name}: tensor {key!r} has shape {tuple(t.shape)}")
        if ref.is_floating_point():
            if not t.is_floating_point():
                raise ValueError(
                    f"{name}: tensor {key!r} has dtype {t.dtype}; {arch} weights must be "
                    f"floating point"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: tensor {key!r} contains NaN or infinite values")
            float_dtypes.add(t.dtype)
        elif t.dtype != ref.dtype:
            raise ValueError(
                f"{name}: tensor {key!r} has dtype {t.dtype}, {arch} expects {ref.dtype}"
            )
    model = _build(name, arch, resolved, "cpu")
    dtype = torch.float64 if float_dtypes == {torch.float64} else torch.float32
    model.to(dtype)
    state = {
        k: tensors[k].to(dtype) if ref.is_floating_point() else tensors[k]
        for k, ref in reference.items()
    }
    model.load_state_dict(state, strict=True)
    return model.eval()


_SAFETENSORS_FLOATS = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}


def _compare_declared(
    name: str, arch: str, declared: Mapping[str, Any], reference: Mapping[str, Tensor]
) -> None:
    """Names and shapes of the header against the architecture's state dict."""
    missing = sorted(set(reference) - set(declared))
    unexpected = sorted(set(declared) - set(reference))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s) {unexpected[:6]}")
        raise ValueError(
            f"{name}: the tensors do not match architecture {arch!r}: " + "; ".join(parts)
        )
    for key, ref in reference.items():
        entry = declared[key]
        if not isinstance(entry, dict):
            raise ValueError(f"{name}: header entry {key!r} is not an object")
        shape = entry.get("shape")
        if not isinstance(shape, list) or tuple(shape) != tuple(ref.shape):
            raise ValueError(
                f"{name}: tensor {key!r} has shape {shape}, architecture {arch!r} expects "
                f"{list(ref.shape)}"
            )
        dtype = entry.get("dtype")
        if ref.is_floating_point() and dtype not in _SAFETENSORS_FLOATS:
            raise ValueError(
                f"{name}: tensor {key!r} has dtype {dtype}; {arch} weights must be floating "
                f"point ({sorted(_SAFETENSORS_FLOATS)})"
            )


def save_model(model: nn.Module, file: Any, *, arch: str, **kwargs: Any) -> None:
    """Write a zoo model as safetensors with its architecture in the metadata (format (a)).

    Parameters
    ----------
    model : nn.Module
        A network built by ``zoo.create(arch, **kwargs)`` (trained or not).
    file : path-like or binary file object
        Destination; a path is written atomically (temporary file, then rename).
    arch : str
        Its zoo architecture name.
    **kwargs
        The constructor keywords it was built with (recorded, fully resolved, as JSON).

    Raises
    ------
    ValueError
        If ``arch``/``kwargs`` are unknown or do not describe ``model`` (names and shapes of its
        state dict are compared with the architecture's).
    """
    from safetensors.torch import save as save_safetensors

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(arch, str) or arch not in available():
        raise ValueError(f"unknown architecture {arch!r}; available: {available()}")
    resolved = spec(arch).resolve(kwargs)
    reference = _build("save_model", arch, resolved, "meta").state_dict()
    state = model.state_dict()
    declared = {
        k: {"shape": list(v.shape), "dtype": "F32" if v.is_floating_point() else "I64"}
        for k, v in state.items()
    }
    _compare_declared("save_model", arch, declared, reference)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    blob = save_safetensors(
        tensors,
        metadata={FORMAT_KEY: "1", ARCH_KEY: arch, KWARGS_KEY: canonical_json(resolved)},
    )
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, blob)
    elif callable(getattr(file, "write", None)):
        file.write(blob)
    else:
        raise ValueError(f"file must be a path or a binary file object, got {type(file).__name__}")


# ============================================================================= (b) torch.export
class ExportedModel(nn.Module):
    """An ``nn.Module`` around a validated torch.export program (``ep.module()``).

    Its parameters are the program's (``program.<name>``), so :class:`ntkcore.Linearization`
    differentiates it like any module.  The program's own input checks (shape guards raise
    ``AssertionError``) surface as ``ValueError``.

    Attributes
    ----------
    input_shape : tuple of int
        Shape of one input (the sample input's, without the batch dimension).
    output_dim : int
        Outputs per input.
    """

    def __init__(self, program: nn.Module, input_shape: tuple[int, ...], output_dim: int):
        super().__init__()
        self.program = program
        for parameter in program.parameters():  # linearized in every parameter by default
            if parameter.is_floating_point():
                parameter.requires_grad_(True)
        self.input_shape = tuple(input_shape)
        self.output_dim = int(output_dim)

    def train(self, mode: bool = True) -> ExportedModel:
        """Set the ``training`` flag only: the program was exported in eval mode (dropout off,
        batch norm on running statistics; validation refuses training-mode programs) and
        ``ep.module()`` does not support ``train()``."""
        for module in self.modules():
            module.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        try:
            return self.program(x)
        except AssertionError as err:
            raise ValueError(
                f"the exported program rejected an input of shape {tuple(x.shape)} (it expects "
                f"(n, {', '.join(map(str, self.input_shape))})): {err}"
            ) from None


class _Invalid(Exception):
    """Internal: the archive failed validation (message says where)."""


_IDENT = re.compile(rf"[A-Za-z0-9_.]{{0,{_MAX_STRING}}}")
_STRING_ARG = re.compile(r"[A-Za-z0-9_.\- ]{0,64}")
_VERSION = re.compile(r"[A-Za-z0-9_.+\-<=]{1,40}")
# Export names its shape symbols s0, u3, zuf1, ...: letters then digits (never a sympy function).
_SYMBOL = re.compile(r"[a-z]{1,3}\d{1,9}")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_OP_TARGET = re.compile(rf"torch\.ops\.(aten|prims)\.({_NAME})\.({_NAME})")
_EXPR_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|'[A-Za-z_][A-Za-z0-9_]*'|\d+|[(),=+\-*/%<>]")
_EXPR_NAMES = frozenset(
    {
        "Symbol", "Integer", "Rational", "Add", "Mul", "Max", "Min", "Abs", "Eq", "Ne", "Lt",
        "Le", "Gt", "Ge", "And", "Or", "Not", "StrictLessThan", "StrictGreaterThan",
        "LessThan", "GreaterThan", "Equality", "Unequality", "BooleanTrue", "BooleanFalse",
        "true", "false", "True", "False", "positive", "negative", "nonnegative", "nonpositive",
        "integer", "real", "finite", "infinite", "zero", "nonzero", "commutative",
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "TruncToFloat", "TruncToInt", "RoundToInt", "ToFloat",
        "Identity", "IntTrueDiv", "FloatTrueDiv", "oo", "zoo", "nan", "int_oo",
    }
)
#: Python symbolic-shape operators a graph may call (serialized name -> function).
_SYM_TARGETS: dict[str, Any] = {
    **{
        f"_operator.{n}": getattr(operator, n)
        for n in (
            "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "eq", "ne",
            "lt", "le", "gt", "ge", "and_", "or_",
        )
    },
    "torch.sym_max": torch.sym_max,
    "torch.sym_min": torch.sym_min,
    "torch.sym_not": torch.sym_not,
    "torch.sym_float": torch.sym_float,
    "torch.sym_int": torch.sym_int,
    "math.trunc": math.trunc,
}
#: ATen operators a graph may call: pure tensor arithmetic of standard networks.  Left out on
#: purpose: anything reading files (``from_file``), exposing uninitialized or foreign memory
#: (``empty*``, ``new_empty*``, ``resize_``, ``set_``, ``as_strided*``), storage and stream
#: operations, random number generation and in-place updates of inputs.
_ATEN_OPS = frozenset(
    """
    linear addmm mm bmm matmul baddbmm addmv mv dot einsum conv1d conv2d conv3d convolution
    _convolution conv_transpose1d conv_transpose2d conv_transpose3d batch_norm
    _native_batch_norm_legit_no_training native_batch_norm layer_norm native_layer_norm
    group_norm native_group_norm instance_norm rms_norm _batch_norm_no_update
    relu relu_ relu6 gelu tanh sigmoid silu elu selu celu leaky_relu softplus softsign
    hardtanh hardsigmoid hardswish mish logsigmoid prelu _prelu_kernel threshold glu
    softmax _softmax log_softmax _log_softmax
    max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
    max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d adaptive_max_pool1d
    adaptive_max_pool2d upsample_nearest2d upsample_bilinear2d pixel_shuffle
    mean sum prod amax amin max min argmax argmin var std logsumexp norm linalg_vector_norm
    cumsum
    add sub rsub mul div neg reciprocal exp expm1 log log1p log2 sqrt rsqrt pow square abs
    sign clamp clamp_min clamp_max clip maximum minimum where sin cos tan asin acos atan
    atan2 sinh cosh erf erfc floor ceil round trunc frac fmod remainder lerp addcmul
    addcdiv eq ne lt le gt ge logical_not logical_and logical_or bitwise_not isnan isinf
    view view_as reshape _unsafe_view flatten unflatten permute transpose t unsqueeze
    squeeze expand expand_as cat concat stack hstack vstack split split_with_sizes chunk
    unbind slice select narrow index_select gather index take_along_dim repeat tile roll
    flip contiguous clone alias detach lift_fresh_copy _to_copy to type_as
    embedding dropout native_dropout feature_dropout alpha_dropout one_hot pad
    constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d
    zeros zeros_like ones ones_like full full_like scalar_tensor masked_fill
    sym_size sym_numel sym_stride _assert_scalar _assert_tensor_metadata
    sym_constrain_range_for_size sym_constrain_range _functional_sym_constrain_range
    """.split()
)
_TRAINING_OPS = frozenset(
    {"dropout", "native_dropout", "feature_dropout", "alpha_dropout", "batch_norm",
     "native_batch_norm", "instance_norm"}
)
_PRIMS_OPS = frozenset({"convert_element_type", "broadcast_in_dim", "sum", "var"})


def _allowed_target(target: str, where: str) -> None:
    if target in _SYM_TARGETS:
        return
    match = _OP_TARGET.fullmatch(target)
    if match is None:
        raise _Invalid(f"{where}: operator {target[:80]!r} is not an allowed ATen operator")
    namespace, op = match.group(1), match.group(2)
    if namespace == "aten" and op in _ATEN_OPS:
        return
    if namespace == "prims" and op in _PRIMS_OPS:
        return
    raise _Invalid(
        f"{where}: operator {namespace}.{op} is not in the allowlist of pure tensor operators "
        f"accepted from uploaded programs"
    )


def _check_expr(text: str, where: str) -> None:
    """Symbolic-shape expressions: a tiny grammar that ``sympy.sympify`` can evaluate safely."""
    if len(text) > _MAX_EXPR:
        raise _Invalid(f"{where}: symbolic expression longer than {_MAX_EXPR} characters")
    position = 0
    previous = ""
    for match in _EXPR_TOKEN.finditer(text):
        if match.start() != position:
            break
        token = match.group()
        position = match.end()
        if token.isspace():
            continue
        if token[0].isalpha() or token[0] == "_":
            if token not in _EXPR_NAMES and not _SYMBOL.fullmatch(token):
                raise _Invalid(f"{where}: name {token!r} is not allowed in a symbolic expression")
        elif token.isdigit() and len(token) > 18:
            raise _Invalid(f"{where}: integer literal too long in a symbolic expression")
        elif token == "*" and previous == "*":
            raise _Invalid(f"{where}: '**' is not allowed in a symbolic expression")
        previous = token
    if position != len(text):
        raise _Invalid(f"{where}: symbolic expression {text[:60]!r} has disallowed characters")


def _canonical_specs() -> tuple[Any, Any]:
    from torch.utils import _pytree as pytree

    x = torch.zeros(1)
    in_spec = pytree.treespec_dumps(pytree.tree_flatten(((x,), {}))[1])
    out_spec = pytree.treespec_dumps(pytree.tree_flatten(x)[1])
    return json.loads(in_spec), json.loads(out_spec)


_ARGUMENT_DENIED = {
    "as_graph": "subgraphs (control flow) are not accepted",
    "as_custom_obj": "custom objects are not accepted",
    "as_operator": "operators passed as arguments are not accepted",
    "as_string_to_argument": "string-keyed argument maps are not accepted",
    "as_nested_tensors": "nested tensor lists are not accepted",
}
_INPUT_ALLOWED = {"user_input", "parameter", "buffer", "tensor_constant"}
_OUTPUT_ALLOWED = {"user_output"}


class _SchemaChecker:
    """Checks a program's JSON against the export schema and the allowlists, in place."""

    def __init__(self) -> None:
        from torch._export.serde import schema, union

        self.schema = schema
        self.union_base = union._Union
        self.in_spec, self.out_spec = _canonical_specs()
        self.nodes = 0
        self.graphs = 0

    def hints(self, cls: type) -> dict[str, Any]:
        return typing.get_type_hints(cls, globalns=vars(self.schema))

    def check(self, cls: Any, data: Any, where: str, field_name: str = "") -> None:
        origin = typing.get_origin(cls)
        if origin is typing.Annotated:
            return self.check(typing.get_args(cls)[0], data, where, field_name)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(cls) if a is not type(None)]
            if data is None:
                return None
            if len(args) != 1:  # pragma: no cover - not in the schema
                raise _Invalid(f"{where}: unsupported union type")
            return self.check(args[0], data, where, field_name)
        if isinstance(cls, str):
            return self.check(getattr(self.schema, cls), data, where, field_name)
        if isinstance(cls, typing.ForwardRef):
            return self.check(getattr(self.schema, cls.__forward_arg__), data, where, field_name)
        if origin is list:
            if not isinstance(data, list):
                raise _Invalid(f"{where}: expected a list, got {type(data).__name__}")
            (item,) = typing.get_args(cls)
            for k, value in enumerate(data):
                self.check(item, value, f"{where}[{k}]", field_name)
            return None
        if origin is dict:
            if not isinstance(data, dict):
                raise _Invalid(f"{where}: expected an object, got {type(data).__name__}")
            _, value_type = typing.get_args(cls)
            for key, value in data.items():
                self.string(key, f"{where} key", "key")
                self.check(value_type, value, f"{where}[{key!r}]", field_name)
            return None
        if isinstance(cls, type) and issubclass(cls, enum.IntEnum):
            if not isinstance(data, int) or isinstance(data, bool):
                raise _Invalid(f"{where}: expected an enum integer, got {data!r}"[:200])
            if data not in {m.value for m in cls}:
                raise _Invalid(f"{where}: {data} is not a valid {cls.__name__}")
            return None
        if isinstance(cls, type) and issubclass(cls, self.union_base):
            return self.union(cls, data, where)
        if dataclasses.is_dataclass(cls):
            return self.dataclass(cls, data, where)
        if cls is bool:
            if not isinstance(data, bool):
                raise _Invalid(f"{where}: expected a bool, got {data!r}"[:200])
            return None
        if cls is int:
            if not isinstance(data, int) or isinstance(data, bool) or abs(data) >= 2**63:
                raise _Invalid(f"{where}: expected a 64-bit integer, got {data!r}"[:200])
            return None
        if cls is float:
            if not isinstance(data, int | float) or isinstance(data, bool):
                raise _Invalid(f"{where}: expected a number, got {data!r}"[:200])
            return None
        if cls is str:
            if not isinstance(data, str):
                raise _Invalid(f"{where}: expected a string, got {type(data).__name__}")
            return self.string(data, where, field_name)
        raise _Invalid(f"{where}: unsupported schema type {cls!r}")  # pragma: no cover

    def union(self, cls: type, data: Any, where: str) -> None:
        if not isinstance(data, dict) or len(data) != 1:
            raise _Invalid(f"{where}: expected a one-key object for {cls.__name__}")
        (tag, value), = data.items()
        hints = self.hints(cls)
        if tag not in hints:
            raise _Invalid(f"{where}: {tag!r} is not a {cls.__name__}")
        name = cls.__name__
        if name == "Argument" and tag in _ARGUMENT_DENIED:
            raise _Invalid(f"{where}: {_ARGUMENT_DENIED[tag]}")
        if name == "InputSpec" and tag not in _INPUT_ALLOWED:
            raise _Invalid(f"{where}: program inputs of kind {tag!r} are not accepted")
        if name == "OutputSpec" and tag not in _OUTPUT_ALLOWED:
            hint = " (export the model in eval mode)" if "mutation" in tag else ""
            raise _Invalid(f"{where}: program outputs of kind {tag!r} are not accepted{hint}")
        self.check(hints[tag], value, f"{where}.{tag}", tag)
        if name == "Argument":
            self.bound_ints(tag, value, where)

    def bound_ints(self, tag: str, value: Any, where: str) -> None:
        if tag == "as_int" and abs(value) > _MAX_INT_ARG:
            raise _Invalid(f"{where}: integer argument {value} is too large")
        if tag in ("as_ints", "as_sym_ints"):
            product = 1
            for item in value:
                number = item if isinstance(item, int) else item.get("as_int")
                if isinstance(number, int) and number != -1:
                    product *= max(1, abs(number))
            if product > _MAX_INT_PRODUCT:
                raise _Invalid(f"{where}: shape argument with {product:,} elements is too large")

    def dataclass(self, cls: type, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise _Invalid(f"{where}: expected an object for {cls.__name__}")
        hints = self.hints(cls)
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise _Invalid(f"{where}: unknown field(s) {unknown[:5]} in {cls.__name__}")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        absent = [f for f in required if f not in data]
        if absent:
            raise _Invalid(f"{where}: missing field(s) {absent[:5]} of {cls.__name__}")
        name = cls.__name__
        if name == "Node":
            self.nodes += 1
            if self.nodes > _MAX_NODES:
                raise _Invalid(f"more than {_MAX_NODES:,} graph nodes")
            target = data.get("target")
            if not isinstance(target, str):
                raise _Invalid(f"{where}: node target must be a string")
            _allowed_target(target, where)
            self.training_flags(target, data.get("inputs"), where)
        if name == "Graph":
            self.graphs += 1
            if self.graphs > 1:  # pragma: no cover - subgraphs are refused as arguments
                raise _Invalid(f"{where}: nested graphs are not accepted")
            if data.get("custom_obj_values"):
                raise _Invalid(f"{where}: custom objects are not accepted")
        if name == "GraphModule" and data.get("treespec_namedtuple_fields"):
            raise _Invalid(f"{where}: named-tuple pytree types are not accepted")
        if name == "ModuleCallSignature":
            self.signature(data, where)
        for field_name, value in data.items():
            self.check(hints[field_name], value, f"{where}.{field_name}", field_name)

    @staticmethod
    def training_flags(target: str, inputs: Any, where: str) -> None:
        """Dropout and batch norm must have been exported in eval mode."""
        op = target.split(".")[-2] if target.count(".") >= 3 else ""
        if op not in _TRAINING_OPS or not isinstance(inputs, list):
            return
        for item in inputs:
            if (
                isinstance(item, dict)
                and item.get("name") in ("train", "training")
                and item.get("arg") == {"as_bool": True}
            ):
                raise _Invalid(
                    f"{where}: {op} runs in training mode; call model.eval() before "
                    f"torch.export.export"
                )

    def signature(self, data: dict, where: str) -> None:
        for key, expected in (("in_spec", self.in_spec), ("out_spec", self.out_spec)):
            text = data.get(key)
            try:
                parsed = json.loads(text) if isinstance(text, str) else None
            except (json.JSONDecodeError, RecursionError):
                parsed = None
            if parsed != expected:
                raise _Invalid(
                    f"{where}.{key}: the program must take one tensor argument and return one "
                    f"tensor"
                )
        names = data.get("forward_arg_names")
        if names is not None:
            if not isinstance(names, list) or len(names) != 1:
                raise _Invalid(f"{where}.forward_arg_names: expected one argument name")
            name = names[0]
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise _Invalid(f"{where}.forward_arg_names: {str(name)[:40]!r} is not a name")

    def string(self, value: str, where: str, field_name: str) -> None:
        if field_name == "target" or field_name in ("in_spec", "out_spec"):
            return  # checked by dataclass()/signature()
        if field_name == "expr_str":
            return _check_expr(value, where)
        if field_name in ("as_string", "as_strings"):
            pattern = _STRING_ARG
        elif field_name == "torch_version":
            pattern = _VERSION
        else:
            pattern = _IDENT
        if not pattern.fullmatch(value):
            raise _Invalid(f"{where}: string {value[:60]!r} has characters that are not allowed")
        return None


def _sanitize_program(raw: bytes) -> bytes:
    """Validate the program JSON (module docstring) and return the cleaned JSON."""
    from torch._export.serde import schema

    if len(raw) > _MAX_JSON_BYTES:
        raise _Invalid(f"the program JSON exceeds {_MAX_JSON_BYTES:,} bytes")
    try:
        program = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise _Invalid(f"the program JSON is invalid: {type(err).__name__}") from None
    if not isinstance(program, dict):
        raise _Invalid("the program JSON is not an object")
    graph_module = program.get("graph_module")
    if not isinstance(graph_module, dict) or not isinstance(graph_module.get("graph"), dict):
        raise _Invalid("the program has no graph")
    nodes = graph_module["graph"].get("nodes")
    if not isinstance(nodes, list):
        raise _Invalid("the program graph has no node list")
    for node in nodes:  # stack traces and other free text are pasted into generated code
        if isinstance(node, dict):
            node["metadata"] = {}
    graph_module["metadata"] = {}
    program["guards_code"] = []
    version = program.get("schema_version")
    if not isinstance(version, dict) or version.get("major") != schema.SCHEMA_VERSION[0]:
        raise _Invalid(
            f"schema version {version!r} does not match this PyTorch's "
            f"{schema.SCHEMA_VERSION[0]}.x; export the model with torch {torch.__version__}"
        )
    checker = _SchemaChecker()
    checker.check(schema.ExportedProgram, program, "program")
    signature = graph_module["signature"]
    users_in = [s for s in signature["input_specs"] if "user_input" in s]
    users_out = [s for s in signature["output_specs"] if "user_output" in s]
    if len(users_in) != 1 or len(users_out) != 1:
        raise _Invalid("the program must take one tensor input and return one tensor")
    if "as_tensor" not in users_in[0]["user_input"]["arg"]:
        raise _Invalid("the program's input must be a tensor")
    return json.dumps(program, allow_nan=True).encode("utf-8")


def _span(meta: Mapping[str, Any]) -> tuple[int, torch.dtype]:
    """Elements a tensor view reaches in its storage, and its dtype."""
    from torch._export.serde.serialize import deserialize_scalar_type

    sizes = [s.get("as_int") for s in meta["sizes"]]
    strides = [s.get("as_int") for s in meta["strides"]]
    offset = meta["storage_offset"].get("as_int")
    if not all(isinstance(v, int) and v >= 0 for v in [*sizes, *strides, offset]):
        raise _Invalid("stored tensors must have static, non-negative sizes and strides")
    if meta["layout"] != 7:  # Layout.Strided
        raise _Invalid("stored tensors must be dense (strided layout)")
    if meta["device"].get("type") != "cpu":
        raise _Invalid(
            "stored tensors must be on the CPU: move the model with .cpu() before torch.export"
        )
    dtype = deserialize_scalar_type(meta["dtype"])
    if any(s == 0 for s in sizes):
        return 0, dtype
    return offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True)) + 1, dtype


def _check_payloads(
    config_raw: bytes, records: Mapping[str, bytes], folder: str, prefix: str, what: str
) -> None:
    """Weights/constants config: raw tensors only, each within its record."""
    from torch._export.serde import schema

    try:
        config = json.loads(config_raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _Invalid(f"the {what} configuration is not valid JSON") from None
    checker = _SchemaChecker()
    checker.check(schema.PayloadConfig, config, f"{what} configuration")
    for fqn, entry in config["config"].items():
        where = f"{what} {fqn!r}"
        if entry["use_pickle"]:
            raise _Invalid(f"{where} is stored as a pickle, which is refused")
        path_name = entry["path_name"]
        if not re.fullmatch(re.escape(prefix) + r"\d{1,9}", path_name):
            raise _Invalid(f"{where}: unexpected record name {path_name[:60]!r}")
        record = f"{folder}{path_name}"
        if record not in records:
            raise _Invalid(f"{where}: record {record} is missing")
        if entry["tensor_meta"] is None:
            raise _Invalid(f"{where} has no tensor metadata")
        span, dtype = _span(entry["tensor_meta"])
        if dtype.is_complex or dtype not in _STORED_DTYPES:
            raise _Invalid(f"{where} has unsupported dtype {dtype}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(records[record]) % itemsize or span * itemsize > len(records[record]):
            raise _Invalid(f"{where} does not fit in its record ({len(records[record])} bytes)")


_STORED_DTYPES = {
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.uint8,
    torch.int16, torch.int32, torch.int64, torch.bool,
}


def _read_records(upload: Upload) -> tuple[str, dict[str, bytes]]:
    """Every record of the zip, bounded in count and size; the common root folder."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise _Invalid(f"damaged zip archive ({err})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > _MAX_RECORDS:
            raise _Invalid(f"more than {_MAX_RECORDS:,} records")
        total = sum(i.file_size for i in infos)
        if total > max(len(upload.data) * 4, 1 << 20):
            raise _Invalid("the archive expands to far more than its size (zip bomb?)")
        roots = {i.filename.split("/", 1)[0] for i in infos}
        if len(roots) != 1 or any("/" not in i.filename for i in infos):
            raise _Invalid("records must share one root folder")
        (root,) = roots
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", root):
            raise _Invalid(f"unexpected root folder name {root[:40]!r}")
        records: dict[str, bytes] = {}
        for info in infos:
            relative = info.filename[len(root) + 1 :]
            if info.is_dir() or relative in records:
                raise _Invalid(f"unexpected or duplicate record {info.filename[:80]!r}")
            if info.flag_bits & 0x1:
                raise _Invalid("encrypted records are not accepted")
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as err:
                raise _Invalid(f"record {info.filename[:80]!r} is unreadable ({err})") from None
            records[relative] = data
    return root, records


def _sanitize_archive(upload: Upload) -> tuple[bytes, tuple[int, ...]]:
    """Validate a .pt2 archive and write a clean copy of it (module docstring)."""
    from torch.export.pt2_archive import PT2ArchiveWriter
    from torch.export.pt2_archive.constants import (
        ARCHIVE_FORMAT_PATH,
        ARCHIVE_FORMAT_VALUE,
        ARCHIVE_VERSION_PATH,
        ARCHIVE_VERSION_VALUE,
        CONSTANTS_CONFIG_FILENAME_FORMAT,
        CONSTANTS_DIR,
        MODELS_FILENAME_FORMAT,
        SAMPLE_INPUTS_FILENAME_FORMAT,
        TENSOR_CONSTANT_FILENAME_PREFIX,
        WEIGHT_FILENAME_PREFIX,
        WEIGHTS_CONFIG_FILENAME_FORMAT,
        WEIGHTS_DIR,
    )

    _, records = _read_records(upload)
    if records.get(ARCHIVE_FORMAT_PATH, b"").strip() != ARCHIVE_FORMAT_VALUE.encode():
        raise _Invalid("not a pt2 archive (archive_format)")
    if records.get(ARCHIVE_VERSION_PATH, b"").strip() != ARCHIVE_VERSION_VALUE.encode():
        raise _Invalid(
            f"archive version {records.get(ARCHIVE_VERSION_PATH, b'?')[:10]!r} is not this "
            f"PyTorch's {ARCHIVE_VERSION_VALUE}; export the model with torch {torch.__version__}"
        )
    if records.get("byteorder", b"little").strip() != b"little":
        raise _Invalid("big-endian archives are not accepted")
    model_json = MODELS_FILENAME_FORMAT.format("model")
    weights_config = WEIGHTS_CONFIG_FILENAME_FORMAT.format("model")
    constants_config = CONSTANTS_CONFIG_FILENAME_FORMAT.format("model")
    sample_inputs = SAMPLE_INPUTS_FILENAME_FORMAT.format("model")
    fixed = {ARCHIVE_FORMAT_PATH, ARCHIVE_VERSION_PATH, "byteorder", ".data/version",
             ".data/serialization_id", model_json, weights_config, constants_config,
             sample_inputs}
    for record in records:
        payload = (
            record.startswith(WEIGHTS_DIR)
            and re.fullmatch(re.escape(WEIGHT_FILENAME_PREFIX) + r"\d{1,9}",
                             record[len(WEIGHTS_DIR):])
        ) or (
            record.startswith(CONSTANTS_DIR)
            and re.fullmatch(re.escape(TENSOR_CONSTANT_FILENAME_PREFIX) + r"\d{1,9}",
                             record[len(CONSTANTS_DIR):])
        )
        if record not in fixed and not payload:
            raise _Invalid(
                f"record {record[:80]!r} is not part of a plain torch.export.save archive "
                f"(pickled objects, AOTInductor libraries, extra and legacy files are refused)"
            )
    for required in (model_json, weights_config, constants_config, sample_inputs):
        if required not in records:
            raise _Invalid(f"record {required} is missing")
    _check_payloads(records[weights_config], records, WEIGHTS_DIR, WEIGHT_FILENAME_PREFIX,
                    "weight")
    _check_payloads(records[constants_config], records, CONSTANTS_DIR,
                    TENSOR_CONSTANT_FILENAME_PREFIX, "constant")
    program = _sanitize_program(records[model_json])
    # Sample inputs: restricted unpickler only, then written again by us.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = torch.load(io.BytesIO(records[sample_inputs]), weights_only=True,
                                map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any failure of the safe loader is a refusal
        raise _Invalid(
            f"the sample inputs are not plain tensors ({type(err).__name__}); they are read "
            f"with torch.load(weights_only=True) only"
        ) from None
    if not (
        isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[0], tuple)
        and len(sample[0]) == 1 and isinstance(sample[0][0], Tensor) and sample[1] == {}
    ):
        raise _Invalid("the program must be exported with one example tensor, (x,)")
    x = sample[0][0]
    if x.dim() < 2 or not x.is_floating_point() or x.device.type != "cpu":
        raise _Invalid(
            f"the example input must be a floating-point CPU batch (n, ...), got "
            f"{x.dtype} of shape {tuple(x.shape)}"
        )
    buffer = io.BytesIO()
    torch.save(((x.detach().clone(),), {}), buffer)
    clean = io.BytesIO()
    with PT2ArchiveWriter(clean) as writer:
        for record, data in records.items():
            if record in (model_json, sample_inputs, ".data/version", ".data/serialization_id",
                          ARCHIVE_FORMAT_PATH, ARCHIVE_VERSION_PATH, "byteorder"):
                continue
            writer.write_bytes(record, data)
        writer.write_bytes(model_json, program)
        writer.write_bytes(sample_inputs, buffer.getvalue())
    return clean.getvalue(), tuple(x.shape[1:])


def _audit(program: Any) -> None:
    """Every node of the loaded program is a placeholder, output or allowed call."""
    allowed = set(_SYM_TARGETS.values())
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            if node.op != "call_function":
                raise _Invalid(f"graph node {node.name} has op {node.op!r}")
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                namespace = target.namespace
                op = target._schema.name.split("::")[-1]
                if namespace == "aten" and op in _ATEN_OPS:
                    continue
                if namespace == "prims" and op in _PRIMS_OPS:
                    continue
            elif target in allowed:
                continue
            raise _Invalid(f"graph node {node.name} calls {target!r}, which is not allowed")


def _load_pt2(upload: Upload) -> nn.Module:
    name = upload.name
    try:
        clean, input_shape = _sanitize_archive(upload)
    except _Invalid as err:
        raise ValueError(f"{name}: refused torch.export program: {err}. {_REFUSAL_TAIL}") from None
    except Exception as err:  # noqa: BLE001 - anything unforeseen in a hostile file is a refusal
        raise ValueError(
            f"{name}: refused torch.export program: it could not be validated "
            f"({type(err).__name__}: {str(err)[:200]}). {_REFUSAL_TAIL}"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(clean))
        _audit(program)
        placeholder = [n for n in program.graph.nodes if n.op == "placeholder"][-1]
        batch = placeholder.meta["val"].shape[0]
        if isinstance(batch, int):
            raise _Invalid(
                f"the batch dimension is fixed at {batch}; export with a dynamic batch: "
                f"torch.export.export(model, (x,), dynamic_shapes=({{0: "
                f"torch.export.Dim('batch', min=1)}},))"
            )
        output = [n for n in program.graph.nodes if n.op == "output"][0].args[0][0].meta["val"]
        output_dim = math.prod(int(d) for d in output.shape[1:]) if output.dim() > 1 else 1
        module = program.module()
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise _Invalid(f"tensor {key!r} contains NaN or infinite values")
    except _Invalid as err:
        raise ValueError(f"{name}: refused torch.export program: {err}") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad programs
        raise ValueError(
            f"{name}: the torch.export program could not be loaded ({type(err).__name__}: "
            f"{str(err)[:300]})"
        ) from None
    return ExportedModel(module, input_shape, output_dim).eval()


# ============================================================================= input check
def check_input_shape(model: nn.Module, data: Any) -> int:
    """Run one sample of ``data`` through ``model`` before any computation; name both shapes.

    Parameters
    ----------
    model : nn.Module
        The network (a zoo model, or one from :func:`load_model`).
    data : Task or Tensor
        A :class:`ntkcore.data.Task` (its first target point is used, and its output
        dimension is checked too) or an input batch ``(n, *input_shape)``.

    Returns
    -------
    int
        The number of model outputs per input.

    Raises
    ------
    ValueError
        If the model declares an ``input_shape`` different from the data's, rejects the
        sample, returns something other than one finite tensor per input, or has a number of
        outputs that does not fit the task (regression targets or class logits).
    """
    from ntkcore.data.task import Task

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(data, Task):
        x = data.target[0][:1]
        shape, task = tuple(data.input_shape), data
    elif isinstance(data, Tensor):
        if data.dim() < 2 or data.shape[0] < 1:
            raise ValueError(f"data must be a batch (n, *input_shape), got {tuple(data.shape)}")
        x, shape, task = data[:1], tuple(data.shape[1:]), None
    else:
        raise ValueError(f"data must be a Task or a tensor, got {type(data).__name__}")
    declared = getattr(model, "input_shape", None)
    if declared is not None and tuple(declared) != shape:
        raise ValueError(
            f"the model expects inputs of shape {tuple(declared)}, the data have inputs of "
            f"shape {shape}"
        )
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and x.is_floating_point():
        x = x.to(device=parameter.device, dtype=parameter.dtype)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except ValueError as err:
        raise ValueError(
            f"the model rejected an input of shape {tuple(x.shape)} (data input shape "
            f"{shape}, model input shape {declared or 'not declared'}): {err}"
        ) from None
    except (RuntimeError, TypeError, IndexError, AssertionError) as err:
        raise ValueError(
            f"the model rejected an input of shape {tuple(x.shape)} (data input shape "
            f"{shape}, model input shape {declared or 'not declared'}): "
            f"{type(err).__name__}: {str(err)[:300]}"
        ) from None
    finally:
        for module, flag in flags:
            module.training = flag
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return one tensor (n, outputs), got {got} for n=1")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the model returned NaN or infinite outputs for the first sample")
    outputs = int(out[0].numel())
    if task is not None and outputs != task.output_dim:
        what = "class logits" if task.kind == "classification" else "targets"
        raise ValueError(
            f"the model has {outputs} output(s) per input, the data have {task.output_dim} "
            f"{what} per input"
        )
    return outputs
