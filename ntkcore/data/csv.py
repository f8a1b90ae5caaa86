"""Your own data: a :class:`~ntkcore.data.Task` from CSV files, validated as untrusted input.

:func:`from_csv` builds a transfer task (Maddox et al., 2021, Algorithm 1: a network trained on
the source domain is adapted to target data) from

* **one file with a domain column** whose two values split the rows into source and target;
* **two files**, source and target, with the same columns;
* **one file without a domain column**: target data only (``task.has_source`` is ``False``),
  to adapt a model trained elsewhere (a zoo model or one loaded with
  :func:`ntkcore.zoo.load_model`).

:func:`read_csv_columns` parses and validates a file the same way and lists its columns (which
are numeric, which could split domains, a few first rows) so an interface can offer column
pickers before building the task.

Every problem is a ``ValueError`` naming the file, the line (1-based, as an editor shows it) and
the column: empty input, a header without data, a wrong delimiter (the one seen is named),
ragged rows, empty fields, non-numeric values, NaN/inf or values that overflow float64, constant
inputs, too few rows in a domain, binary or non-UTF-8 files, more than ``max_rows`` rows.

Parsing is strict on purpose.  The structure (one header, the same number of fields on every
line) is checked explicitly before pandas' C parser reads the values, because that parser fills
short rows with NaN and drops the extra field of a long first row without a word; every value
of a selected column is then checked to be a finite float64.  The text must be UTF-8 (a UTF-8
or UTF-16 byte-order mark is honoured) and may be gzip-compressed (decompressed up to
``max_bytes``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ntkcore.data._source import Upload, read_upload
from ntkcore.data.task import Task, TaskMeta

__all__ = ["CsvColumns", "from_csv", "read_csv_columns"]

#: Default limit on the size of one file (after gzip decompression).
DEFAULT_MAX_BYTES = 100 * 2**20
#: Delimiters recognised when the expected one is missing from the header.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
KINDS = ("regression", "classification")

_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_DECIMAL_COMMA = re.compile(r"\s*[+-]?\d+,\d+\s*")
_INFINITY = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_NAN = {"nan", "+nan", "-nan", "na", "n/a", "null", "none", "#n/a", "nan%"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAGIC = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx or .ods file is one); export it as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls / OLE file; export it as CSV"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"PAR1", "a Parquet file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x80", "a Python pickle or other binary file"),
)
_SOURCE_WORDS = ("source", "src", "train")
_TARGET_WORDS = ("target", "tgt", "test")


# ----------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Table:
    """A structurally valid CSV file: header, values, and where each row came from."""

    name: str
    columns: tuple[str, ...]
    frame: pd.DataFrame  # columns 0..k-1, pandas-inferred dtypes, no NA conversion
    line_numbers: np.ndarray  # shape: (n,), 1-based line of each data row
    lines: list[str] = field(repr=False)  # raw lines, for messages
    delimiter: str = ","
    sha256: str = ""

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    def index(self, column: str) -> int:
        return self.columns.index(column)

    def token(self, row: int, col: int) -> str:
        """The raw text of field ``col`` of data row ``row`` (for messages)."""
        line = self.lines[int(self.line_numbers[row]) - 1]
        try:
            fields = next(csv.reader([line], delimiter=self.delimiter))
        except (csv.Error, StopIteration):
            return line
        return fields[col] if col < len(fields) else ""

    def where(self, row: int, col: int) -> str:
        return f"{self.name}, line {int(self.line_numbers[row])}, column {self.columns[col]!r}"

    def numeric(self, column: str) -> np.ndarray:
        """Values of ``column`` as finite float64, shape (n,); ``ValueError`` otherwise."""
        col = self.index(column)
        values, bad = _as_float(self.frame[col])
        if bad is not None:
            raise ValueError(f"{self.where(bad, col)}: {_describe(self.token(bad, col))}")
        return values

    def labels(self, column: str) -> np.ndarray:
        """Values of ``column`` as labels (stripped strings or numbers), shape (n,)."""
        col = self.index(column)
        series = self.frame[col]
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
            series.dtype
        ):
            values = series.to_numpy()
            if values.dtype.kind == "f":
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    row = int(bad[0])
                    raise ValueError(f"{self.where(row, col)}: {_describe(self.token(row, col))}")
                if np.all(values == np.round(values)) and np.abs(values).max() < 2**53:
                    values = values.astype(np.int64)
            return values
        values = np.array([str(v).strip() for v in series.to_numpy()], dtype=object)
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise ValueError(f"{self.where(int(empty[0]), col)}: empty field (missing label)")
        return values


def _as_float(series: pd.Series) -> tuple[np.ndarray, int | None]:
    """``(values, first bad row or None)``: finite float64 values of a parsed column."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return np.empty(0), 0
    if pd.api.types.is_integer_dtype(dtype):
        return series.to_numpy(dtype=np.float64), None
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        return values, (int(bad[0]) if bad.size else None)
    # Text (or huge integers pandas keeps as Python ints): strict decimal syntax, row by row.
    raw = series.to_numpy()
    values = np.empty(len(raw), dtype=np.float64)
    for i, token in enumerate(raw):
        if isinstance(token, bool | np.bool_):
            return values, i
        if isinstance(token, int | np.integer | float | np.floating):
            try:
                value = float(token)
            except OverflowError:  # an integer beyond float64
                return values, i
        elif isinstance(token, str) and _NUMBER.fullmatch(token):
            value = float(token)
        else:
            return values, i
        if not np.isfinite(value):
            return values, i
        values[i] = value
    return values, None


