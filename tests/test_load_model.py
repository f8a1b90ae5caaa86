"""``zoo.load_model``: safetensors and torch.export uploads load; pickles and armed archives don't.

The attack files carry a payload (``os.mkdir`` of a marker directory, run by unpickling or by
the generated code); every refusal test asserts the marker does not exist afterwards.  The
canary tests show the same files *do* run their payload through plain ``torch.export.load``,
so the refusals are not vacuous.  Numerics of loaded models are compared with the original
module (outputs) and with dense ``torch.func.jacrev`` Jacobians of it (Linearization products).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.func import functional_call, jacrev

from ntkcore import Linearization, data, zoo
from ntkcore.zoo.loading import ExportedModel, detect_format

MLP = {"in_features": 3, "out_features": 2, "width": 8, "depth": 2}


class Payload:
    """Unpickling this creates the directory ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def mlp(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.create("mlp", **MLP).to(dtype).eval()


def export_bytes(model: nn.Module, shape: tuple[int, ...], dynamic: bool = True) -> bytes:
    x = torch.randn(4, *shape, dtype=next(model.parameters()).dtype)
    dims = ({0: torch.export.Dim("batch", min=1)},) if dynamic else None
    program = torch.export.export(model, (x,), dynamic_shapes=dims)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pt2_mlp() -> bytes:
    return export_bytes(mlp(), (3,))


def rewrite(archive: bytes, changes: dict[str, bytes | None]) -> bytes:
    """The archive with records replaced, removed (None) or added (paths below the root)."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    root = source.namelist()[0].split("/", 1)[0]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            relative = info.filename.split("/", 1)[1]
            if relative in changes:
                if changes[relative] is not None:
                    target.writestr(info.filename, changes[relative])
            else:
                target.writestr(info.filename, source.read(info))
        for relative, content in changes.items():
            if content is not None and f"{root}/{relative}" not in source.namelist():
                target.writestr(f"{root}/{relative}", content)
    return out.getvalue()


def edit_program(archive: bytes, edit) -> bytes:
    program = json.loads(zipfile.ZipFile(io.BytesIO(archive)).read("archive/models/model.json"))
    edit(program)
    return rewrite(archive, {"models/model.json": json.dumps(program).encode()})


def torch_save_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- safetensors
def test_safetensors_round_trip_with_metadata(tmp_path):
    model = mlp()
    path = tmp_path / "mine.safetensors"
    zoo.save_model(model, path, arch="mlp", **MLP)
    loaded = zoo.load_model(path)
    x = torch.randn(6, 3)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(loaded(x), model(x))
    buffer = io.BytesIO()
    zoo.save_model(model, buffer, arch="mlp", **MLP)
    assert torch.equal(zoo.load_model(buffer.getvalue())(x), model(x))
    assert zoo.load_model(io.BytesIO(buffer.getvalue()), "mlp", width=8)(x).shape == (6, 2)


def test_safetensors_float64_weights_give_a_float64_model():
    model = mlp(torch.float64)
    buffer = io.BytesIO()
    zoo.save_model(model, buffer, arch="mlp", **MLP)
    loaded = zoo.load_model(buffer.getvalue())
    assert next(loaded.parameters()).dtype == torch.float64
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(loaded(x), model(x))


def test_safetensors_without_metadata_needs_arch():
    model = mlp()
    blob = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})
    with pytest.raises(ValueError, match="does not name its architecture .* pass arch="):
        zoo.load_model(blob)
    loaded = zoo.load_model(blob, "mlp", **MLP)
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match=r"tensor 'body.0.weight' has shape \[8, 3\], .* \[8, 5\]"):
        zoo.load_model(blob, "mlp", **{**MLP, "in_features": 5})
    with pytest.raises(ValueError, match=r"missing 2 tensor\(s\)"):
        zoo.load_model(blob, "mlp", **{**MLP, "depth": 3})


def tensors_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def with_meta(tensors: dict[str, torch.Tensor], **meta: str) -> bytes:
    metadata = {"ntkcore_arch": "mlp", "ntkcore_arch_kwargs": json.dumps(MLP), **meta}
    return save_safetensors(tensors, metadata=metadata)


def test_safetensors_tensors_checked_name_by_name_shape_by_shape():
    good = tensors_of(mlp())
    missing = dict(good)
    del missing["head.bias"]
    with pytest.raises(ValueError, match=r"missing 1 tensor\(s\) \['head.bias'\]"):
        zoo.load_model(with_meta(missing))
    extra = {**good, "head.extra": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"unexpected 1 tensor\(s\) \['head.extra'\]"):
        zoo.load_model(with_meta(extra))
    shaped = {**good, "head.weight": torch.zeros(3, 8)}
    with pytest.raises(ValueError, match=r"'head.weight' has shape \[3, 8\], .* expects \[2, 8\]"):
        zoo.load_model(with_meta(shaped))
    integer = {**good, "head.weight": torch.zeros(2, 8, dtype=torch.int64)}
    with pytest.raises(ValueError, match=r"'head.weight' has dtype I64; mlp weights must be float"):
        zoo.load_model(with_meta(integer))
    nan = {**good, "head.bias": torch.tensor([0.0, float("nan")])}
    with pytest.raises(ValueError, match=r"'head.bias' contains NaN or infinite values"):
        zoo.load_model(with_meta(nan))
    half = {k: v.half() for k, v in good.items()}
    assert next(zoo.load_model(with_meta(half)).parameters()).dtype == torch.float32


def test_safetensors_metadata_and_arguments_validated():
    good = tensors_of(mlp())
    with pytest.raises(ValueError, match="arch='lenet3' contradicts the file's metadata"):
        zoo.load_model(with_meta(good), "lenet3")
    with pytest.raises(ValueError, match=r"contradict the file's metadata: width=9 \(file: 8\)"):
        zoo.load_model(with_meta(good), width=9)
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'"):
        zoo.load_model(with_meta(good, ntkcore_arch="resnet9000"))
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['colour'\]"):
        zoo.load_model(with_meta(good), colour="red")
    with pytest.raises(ValueError, match="metadata ntkcore_arch_kwargs is not valid JSON"):
        zoo.load_model(with_meta(good, ntkcore_arch_kwargs="{width: 8"))
    huge = json.dumps({**MLP, "width": 10**9, "depth": 10**6})
    with pytest.raises(ValueError, match="exceeds the limit of 10,000"):
        zoo.load_model(with_meta(good, ntkcore_arch_kwargs=huge))
    with pytest.raises(ValueError, match="cannot build 'mlp'"):
        zoo.load_model(with_meta(good, ntkcore_arch_kwargs=json.dumps({**MLP, "width": "x"})))
    with pytest.raises(ValueError, match="unknown architecture"):
        zoo.save_model(mlp(), io.BytesIO(), arch="nope")
    with pytest.raises(ValueError, match=r"missing 2 tensor\(s\)"):
        zoo.save_model(mlp(), io.BytesIO(), arch="mlp", **{**MLP, "depth": 3})


def test_damaged_safetensors_data_is_refused():
    blob = bytearray(with_meta(tensors_of(mlp())))
    truncated = bytes(blob[:-10])
    with pytest.raises(ValueError, match="invalid safetensors data"):
        zoo.load_model(truncated)
    broken = (len(blob) + 100).to_bytes(8, "little") + bytes(blob[8:])
    with pytest.raises(ValueError, match="a damaged safetensors file .* is not accepted"):
        zoo.load_model(broken)


def test_format_is_detected_by_content_not_by_name(tmp_path, pt2_mlp):
    blob = with_meta(tensors_of(mlp()))
    disguised = tmp_path / "weights.pkl"
    disguised.write_bytes(blob)
    assert isinstance(zoo.load_model(disguised), nn.Module)
    program = tmp_path / "program.safetensors"
    program.write_bytes(pt2_mlp)
    assert isinstance(zoo.load_model(program), ExportedModel)
    assert detect_format(blob) == "safetensors" and detect_format(pt2_mlp) == "pt2"


# ----------------------------------------------------------------------------- refusals
ACCEPTED = r"Accepted model formats: \(a\) safetensors .* \(b\) a torch.export program"


@pytest.mark.parametrize("name", ["model.pkl", "model.safetensors", "model.pt2", "model.pt"])
def test_pickle_with_payload_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "payload-ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    with pytest.raises(ValueError, match=rf"'{name}': a Python pickle is not accepted. {ACCEPTED}"):
        zoo.load_model(path)
    for protocol in (0, 2, 5):
        with pytest.raises(ValueError, match="pickle"):
            zoo.load_model(pickle.dumps(Payload(marker), protocol=protocol))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, to build a TorchScript file
def test_torch_save_checkpoints_are_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    with pytest.raises(ValueError, match=r"a torch.save checkpoint .* data.pkl\) is not accepted"):
        zoo.load_model(torch_save_bytes(mlp().state_dict()))
    armed = torch_save_bytes({"weights": Payload(marker)})
    (tmp_path / "ckpt.pt2").write_bytes(armed)
    with pytest.raises(ValueError, match="torch.save checkpoint"):
        zoo.load_model(tmp_path / "ckpt.pt2")
    legacy = io.BytesIO()
    torch.save(mlp().state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy torch.save checkpoint"):
        zoo.load_model(legacy.getvalue())
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(mlp()), scripted)
    with pytest.raises(ValueError, match="TorchScript archive"):
        zoo.load_model(scripted.getvalue())
    assert not marker.exists()


def test_zip_with_data_pkl_disguised_as_pt2_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/archive_format", "pt2")
        archive.writestr("archive/archive_version", "0")
        archive.writestr("archive/data.pkl", pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="refused torch.export program"):
        zoo.load_model(out.getvalue())
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world", b"\x00" * 64, b"PK\x03\x04garbage", b"\x89HDF\r\n\x1a\n" + b"\x00" * 20],
)
def test_other_content_is_refused_listing_the_formats(content):
    with pytest.raises(ValueError, match=ACCEPTED):
        zoo.load_model(content)


def test_size_limit_is_checked_before_reading(tmp_path, pt2_mlp):
    class NoRead(io.BytesIO):
        size = 10**9

        def read(self, *args):  # pragma: no cover - must not be called
            raise AssertionError("read() called despite the size limit")

    with pytest.raises(ValueError, match=r"1,000,000,000 bytes, more than the limit"):
        zoo.load_model(NoRead(b""))
    path = tmp_path / "program.pt2"
    path.write_bytes(pt2_mlp)
    too_big = "'program.pt2': the file has .* bytes, more than the limit of 1,000 bytes"
    with pytest.raises(ValueError, match=too_big):
        zoo.load_model(path, max_bytes=1000)
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        zoo.load_model(path, max_bytes=0)


# ----------------------------------------------------------------------------- torch.export
def test_exported_program_matches_the_module_and_linearizes():
    model = mlp(torch.float64, seed=3)
    loaded = zoo.load_model(export_bytes(model, (3,)))
    assert isinstance(loaded, ExportedModel)
    assert loaded.input_shape == (3,) and loaded.output_dim == 2
    x = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-12)
    loaded.train()
    loaded.eval()  # ep.module() itself refuses train(); the wrapper only sets flags
    lin = Linearization(loaded)
    names = [n.removeprefix("program.") for n in lin.parameter_names]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(theta):
        return functional_call(model, theta, (x,)).reshape(-1)

    jac = jacrev(f)(params)  # independent dense reference, float64
    dense = torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in names], dim=1)  # (n*o, p)
    v = torch.randn(3, lin.num_params, dtype=torch.float64)
    torch.testing.assert_close(lin.jvp(x, v), (dense @ v.T).T.reshape(3, 7, 2), rtol=1e-10,
                               atol=1e-10)
    u = torch.randn(2, 7, 2, dtype=torch.float64)
    torch.testing.assert_close(lin.vjp(x, u), u.reshape(2, -1) @ dense, rtol=1e-10, atol=1e-10)


def test_exported_convolutional_network(tmp_path):
    torch.manual_seed(0)
    model = zoo.create("lenet3", in_channels=1, in_size=28, out_features=10).eval()
    path = tmp_path / "lenet.pt2"
    path.write_bytes(export_bytes(model, (1, 28, 28)))
    loaded = zoo.load_model(path)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.input_shape == (1, 28, 28) and loaded.output_dim == 10


def test_static_batch_and_training_mode_programs_are_refused():
    with pytest.raises(ValueError, match=r"batch dimension is fixed at 4; export with a dynamic"):
        zoo.load_model(export_bytes(mlp(), (3,), dynamic=False))

    class Dropping(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.linear(x))

    with pytest.raises(ValueError, match=r"dropout runs in training mode; call model.eval\(\)"):
        zoo.load_model(export_bytes(Dropping().train(), (3,)))

    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)
            self.norm = nn.BatchNorm1d(2)

        def forward(self, x):
            return self.norm(self.linear(x))

    with pytest.raises(ValueError, match="refused torch.export program"):
        zoo.load_model(export_bytes(Normed().train(), (3,)))
    assert isinstance(zoo.load_model(export_bytes(Normed().eval(), (3,))), ExportedModel)


def test_pt2_with_non_finite_weights_is_refused():
    model = mlp()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"tensor 'head.bias' contains NaN or infinite values"):
        zoo.load_model(export_bytes(model, (3,)))
    frozen = mlp().requires_grad_(False)
    loaded = zoo.load_model(export_bytes(frozen, (3,)))
    assert Linearization(loaded).num_params == sum(p.numel() for p in frozen.parameters())


def test_pt2_refuses_arch_arguments(pt2_mlp):
    with pytest.raises(ValueError, match="carries its own graph"):
        zoo.load_model(pt2_mlp, "mlp")


# ----------------------------------------------------------------------------- armed archives
def armed_sample_inputs(archive: bytes, marker: Path) -> bytes:
    return rewrite(archive, {"data/sample_inputs/model.pt": torch_save_bytes(Payload(marker))})


def armed_pickled_weight(archive: bytes, marker: Path) -> bytes:
    config = json.loads(
        zipfile.ZipFile(io.BytesIO(archive)).read("archive/data/weights/model_weights_config.json")
    )
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    return rewrite(
        archive,
        {
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{first['path_name']}": torch_save_bytes(Payload(marker)),
        },
    )


@pytest.mark.parametrize("arm", [armed_sample_inputs, armed_pickled_weight])
def test_canary_plain_torch_export_load_runs_the_payload(tmp_path, pt2_mlp, arm):
    """The armed files are live: torch 2.13's own loader unpickles them unrestricted."""
    marker = tmp_path / "payload-ran"
    armed = arm(pt2_mlp, marker)
    try:
        torch.export.load(io.BytesIO(armed))
    except Exception:  # noqa: BLE001 - the payload runs before torch fails
        pass
    assert marker.exists()


@pytest.mark.parametrize("arm", [armed_sample_inputs, armed_pickled_weight])
def test_armed_archives_are_refused_without_running(tmp_path, pt2_mlp, arm):
    marker = tmp_path / "payload-ran"
    with pytest.raises(ValueError, match="refused torch.export program"):
        zoo.load_model(arm(pt2_mlp, marker))
    assert not marker.exists()


def set_target(target: str):
    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    return edit


def set_expr(expr: str):
    def edit(program):
        values = program["graph_module"]["graph"]["tensor_values"]
        values["x"]["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 4}}}

    return edit


def set_signature(key: str, value):
    def edit(program):
        program["graph_module"]["module_call_graph"][0]["signature"][key] = value

    return edit


def set_argument(argument: dict):
    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["inputs"][0]["arg"] = argument

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_target("torch.os.system"), r"operator 'torch.os.system' is not an allowed"),
        (set_target("torch.ops.load_library"), r"is not an allowed ATen operator"),
        (set_target("torch.ops.aten.from_file.default"), r"aten.from_file is not in the allowlist"),
        (set_target("torch.ops.aten.empty.memory_format"), r"aten.empty is not in the allowlist"),
        (set_target("#custom:op"), r"not an allowed ATen operator"),
        (set_expr("__import__('os').system('id')"), r"name '__import__' is not allowed"),
        (set_expr("factorial(99999999)"), r"name 'factorial' is not allowed"),
        (set_expr("Integer(10)**Integer(10)**9"), r"'\*\*' is not allowed"),
        (set_expr("Symbol('s0').__class__"), r"disallowed characters"),
        (set_signature("forward_arg_names", ["x):\n import os #"]), r"is not a name"),
        (set_signature("in_spec", '[1, {"type": "builtins.dict"}]'), r"one tensor argument"),
        (set_argument({"as_string": "');__import__('os')#"}), r"characters that are not allowed"),
        (set_argument({"as_operator": "torch.os.system"}), r"operators passed as arguments"),
        (set_argument({"as_graph": {"name": "g", "graph": {}}}), r"subgraphs"),
        (set_argument({"as_int": 2**40}), r"integer argument 1099511627776 is too large"),
        (set_argument({"as_ints": [65536, 65536, 65536]}), r"shape argument with .* too large"),
        (set_argument({"as_tensor": {"name": 3}}), r"expected a string"),
        (
            lambda p: p["graph_module"]["graph"].update(surprise=1),
            r"unknown field\(s\) \['surprise'\]",
        ),
        (lambda p: p["graph_module"].pop("signature"), r"missing field\(s\) \['signature'\]"),
        (lambda p: p.update(schema_version={"major": 1, "minor": 0}), r"schema version"),
        (lambda p: p["range_constraints"].update({"s0; rm": {"min_val": 1, "max_val": 2}}),
         r"characters that are not allowed"),
    ],
)
def test_hostile_program_json_is_refused(pt2_mlp, edit, message):
    with pytest.raises(ValueError, match=message):
        zoo.load_model(edit_program(pt2_mlp, edit))


