"""``data.from_csv`` and ``data.read_csv_columns``: CSV uploads become a Task or a clear error.

Values are checked against an independent reading of the same numbers (NumPy statistics of the
arrays the files were written from, ``np.std`` with ddof=0 as documented); every error case
checks that the message names the file, the line and the column where they apply.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
import torch

from ntkcore import data, zoo
from ntkcore.data import MissingSourceError, Task, TaskMeta


def table_text(header: list[str], rows: list[list[object]], delimiter: str = ",") -> str:
    lines = [delimiter.join(header)] + [delimiter.join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def domain_table(n_source: int = 12, n_target: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_source + n_target, 2)) * [1.0, 10.0] + [0.0, 5.0]
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1]
    domain = ["source"] * n_source + ["target"] * n_target
    rows = [
        [repr(float(a)), repr(float(b)), repr(float(c)), d]
        for (a, b), c, d in zip(x, y, domain, strict=True)
    ]
    return table_text(["x1", "x2", "y", "domain"], rows), x, y


class FakeUpload(io.BytesIO):
    """Like Streamlit's UploadedFile: a BytesIO with ``name`` and ``size``."""

    def __init__(self, content: bytes, name: str = "upload.csv") -> None:
        super().__init__(content)
        self.name = name
        self.size = len(content)