def _describe(token: str) -> str:
    """Why ``token`` is not an acceptable finite float64 value."""
    stripped = token.strip()
    low = stripped.lower()
    if stripped == "":
        return "empty field (missing value)"
    if low in _NAN:
        return f"missing value {token!r} (NaN is not allowed)"
    if low in _INFINITY:
        return f"infinite value {token!r} (inf is not allowed)"
    if _NUMBER.fullmatch(token):
        return f"value {token!r} overflows float64 (largest magnitude ~1.8e308)"
    if _DECIMAL_COMMA.fullmatch(token):
        return f"non-numeric value {token!r} (decimal comma? write the number with a '.')"
    shown = token if len(token) <= 40 else token[:37] + "..."
    return f"non-numeric value {shown!r}"


def _decompress_gzip(upload: Upload, max_bytes: int) -> bytes:
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decoder.decompress(upload.data, max_bytes + 1)
    except zlib.error as err:
        raise ValueError(f"{upload.name}: damaged gzip data ({err})") from None
    if len(data) > max_bytes:
        raise ValueError(
            f"{upload.name}: decompresses to more than the limit of {max_bytes:,} bytes "
            f"(max_bytes)"
        )
    if not decoder.eof:
        raise ValueError(f"{upload.name}: truncated gzip data")
    return data


def _decode(upload: Upload, max_bytes: int) -> str:
    """The text of a CSV upload; ``ValueError`` for empty, binary or non-UTF-8 content."""
    name, data = upload.name, upload.data
    if data[:2] == b"\x1f\x8b":
        data = _decompress_gzip(upload, max_bytes)
    if not data.strip():
        raise ValueError(f"{name}: the file is empty")
    if data[:3] == b"\xef\xbb\xbf":
        data, encoding = data[3:], "utf-8"
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
        for magic, what in _MAGIC:
            if data.startswith(magic):
                raise ValueError(f"{name}: this is not a CSV text file; it looks like {what}")
        nul = data.find(b"\x00")
        if nul >= 0:
            raise ValueError(
                f"{name}: binary content (a NUL byte at offset {nul}), not a CSV text file"
            )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{name}: not valid {encoding.upper()} text (byte 0x{data[err.start]:02x} at "
            f"offset {err.start}, line {line}); save the file as UTF-8 CSV"
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    bad = _CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise ValueError(
            f"{name}: garbled or binary content (control character U+{ord(bad.group()):04X} "
            f"on line {line}), not a CSV text file"
        )
    if not text.strip():
        raise ValueError(f"{name}: the file is empty")
    return text


def _check_delimiter(delimiter: Any) -> str:
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\n\r" + (
        "0123456789.+-eE"
    ):
        raise ValueError(
            f"delimiter must be one character such as ',' ';' or '\\t', got {delimiter!r}"
        )
    return delimiter