def test_code_in_free_text_fields_never_runs(tmp_path, pt2_mlp):
    marker = tmp_path / "payload-ran"
    code = f"__import__('os').mkdir({str(marker)!r})"

    def edit(program):
        program["guards_code"] = [code]
        for node in program["graph_module"]["graph"]["nodes"]:
            node["metadata"]["stack_trace"] = f'File "x", line 1\n{code}\n'
        program["graph_module"]["metadata"] = {"note": code}

    loaded = zoo.load_model(edit_program(pt2_mlp, edit))  # cleared, then accepted
    loaded(torch.randn(2, 3))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data/aotinductor/model/model.so": b"\x7fELF"}, r"'data/aotinductor/model/model.so' is"),
        ({"extra/notes.txt": b"hi"}, r"'extra/notes.txt' is not part"),
        ({"data/constants/custom_obj_0": b"x"}, r"'data/constants/custom_obj_0' is not part"),
        ({"data/weights/model.pt": b"x"}, r"'data/weights/model.pt' is not part"),
        ({"data/sample_inputs/model.pt": None}, r"record data/sample_inputs/model.pt is missing"),
        ({"archive_version": b"99"}, r"archive version .* is not this PyTorch's"),
        ({"archive_format": b"pt3"}, r"not a pt2 archive|is not accepted"),
        ({"data/weights/weight_0": b"\x00" * 4}, r"does not fit in its record"),
    ],
)
def test_hostile_archive_records_are_refused(pt2_mlp, changes, message):
    with pytest.raises(ValueError, match=message):
        zoo.load_model(rewrite(pt2_mlp, changes))


