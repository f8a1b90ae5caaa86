"""Helpers shared by the dataset generation scripts: byte-reproducible writers and checksums.

The scripts in this folder are run by hand, once, in a throw-away environment that has the
upstream packages installed (see ``datasets/SOURCES.md``).  Their outputs are committed and
read at run time by :mod:`ntkcore.data`, which never needs these packages.  Writers here fix
every timestamp so that rerunning a script reproduces the shipped file bit for bit (and so its
SHA-256).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

DATASETS_DIR = Path(__file__).resolve().parents[1]

#: Fixed archive timestamp (the earliest a zip file can store) for reproducible bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` as a compressed ``.npz`` with fixed timestamps and no pickled objects."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            array = np.ascontiguousarray(arrays[key])
            if array.dtype.hasobject:
                raise ValueError(f"array {key!r} has dtype object; refusing to pickle")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue(), compresslevel=9)


def save_csv_gz(path: Path, text: str) -> None:
    """Write ``text`` gzip-compressed with mtime 0 and no file name in the header."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(text.encode("utf-8"))


def sha256(path: Path) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def report(path: Path) -> None:
    """Print the file name, size and SHA-256 (to paste into SOURCES.md and the loader)."""
    print(f"{path.name}  {path.stat().st_size} bytes  sha256 {sha256(path)}")