def _delimiter_name(delimiter: str) -> str:
    return f"{delimiter!r} ({DELIMITERS[delimiter]})" if delimiter in DELIMITERS else repr(
        delimiter
    )


def _parse(
    upload: Upload, *, delimiter: str, max_rows: int, max_bytes: int, digest: str
) -> _Table:
    """Decode, check the structure and parse the values of one CSV upload."""
    name = upload.name
    text = _decode(upload, max_bytes)
    lines = text.split("\n")
    header_at = next(i for i, line in enumerate(lines) if line != "")
    header_line = lines[header_at]
    quoted = '"' in text
    try:
        header = next(csv.reader([header_line], delimiter=delimiter, strict=True))
    except csv.Error as err:
        raise ValueError(f"{name}, line {header_at + 1}: unreadable header ({err})") from None
    if len(header) < 2:
        seen = [d for d in DELIMITERS if d != delimiter and d in header_line]
        if seen:
            raise ValueError(
                f"{name}, line {header_at + 1}: wrong delimiter: the header uses "
                f"{_delimiter_name(seen[0])} but the expected delimiter is "
                f"{_delimiter_name(delimiter)}; pass delimiter={seen[0]!r} or save the file "
                f"with {DELIMITERS.get(delimiter, repr(delimiter))}s"
            )
        raise ValueError(
            f"{name}, line {header_at + 1}: the header has a single column "
            f"({header_line.strip()[:40]!r}); a task needs input and target columns "
            f"separated by {_delimiter_name(delimiter)}"
        )
    columns = []
    for k, raw_name in enumerate(header):
        column = raw_name.strip()
        columns.append(column if column else f"column_{k + 1}")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ValueError(f"{name}, line {header_at + 1}: duplicate column names {duplicates}")
    if all(_NUMBER.fullmatch(c) for c in columns):
        raise ValueError(
            f"{name}, line {header_at + 1}: the first line must be a header of column names, "
            f"got numbers {columns[:4]}"
        )
    n_columns = len(columns)

    # Structure: every data record has exactly n_columns fields.
    if not quoted:
        rows = [i for i in range(header_at + 1, len(lines)) if lines[i] != ""]
        if len(rows) > max_rows:
            raise _too_many_rows(name, len(rows), max_rows)
        counts = [lines[i].count(delimiter) + 1 for i in rows]
        starts = rows
    else:
        starts, counts = [], []
        reader = csv.reader(
            io.StringIO("\n".join(lines[header_at + 1 :])), delimiter=delimiter, strict=True
        )
        previous = 0
        try:
            for record in reader:
                if record:
                    starts.append(header_at + 1 + previous)
                    counts.append(len(record))
                    if len(starts) > max_rows:
                        raise _too_many_rows(name, f"more than {max_rows:,}", max_rows)
                previous = reader.line_num
        except csv.Error as err:
            raise ValueError(
                f"{name}, line {header_at + 2 + previous}: malformed quoting ({err})"
            ) from None
    if not starts:
        raise ValueError(f"{name}: the file has a header but no data rows")
    bad = next((j for j, c in enumerate(counts) if c != n_columns), None)
    if bad is not None:
        line = starts[bad] + 1
        hint = ""
        if counts[bad] > n_columns and any(
            _DECIMAL_COMMA.fullmatch(part) for part in lines[starts[bad]].split(delimiter + " ")
        ):
            hint = " (decimal commas?)"
        raise ValueError(
            f"{name}, line {line}: ragged row with {counts[bad]} fields, but the header has "
            f"{n_columns} columns {columns[:8]}{hint}"
        )

    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=0,
            index_col=False,
            na_filter=False,
            engine="c",
            low_memory=False,
            skip_blank_lines=True,
            quotechar='"',
            doublequote=True,
            comment=None,
            thousands=None,
            decimal=".",
            on_bad_lines="error",
        )
    except (pd.errors.ParserError, ValueError, OverflowError) as err:  # pragma: no cover
        raise ValueError(f"{name}: unreadable CSV ({err})") from None
    if frame.shape != (len(starts), n_columns):  # pragma: no cover - a structure check missed
        raise ValueError(
            f"{name}: could not read the file consistently ({frame.shape[0]} rows of "
            f"{frame.shape[1]} values parsed, {len(starts)} rows of {n_columns} expected)"
        )
    frame.columns = range(n_columns)
    return _Table(
        name=name,
        columns=tuple(columns),
        frame=frame,
        line_numbers=np.asarray(starts, dtype=np.int64) + 1,
        lines=lines,
        delimiter=delimiter,
        sha256=digest,
    )