def test_legacy_export_zip_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("version", "8.0")
        archive.writestr("serialized_exported_program.json", "{}")
        archive.writestr("serialized_state_dict.pt", torch_save_bytes(Payload(marker)))
    with pytest.raises(ValueError, match="not a torch.export program"):
        zoo.load_model(out.getvalue())
    assert not marker.exists()


def test_zip_bomb_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/archive_format", "pt2")
        archive.writestr("archive/models/model.json", b" " * (50 * 2**20))
    assert len(out.getvalue()) < 2**20
    with pytest.raises(ValueError, match="zip bomb"):
        zoo.load_model(out.getvalue())


# ----------------------------------------------------------------------------- input check
def regression_csv(d: int) -> data.Task:
    rows = "\n".join(",".join(str((i * (k + 2) + k) % 11) for k in range(d + 1)) for i in range(12))
    header = ",".join([f"x{k}" for k in range(d)] + ["y"])
    return data.from_csv(header + "\n" + rows + "\n")


def test_check_input_shape(pt2_mlp):
    assert zoo.check_input_shape(mlp(), torch.randn(5, 3)) == 2
    wrong = regression_csv(4)
    expected = r"the model expects inputs of shape \(3,\), the data have inputs of shape \(4,\)"
    with pytest.raises(ValueError, match=expected):
        zoo.check_input_shape(mlp(), wrong)
    exported = zoo.load_model(pt2_mlp)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(3,\), .* shape \(4,\)"):
        zoo.check_input_shape(exported, wrong)
    expected = r"the model has 2 output\(s\) per input, the data have 1 targets"
    with pytest.raises(ValueError, match=expected):
        zoo.check_input_shape(exported, regression_csv(3))
    one = zoo.create("mlp", in_features=3, out_features=1, width=4, depth=1)
    assert zoo.check_input_shape(one, regression_csv(3)) == 1
    expected = r"rejected an input of shape \(1, 4\) .* input shape \(4,\)"
    with pytest.raises(ValueError, match=expected):
        zoo.check_input_shape(nn.Linear(3, 1), regression_csv(4))

    class Broken(nn.Module):
        def forward(self, x):
            return x.sum(dim=1, keepdim=True) * float("nan")

    with pytest.raises(ValueError, match="NaN or infinite outputs"):
        zoo.check_input_shape(Broken(), regression_csv(3))
    with pytest.raises(ValueError, match="must be a Task or a tensor"):
        zoo.check_input_shape(mlp(), [1, 2, 3])