# ----------------------------------------------------------------------------- happy paths
def test_domain_column_split_and_standardisation_match_numpy():
    text, x, y = domain_table()
    task = data.from_csv(text, domain_column="domain", test_fraction=0.3, seed=4)
    assert task.has_source and task.sizes == {"source": 12, "target": 7, "test": 3}
    assert task.meta.extra["domains"] == {"source": "source", "target": "target"}
    tr = task.meta.transform
    # statistics of the source rows, computed independently (population std, ddof=0)
    np.testing.assert_allclose(tr["x_mean"], x[:12].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(tr["x_std"], x[:12].std(axis=0), rtol=1e-12)
    np.testing.assert_allclose([tr["y_mean"], tr["y_std"]], [y[:12].mean(), y[:12].std()])
    assert tr["x_columns"] == ("x1", "x2") and tr["y_column"] == "y"
    # every split maps back to the file's rows through meta.extra's line numbers
    for split, key in (
        ("source", "source_lines"),
        ("target", "target_lines"),
        ("test", "test_lines"),
    ):
        xs, ys = getattr(task, split)
        rows = task.meta.extra[key].numpy() - 2  # line 1 is the header
        back_x = xs.double().numpy() * tr["x_std"] + tr["x_mean"]
        back_y = ys.double().numpy()[:, 0] * tr["y_std"] + tr["y_mean"]
        np.testing.assert_allclose(back_x, x[rows], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(back_y, y[rows], rtol=1e-6, atol=1e-6)
    assert set(task.meta.extra["target_lines"].tolist()).isdisjoint(
        task.meta.extra["test_lines"].tolist()
    )
    assert task.source[0].dtype == torch.float32 and task.source[1].shape == (12, 1)


def test_seed_changes_the_target_order_only():
    text, _, _ = domain_table()
    a = data.from_csv(text, domain_column="domain", seed=0)
    b = data.from_csv(text, domain_column="domain", seed=1)
    assert torch.equal(a.source[0], b.source[0])
    assert not torch.equal(a.target[0], b.target[0])
    again = data.from_csv(text, domain_column="domain", seed=0)
    assert torch.equal(a.target[0], again.target[0]) and torch.equal(a.test[1], again.test[1])


def test_two_files_source_and_target(tmp_path):
    text, x, _ = domain_table()
    lines = text.splitlines()
    src = tmp_path / "source.csv"
    tgt = tmp_path / "target.csv"
    src.write_text("\n".join(lines[:13]) + "\n")
    tgt.write_text("\n".join([lines[0], *lines[13:]]) + "\n")
    task = data.from_csv(src, tgt, x_columns=["x1", "x2"], y_column="y")
    assert task.sizes["source"] == 12 and task.sizes["target"] + task.sizes["test"] == 10
    np.testing.assert_allclose(task.meta.transform["x_mean"], x[:12].mean(axis=0), rtol=1e-12)
    assert task.meta.extra["files"] == {"source": "'source.csv'", "target": "'target.csv'"}


def test_target_only_task_has_no_source():
    text, x, y = domain_table()
    task = data.from_csv(text, x_columns=["x1", "x2"], y_column="y", test_fraction=0.25)
    assert not task.has_source and task.splits == ("target", "test")
    assert task.sizes == {"source": 0, "target": 16, "test": 6}
    assert task.meta.extra["source_absent"] is True
    assert task.meta.transform["fitted_on"] == "target pool"
    pool_rows = task.meta.extra["target_lines"].numpy() - 2
    np.testing.assert_allclose(task.meta.transform["x_mean"], x[pool_rows].mean(axis=0))
    with pytest.raises(MissingSourceError, match="has no source data"):
        task.source  # noqa: B018
    with pytest.raises(ValueError, match="has no source data"):
        x_source, _ = task.source
    assert not task.to(dtype=torch.float64).has_source
    # a consumer that trains on the source fails with the same clear error
    with pytest.raises(ValueError, match="has no source data"):
        zoo.fetch("mlp", "csv", task=task, cache_dir="/nonexistent-never-written")


def test_task_validates_a_missing_source():
    x, y = torch.zeros(3, 2), torch.zeros(3, 1)
    meta = TaskMeta(name="t", description="", kind="regression", input_shape=(2,), output_dim=1)
    task = Task(source=None, target=(x, y), test=(x, y), meta=meta)
    assert not task.has_source
    with pytest.raises(ValueError, match=r"source must be an \(x, y\) pair of tensors \(or None\)"):
        Task(source=(x,), target=(x, y), test=(x, y), meta=meta)
    with pytest.raises(ValueError, match="target must be an"):
        Task(source=None, target=None, test=(x, y), meta=meta)


@pytest.mark.parametrize(
    "form", ["path", "str-path", "bytes", "text", "bytesio", "stringio", "upload"]
)
def test_every_source_form_gives_the_same_task(tmp_path, form):
    text, _, _ = domain_table()
    path = tmp_path / "mine.csv"
    path.write_text(text)
    source = {
        "path": path,
        "str-path": str(path),
        "bytes": text.encode(),
        "text": text,
        "bytesio": io.BytesIO(text.encode()),
        "stringio": io.StringIO(text),
        "upload": FakeUpload(text.encode()),
    }[form]
    task = data.from_csv(source, domain_column="domain")
    reference = data.from_csv(text, domain_column="domain")
    assert torch.equal(task.target[0], reference.target[0])


def test_an_upload_already_read_is_read_from_the_start():
    text, _, _ = domain_table()
    upload = FakeUpload(text.encode())
    upload.read()  # a previous Streamlit rerun consumed it
    assert data.from_csv(upload, domain_column="domain").sizes["source"] == 12
    assert data.read_csv_columns(upload).n_rows == 22


def test_encodings_line_endings_gzip_and_quotes():
    text, _, _ = domain_table()
    reference = data.from_csv(text, domain_column="domain")
    variants = [
        b"\xef\xbb\xbf" + text.encode(),  # UTF-8 byte-order mark
        text.encode("utf-16"),  # UTF-16 with its byte-order mark
        text.replace("\n", "\r\n").encode(),  # Windows line endings
        gzip.compress(text.encode()),
        ("\n\n" + text + "\n\n").encode(),  # blank lines around
        text.replace("source", '"source"').encode(),  # quoted labels
    ]
    for variant in variants:
        task = data.from_csv(variant, domain_column="domain")
        assert torch.equal(task.target[0], reference.target[0])
        assert torch.equal(task.source[1], reference.source[1])


def test_domain_values_are_ordered_by_name_or_value():
    rows = [[i, i * 0.5 + (i % 3), "train" if i < 5 else "test"] for i in range(10)]
    task = data.from_csv(table_text(["x", "y", "d"], rows), domain_column="d")
    assert task.meta.extra["domains"] == {"source": "train", "target": "test"}
    assert task.sizes["source"] == 5
    rows = [[i, i * 0.5 + (i % 3), int(i >= 4)] for i in range(10)]
    task = data.from_csv(table_text(["x", "y", "d"], rows), domain_column="d")
    assert task.meta.extra["domains"] == {"source": 0, "target": 1}
    assert task.sizes["source"] == 4


def test_classification_labels():
    rows = [[i, (i * 7) % 5, ["cat", "dog", "eel"][i % 3]] for i in range(30)]
    task = data.from_csv(table_text(["a", "b", "label"], rows), kind="classification")
    assert task.kind == "classification" and task.meta.num_classes == 3
    assert task.meta.extra["classes"] == ["cat", "dog", "eel"]
    labels = torch.cat([task.target[1], task.test[1]])
    lines = torch.cat([task.meta.extra["target_lines"], task.meta.extra["test_lines"]])
    expected = torch.tensor([(int(line) - 2) % 3 for line in lines])
    assert torch.equal(labels, expected)


def test_default_columns_and_float64():
    text, _, _ = domain_table()
    task = data.from_csv(text, domain_column="domain", dtype=torch.float64)
    assert task.meta.transform["x_columns"] == ("x1", "x2")
    assert task.meta.transform["y_column"] == "y"
    assert task.source[0].dtype == torch.float64


def test_read_csv_columns_lists_columns_without_raising_for_values():
    text = "x,y,site,note\n0.1,1.5,a,7\n0.2,nan,b,\n0.3,1,a,8\n"
    info = data.read_csv_columns(text)
    assert info.columns == ("x", "y", "site", "note") and info.n_rows == 3
    assert info.numeric == ("x",)
    assert info.problems["y"] == "line 3: missing value 'nan' (NaN is not allowed)"
    assert info.problems["site"] == "line 2: non-numeric value 'a'"
    assert info.problems["note"] == "line 3: empty field (missing value)"
    assert info.domain_candidates == ("site",)
    assert list(info.head.columns) == ["x", "y", "site", "note"] and len(info.head) == 3
    with pytest.raises(ValueError, match="ragged row"):
        data.read_csv_columns("x,y\n1,2\n3\n")


# ----------------------------------------------------------------------------- errors
GOOD_HEADER = "a,b,c\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"<CSV file bytes>: the file is empty"),
        ("\n \n\n", r"the file is empty"),
        ("a,b,c\n", r"<CSV file bytes>: the file has a header but no data rows"),
        ("a,b,c\n1,2,3\n4,x,6\n", r"line 3, column 'b': non-numeric value 'x'"),
        (
            "a,b,c\n1,2,3\n4,5,NaN\n",
            r"line 3, column 'c': missing value 'NaN' \(NaN is not allowed\)",
        ),
        ("a,b,c\n1,2,3\n4,5,inf\n", r"line 3, column 'c': infinite value 'inf'"),
        ("a,b,c\n1,2,3\n4,-1e999,6\n", r"line 3, column 'b': value '-1e999' overflows float64"),
        ("a,b,c\n1,2,3\n" + "9" * 400 + ",5,6\n", r"line 3, column 'a': value '9999.*' overflows"),
        ("a,b,c\n1,2,3\n4,5\n", r"line 3: ragged row with 2 fields, but the header has 3 columns"),
        ("a,b,c\n1,2,3,4\n5,6,7\n", r"line 2: ragged row with 4 fields, but the header has 3"),
        ("a,b,c\n1,2,3\n\n4,5,6,\n", r"line 4: ragged row with 4 fields"),
        ("a,b,c\n1,,3\n4,5,6\n", r"line 2, column 'b': empty field \(missing value\)"),
        (
            "a;b;c\n1;2;3\n",
            r"line 1: wrong delimiter: the header uses ';' \(semicolon\) but the "
            r"expected delimiter is ',' \(comma\); pass delimiter=';'",
        ),
        ("a\tb\tc\n1\t2\t3\n", r"the header uses '\\t' \(tab\)"),
        ("a|b\n1|2\n", r"the header uses '\|' \(pipe\)"),
        ("abc\n1\n2\n", r"line 1: the header has a single column \('abc'\)"),
        ("a,a,b\n1,2,3\n", r"line 1: duplicate column names \['a'\]"),
        ("1,2,3\n4,5,6\n", r"line 1: the first line must be a header of column names"),
        ('a,b,c\n1,"2,3\n', r"line 2: malformed quoting"),
        ("a,b,c\n1,2,3\n1,5,6\n1,7,9\n", r"input column 'a' is constant in the target pool data"),
        ("a,b\n1,2\n2,2\n3,2\n4,2\n", r"target column 'b' is constant .* pick another y_column"),
        ("a,b,c\n1_000,2,3\n4,5,6\n", r"line 2, column 'a': non-numeric value '1_000'"),
        ("a,b,c\n0x10,2,3\n4,5,6\n", r"non-numeric value '0x10'"),
    ],
)
def test_bad_text_is_refused_with_file_line_and_column(content, message):
    with pytest.raises(ValueError, match=message):
        data.from_csv(content.encode())