def _too_many_rows(name: str, count: int | str, max_rows: int) -> ValueError:
    shown = f"{count:,}" if isinstance(count, int) else count
    return ValueError(f"{name}: {shown} data rows, more than max_rows={max_rows:,}")


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _read_table(
    source: Any, *, role: str, delimiter: str, max_rows: int, max_bytes: int
) -> _Table:
    what = f"{role} CSV file" if role else "CSV file"
    upload = read_upload(source, max_bytes=max_bytes, what=what, allow_text=True)
    digest = hashlib.sha256(upload.data).hexdigest()
    key = (upload.name, digest, delimiter, max_rows, max_bytes)
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is not None:
            _TABLES.move_to_end(key)
            return table
    table = _parse(
        upload, delimiter=delimiter, max_rows=max_rows, max_bytes=max_bytes, digest=digest
    )
    with _TABLES_LOCK:
        _TABLES[key] = table
        while len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    return table


# The last parsed files, keyed by name and content digest: an interface calls
# read_csv_columns and then from_csv on the same upload, and parsing dominates both (200,000
# rows x 10 columns, 51 MB: ~1.5 s to parse, ~0.1 s to hash).  Tables are never modified.
_TABLES: OrderedDict[tuple, _Table] = OrderedDict()
_TABLES_LOCK = threading.Lock()
_TABLES_KEPT = 2


# ----------------------------------------------------------------------------- preview
@dataclass(frozen=True)
class CsvColumns:
    """What :func:`read_csv_columns` found in a CSV file.

    Attributes
    ----------
    name : str
        The file's name as used in messages.
    n_rows : int
        Number of data rows.
    columns : tuple of str
        All column names, in file order (empty names become ``column_<k>``).
    numeric : tuple of str
        Columns whose every value is a finite number (usable as inputs or regression target).
    problems : dict of str to str
        For every other column, why it is not numeric (line and value of the first problem).
    domain_candidates : tuple of str
        Columns with exactly two distinct values (usable as ``domain_column``).
    head : pandas.DataFrame
        The first rows, with the column names.
    delimiter : str
        The delimiter used.
    """

    name: str
    n_rows: int
    columns: tuple[str, ...]
    numeric: tuple[str, ...]
    problems: dict[str, str]
    domain_candidates: tuple[str, ...]
    head: pd.DataFrame
    delimiter: str