def test_decimal_commas_get_a_hint():
    with pytest.raises(
        ValueError, match=r"line 2, column 'b': non-numeric value '1,5' \(decimal comma"
    ):
        data.from_csv("a;b;c\n1;1,5;2\n2;3;4\n3;5;7\n", delimiter=";")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b,c\n1,\x002,3\n", r"binary content \(a NUL byte at offset 8\)"),
        (b"PK\x03\x04\x14\x00rest", r"looks like a zip archive \(an Excel .xlsx"),
        (b"\x80\x04\x95\x10\x00", r"looks like a Python pickle"),
        (b"%PDF-1.7\n", r"looks like a PDF document"),
        (
            "a,b,c\ncaf\xe9,2,3\n".encode("latin-1"),
            r"not valid UTF-8 text \(byte 0xe9 at offset 9, line 2\)",
        ),
        (
            b"a,b,c\n1,\x1b2,3\n",
            r"garbled or binary content \(control character U\+001B on line 2\)",
        ),
        (b"\x1f\x8bnot really gzip", r"damaged gzip data"),
        (gzip.compress(b"a,b\n1,2\n")[:-6], r"truncated gzip data|damaged gzip"),
        (
            bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
            r"binary|not valid UTF-8|garbled|looks like",
        ),
    ],
)
def test_binary_and_garbled_files_are_refused(content, message):
    with pytest.raises(ValueError, match=message):
        data.from_csv(content)