def read_csv_columns(
    source: Any,
    *,
    delimiter: str = ",",
    max_rows: int = 200_000,
    max_bytes: int = DEFAULT_MAX_BYTES,
    head: int = 5,
) -> CsvColumns:
    """Parse and validate a CSV file and list its columns, without building a task.

    The same reading and structural checks as :func:`from_csv` (the same ``ValueError`` for an
    empty, binary, ragged, wrongly delimited or too long file); value problems of individual
    columns are reported in ``problems`` instead of raised, since which columns will be used
    is not known yet.

    Parameters
    ----------
    source : path-like, str, bytes or file-like
        As in :func:`from_csv`.
    delimiter : str
        Field delimiter (one character).
    max_rows : int
        Largest accepted number of data rows.
    max_bytes : int
        Largest accepted file size in bytes (after gzip decompression).
    head : int
        Number of first rows to return in ``head``.

    Returns
    -------
    CsvColumns

    Examples
    --------
    >>> from ntkcore import data
    >>> info = data.read_csv_columns("x,y,site\\n0.1,1.5,a\\n0.2,1.7,b\\n")
    >>> info.numeric, info.domain_candidates
    (('x', 'y'), ('x', 'y', 'site'))
    """
    delimiter = _check_delimiter(delimiter)
    max_rows = _check_positive_int("max_rows", max_rows)
    max_bytes = _check_positive_int("max_bytes", max_bytes)
    head = _check_positive_int("head", head) if head != 0 else 0
    table = _read_table(
        source, role="", delimiter=delimiter, max_rows=max_rows, max_bytes=max_bytes
    )
    numeric, problems, candidates = [], {}, []
    for col, column in enumerate(table.columns):
        series = table.frame[col]
        _, bad = _as_float(series)
        if bad is None:
            numeric.append(column)
        else:
            line = int(table.line_numbers[bad])
            problems[column] = f"line {line}: {_describe(table.token(bad, col))}"
        if series.nunique(dropna=False) == 2:
            candidates.append(column)
    frame = table.frame.head(head).copy()
    frame.columns = list(table.columns)
    return CsvColumns(
        name=table.name,
        n_rows=table.n_rows,
        columns=table.columns,
        numeric=tuple(numeric),
        problems=problems,
        domain_candidates=tuple(candidates),
        head=frame,
        delimiter=delimiter,
    )