def test_named_file_appears_in_messages(tmp_path):
    path = tmp_path / "measurements.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"^'measurements.csv', line 3, column 'b': non-numeric"):
        data.from_csv(path)
    with pytest.raises(ValueError, match=r"^'upload.csv', line 3, column 'b'"):
        data.from_csv(FakeUpload(path.read_bytes()))
    # the same content under another name (parsed tables are cached by name and content)
    with pytest.raises(ValueError, match=r"^'other.csv', line 3, column 'b'"):
        data.from_csv(FakeUpload(path.read_bytes(), name="other.csv"))
    with pytest.raises(ValueError, match="CSV file not found"):
        data.from_csv(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="is a directory"):
        data.from_csv(tmp_path)


def test_domain_problems():
    text, _, _ = domain_table(n_source=1, n_target=6)
    with pytest.raises(ValueError, match=r"the source domain has 1 row\(s\); at least 2"):
        data.from_csv(text, domain_column="domain")
    text, _, _ = domain_table(n_source=6, n_target=1)
    with pytest.raises(ValueError, match=r"the target domain has 1 row\(s\)"):
        data.from_csv(text, domain_column="domain")
    rows = [[i, i % 4, ["u", "v", "w"][i % 3]] for i in range(9)]
    with pytest.raises(
        ValueError, match=r"'d' must hold exactly two values .* found 3: \['u', 'v', 'w'\]"
    ):
        data.from_csv(table_text(["x", "y", "d"], rows), domain_column="d")
    rows = [[i, i % 4, "u"] for i in range(9)]
    with pytest.raises(ValueError, match="found 1"):
        data.from_csv(table_text(["x", "y", "d"], rows), domain_column="d")
    rows = [[i, i % 4, "u" if i % 2 else ""] for i in range(9)]
    with pytest.raises(ValueError, match=r"line 2, column 'd': empty field \(missing label\)"):
        data.from_csv(table_text(["x", "y", "d"], rows), domain_column="d")


def test_missing_columns_and_bad_options():
    text, _, _ = domain_table()
    with pytest.raises(
        ValueError, match=r"missing input column\(s\) \['x9'\]; the file has columns"
    ):
        data.from_csv(text, x_columns=["x1", "x9"], domain_column="domain")
    with pytest.raises(ValueError, match=r"missing target column\(s\) \['z'\]"):
        data.from_csv(text, y_column="z", domain_column="domain")
    with pytest.raises(ValueError, match=r"missing domain column\(s\) \['dom'\]"):
        data.from_csv(text, domain_column="dom")
    with pytest.raises(ValueError, match="line 2, column 'domain': non-numeric value 'source'"):
        data.from_csv(text)  # the domain column taken as an input by default
    lines = text.splitlines()
    target = "\n".join(
        ["x1,y,domain", *[",".join(line.split(",")[i] for i in (0, 2, 3)) for line in lines[13:]]]
    )
    with pytest.raises(
        ValueError, match=r"<target CSV file text>: missing input column\(s\) \['x2'\]"
    ):
        data.from_csv("\n".join(lines[:13]), target + "\n", x_columns=["x1", "x2"], y_column="y")
    with pytest.raises(ValueError, match="either a target file or a domain_column"):
        data.from_csv(text, text, domain_column="domain")
    with pytest.raises(ValueError, match="also listed in x_columns"):
        data.from_csv(text, x_columns=["x1", "y"], y_column="y", domain_column="domain")
    bad_options = [
        {"test_fraction": 0.0},
        {"test_fraction": 1.0},
        {"test_fraction": "0.3"},
        {"seed": -1},
        {"seed": 1.5},
        {"max_rows": 0},
        {"kind": "ranking"},
        {"delimiter": ";;"},
        {"delimiter": "."},
        {"x_columns": "x1"},
        {"x_columns": []},
        {"x_columns": ["x1", "x1"]},
        {"y_column": 3},
        {"dtype": torch.int64},
        {"max_bytes": 0},
    ]
    for options in bad_options:
        with pytest.raises(ValueError, match=next(iter(options))):
            data.from_csv(text, **{"domain_column": "domain", **options})
    with pytest.raises(ValueError, match="must be a path, bytes, a file-like object or text"):
        data.from_csv(12345)


def test_too_many_rows_and_too_many_bytes(tmp_path):
    text = table_text(["a", "b"], [[i, i * i] for i in range(50)])
    with pytest.raises(ValueError, match=r"50 data rows, more than max_rows=49"):
        data.from_csv(text, max_rows=49)
    assert data.from_csv(text, max_rows=50).sizes["target"] == 35
    quoted = text.replace("\n1,", '\n"1",')
    with pytest.raises(ValueError, match=r"more than 10 data rows, more than max_rows=10"):
        data.from_csv(quoted, max_rows=10)
    path = tmp_path / "big.csv"
    path.write_text(text)
    size = path.stat().st_size
    with pytest.raises(
        ValueError,
        match=rf"'big.csv': the file has {size:,} bytes, more than the limit of 100 bytes",
    ):
        data.from_csv(path, max_bytes=100)
    with pytest.raises(ValueError, match="more than the limit of 100 bytes"):
        data.from_csv(FakeUpload(text.encode()), max_bytes=100)
    bomb = gzip.compress(b"a,b\n" + b"1,2\n" * 100_000)
    assert len(bomb) < 10_000
    with pytest.raises(ValueError, match="decompresses to more than the limit of 100,000 bytes"):
        data.from_csv(bomb, max_bytes=100_000)


def test_values_too_far_from_the_source_scale():
    rows = [[1e-30 * i, i] for i in range(1, 5)] + [[1.0, 2.0]] * 0
    text = table_text(["x", "y"], rows)
    target = table_text(["x", "y"], [[1e30, 1.0], [2e30, 2.0], [3e30, 3.0]])
    with pytest.raises(
        ValueError,
        match=r"\(target pool\): column 'x' lies too many standard deviations .* torch.float32",
    ):
        data.from_csv(text, target)
    task = data.from_csv(text, target, dtype=torch.float64)
    assert torch.isfinite(task.target[0]).all()