# ----------------------------------------------------------------------------- building
def _check_column_name(what: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a column name (a non-empty str) or None, got {value!r}")
    return value.strip()


def _check_x_columns(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"x_columns must be a list of column names or None, got {value!r}")
    names = tuple(_check_column_name("each x_columns entry", v) for v in value)
    if not names:
        raise ValueError("x_columns must name at least one column")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ValueError(f"x_columns lists {duplicates} more than once")
    return names  # type: ignore[return-value]


def _require_columns(table: _Table, wanted: Sequence[str], what: str) -> None:
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise ValueError(
            f"{table.name}: missing {what} column(s) {missing}; the file has columns "
            f"{list(table.columns)}"
        )


def _order_domains(values: np.ndarray) -> tuple[Any, Any]:
    """(source value, target value) of a two-valued domain column."""
    first, second = values[0], values[1]
    words = [str(v).strip().lower() for v in (first, second)]
    if words[0] in _TARGET_WORDS and words[1] in _SOURCE_WORDS:
        return second, first
    return first, second


def _split_domains(table: _Table, domain_column: str) -> tuple[np.ndarray, np.ndarray, dict]:
    labels = table.labels(domain_column)
    unique = np.unique(labels)
    if unique.size != 2:
        shown = [_plain(v) for v in unique[:6]]
        more = " ..." if unique.size > 6 else ""
        raise ValueError(
            f"{table.name}: the domain column {domain_column!r} must hold exactly two values "
            f"(source and target), found {unique.size}: {shown}{more}"
        )
    source_value, target_value = _order_domains(unique)
    source_rows = np.flatnonzero(labels == source_value)
    target_rows = np.flatnonzero(labels == target_value)
    domains = {"source": _plain(source_value), "target": _plain(target_value)}
    return source_rows, target_rows, domains


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_rows(name: str, rows: int, domain: str, need: int = 2) -> None:
    if rows < need:
        raise ValueError(
            f"{name}: the {domain} domain has {rows} row(s); at least {need} are needed"
        )


def _standardisation(
    values: np.ndarray, columns: Sequence[str], fitted_on: str, table: _Table, role: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per column; ``ValueError`` for constant columns."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = values.mean(axis=0)
        std = values.std(axis=0)
    for k, column in enumerate(columns):
        if not (np.isfinite(mean[k]) and np.isfinite(std[k])):
            raise ValueError(
                f"{table.name}: column {column!r} has values too large to standardise "
                f"(|value| up to {np.abs(values[:, k]).max():.3g})"
            )
        if std[k] == 0 or std[k] <= 1e-12 * abs(mean[k]):
            advice = "leave it out of x_columns" if role == "input" else "pick another y_column"
            raise ValueError(
                f"{table.name}: {role} column {column!r} is constant in the {fitted_on} data "
                f"(value {values[0, k]:.6g}); it carries no information: {advice}"
            )
    return mean, std


def _to_tensor(
    values: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype: torch.dtype,
    columns: Sequence[str], where: str,
) -> torch.Tensor:
    scaled = (values - mean) / std
    out = torch.as_tensor(scaled, dtype=dtype)
    if not bool(torch.isfinite(out).all()):
        k = int(np.flatnonzero(~np.isfinite(out.double().numpy()).all(axis=0))[0])
        raise ValueError(
            f"{where}: column {columns[k]!r} lies too many standard deviations from the "
            f"standardisation mean to be represented in {dtype}"
        )
    return out


def from_csv(
    source: Any,
    target: Any = None,
    *,
    x_columns: Sequence[str] | None = None,
    y_column: str | None = None,
    domain_column: str | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_rows: int = 200_000,
    kind: str = "regression",
    delimiter: str = ",",
    max_bytes: int = DEFAULT_MAX_BYTES,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """Build a :class:`~ntkcore.data.Task` from your own CSV data (Algorithm 1's source/target).

    Parameters
    ----------
    source : path-like, str, bytes or file-like
        The CSV file: a path; its content as ``bytes`` or as a ``str`` containing a newline (a
        ``str`` without one is a path); or an object with ``read()`` returning bytes or text
        (an open file, ``io.BytesIO``/``io.StringIO``, Streamlit's ``UploadedFile``).  The first
        line is a header of column names.  With ``target`` given, this file is the source
        domain; with ``domain_column`` given, its rows are split by that column; otherwise it
        is target data only and the task has no source (``task.has_source`` is ``False``).
    target : path-like, str, bytes or file-like, optional
        A second file with the target domain's rows (same columns as ``source``).
    x_columns : list of str, optional
        Input columns; default every column except ``y_column`` and ``domain_column``.
    y_column : str, optional
        Target column; default the last column other than ``domain_column``.
    domain_column : str, optional
        A column with exactly two values.  Values named ``source``/``src``/``train`` and
        ``target``/``tgt``/``test`` are matched by name; otherwise the smaller value (sorted)
        is the source and the larger the target (``0``/``1``: 1 is the target).  The mapping is
        recorded in ``task.meta.extra["domains"]``.
    test_fraction : float
        Fraction of the target rows held out as the test split (at least one row each for the
        adaptation pool and the test set), in (0, 1).
    seed : int
        Seed of the random order of the target rows (pool order and test selection).
    max_rows : int
        Largest accepted number of data rows per file.
    kind : {"regression", "classification"}
        ``regression``: ``y_column`` is a number, standardised like the inputs.
        ``classification``: ``y_column`` holds class labels (integers or names), mapped to
        ``0..K-1`` in sorted order (``task.meta.extra["classes"]``).
    delimiter : str
        Field delimiter; a file using another common one (``;``, tab, ``|``) is refused with a
        message naming the delimiter it uses.
    max_bytes : int
        Largest accepted file size in bytes (checked before reading; after decompression for
        gzip files).
    dtype : torch.dtype
        Floating-point dtype of the tensors.

    Returns
    -------
    Task
        Inputs of shape ``(n, len(x_columns))`` standardised with the source rows' mean and
        standard deviation (the target pool's for target-only data), regression targets of
        shape ``(n, 1)`` standardised the same way; ``meta.transform`` holds ``x_mean``,
        ``x_std``, ``y_mean``, ``y_std`` (``value = z * std + mean``) and ``meta.extra`` the
        file names, SHA-256 digests, the domain mapping and the 1-based file line of every row
        of every split (``source_lines``, ``target_lines``, ``test_lines``).

    Raises
    ------
    ValueError
        Naming the file, line and column: empty input; a header without data rows; a wrong
        delimiter; ragged rows; empty fields; non-numeric values; NaN or infinite values or
        values that overflow float64; missing columns; a domain column without exactly two
        values; fewer than two rows in a domain; constant input (or regression target)
        columns; binary, garbled or non-UTF-8 files; more than ``max_rows`` rows or more than
        ``max_bytes`` bytes; invalid options.

    Examples
    --------
    >>> from ntkcore import data
    >>> text = "x,y,domain\\n" + "".join(
    ...     f"{i / 10},{(i / 10) ** 2},{'source' if i < 6 else 'target'}\\n" for i in range(12)
    ... )
    >>> task = data.from_csv(text, domain_column="domain", test_fraction=0.5)
    >>> task.sizes
    {'source': 6, 'target': 3, 'test': 3}
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    delimiter = _check_delimiter(delimiter)
    max_rows = _check_positive_int("max_rows", max_rows)
    max_bytes = _check_positive_int("max_bytes", max_bytes)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float | np.floating)
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    x_names = _check_x_columns(x_columns)
    y_name = _check_column_name("y_column", y_column)
    domain_name = _check_column_name("domain_column", domain_column)
    if target is not None and domain_name is not None:
        raise ValueError(
            "pass either a target file or a domain_column (to split one file), not both"
        )

    read = dict(delimiter=delimiter, max_rows=max_rows, max_bytes=max_bytes)
    role = "source" if target is not None or domain_name is not None else "target"
    first = _read_table(source, role=role if target is not None else "", **read)
    second = _read_table(target, role="target", **read) if target is not None else None

    if domain_name is not None:
        _require_columns(first, [domain_name], "domain")
    excluded = {domain_name} if domain_name is not None else set()
    if y_name is None:
        candidates = [c for c in first.columns if c not in excluded and c not in (x_names or ())]
        if not candidates:
            raise ValueError(f"{first.name}: no column left for the target y_column")
        y_name = candidates[-1]
    if x_names is None:
        x_names = tuple(c for c in first.columns if c not in excluded and c != y_name)
        if not x_names:
            raise ValueError(
                f"{first.name}: no input columns left besides the target {y_name!r}"
                + (f" and the domain column {domain_name!r}" if domain_name else "")
            )
    if y_name in x_names:
        raise ValueError(f"y_column {y_name!r} is also listed in x_columns")
    if domain_name is not None and (domain_name == y_name or domain_name in x_names):
        raise ValueError(f"domain_column {domain_name!r} is also used as an input or target")
    tables = [first] if second is None else [first, second]
    for table in tables:
        _require_columns(table, list(x_names), "input")
        _require_columns(table, [y_name], "target")

    def columns_of(table: _Table) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([table.numeric(c) for c in x_names], axis=1)  # shape: (n, d)
        y = table.numeric(y_name) if kind == "regression" else table.labels(y_name)
        return x, y

    x_first, y_first = columns_of(first)
    domains: dict[str, Any] = {}
    files = {"source" if role == "source" else "target": first.name}
    digests = {"source" if role == "source" else "target": first.sha256}
    # Each domain: (table, x, y, row indices into the table).
    if second is not None:
        x_second, y_second = columns_of(second)
        src = (first, x_first, y_first, np.arange(first.n_rows))
        tgt = (second, x_second, y_second, np.arange(second.n_rows))
        files["target"], digests["target"] = second.name, second.sha256
    elif domain_name is not None:
        source_rows, target_rows, domains = _split_domains(first, domain_name)
        src = (first, x_first[source_rows], y_first[source_rows], source_rows)
        tgt = (first, x_first[target_rows], y_first[target_rows], target_rows)
    else:
        src = None
        tgt = (first, x_first, y_first, np.arange(first.n_rows))

    if src is not None:
        _check_rows(src[0].name, len(src[3]), "source")
    _check_rows(tgt[0].name, len(tgt[3]), "target")

    n_target = len(tgt[3])
    n_test = min(max(1, int(round(float(test_fraction) * n_target))), n_target - 1)
    order = np.random.default_rng(int(seed)).permutation(n_target)
    pool_idx, test_idx = order[n_test:], np.sort(order[:n_test])

    fit_table, fit_x, fit_y, fitted_on = (
        (src[0], src[1], src[2], "source")
        if src is not None
        else (tgt[0], tgt[1][pool_idx], tgt[2][pool_idx], "target pool")
    )
    x_mean, x_std = _standardisation(fit_x, x_names, fitted_on, fit_table, "input")
    transform: dict[str, Any] = {
        "x_columns": tuple(x_names),
        "x_mean": x_mean.tolist(),
        "x_std": x_std.tolist(),
        "fitted_on": fitted_on,
    }
    extra: dict[str, Any] = {"files": files, "sha256": digests, "source_absent": src is None}
    if kind == "regression":
        y_mean, y_std = _standardisation(fit_y[:, None], [y_name], fitted_on, fit_table, "target")
        transform.update(y_column=y_name, y_mean=float(y_mean[0]), y_std=float(y_std[0]))
        num_classes, output_dim = None, 1

        def targets(y: np.ndarray, where: str) -> torch.Tensor:
            return _to_tensor(y[:, None], y_mean, y_std, dtype, [y_name], where)
    else:
        classes = np.unique(np.concatenate([d[2] for d in (src, tgt) if d is not None]))
        if classes.size < 2:
            raise ValueError(
                f"{first.name}: classification needs at least two classes in {y_name!r}, "
                f"found {[_plain(c) for c in classes]}"
            )
        extra["classes"] = [_plain(c) for c in classes]
        transform["y_column"] = y_name
        num_classes = output_dim = int(classes.size)

        def targets(y: np.ndarray, where: str) -> torch.Tensor:
            return torch.as_tensor(np.searchsorted(classes, y), dtype=torch.int64)

    def split(table: _Table, x: np.ndarray, y: np.ndarray, what: str):
        where = f"{table.name} ({what})"
        return (
            _to_tensor(x, x_mean, x_std, dtype, x_names, where),
            targets(y, where),
        )

    tgt_table, tgt_x, tgt_y, tgt_rows = tgt
    pool = split(tgt_table, tgt_x[pool_idx], tgt_y[pool_idx], "target pool")
    test = split(tgt_table, tgt_x[test_idx], tgt_y[test_idx], "target test")
    source_pair = split(*src[:3], "source") if src is not None else None
    extra["target_lines"] = torch.as_tensor(tgt_table.line_numbers[tgt_rows[pool_idx]])
    extra["test_lines"] = torch.as_tensor(tgt_table.line_numbers[tgt_rows[test_idx]])
    if src is not None:
        extra["source_lines"] = torch.as_tensor(src[0].line_numbers[src[3]])
    if domains:
        extra["domain_column"] = domain_name
        extra["domains"] = domains

    if second is not None:
        layout = f"source file {first.name}, target file {second.name}"
    elif domain_name is not None:
        layout = (
            f"{first.name} split by {domain_name!r} (source = {domains['source']!r}, "
            f"target = {domains['target']!r})"
        )
    else:
        layout = f"{first.name}, target data only (no source data)"
    meta = TaskMeta(
        name="csv",
        description=(
            f"Your data ({layout}): {list(x_names)} -> {y_name!r} ({kind}). Inputs"
            + (" and targets" if kind == "regression" else "")
            + f" are standardised with the {fitted_on} statistics."
        ),
        kind=kind,
        input_shape=(len(x_names),),
        output_dim=output_dim,
        num_classes=num_classes,
        citation="",
        provenance=f"uploaded CSV: {layout}",
        params={
            "x_columns": list(x_names),
            "y_column": y_name,
            "domain_column": domain_name,
            "test_fraction": float(test_fraction),
            "seed": int(seed),
            "kind": kind,
            "delimiter": delimiter,
        },
        transform=transform,
        extra=extra,
    )
    return Task(source=source_pair, target=pool, test=test, meta=meta)
