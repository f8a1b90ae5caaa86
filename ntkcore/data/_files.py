"""Verified, cached access to the data files shipped in the repository's ``datasets/`` folder.

Every file is checked against the SHA-256 recorded in :data:`CHECKSUMS` (the same digests are
listed in ``datasets/SOURCES.md``) before it is parsed; a mismatch raises
:class:`DatasetIntegrityError`.  Parsed arrays are cached in-process (the app reloads tasks
interactively) and returned read-only so that no caller can corrupt the cache.  Only
``numpy.load(..., allow_pickle=False)`` and a CSV parser are used: nothing is unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

ENV_VAR = "NTKCORE_DATASETS"

#: SHA-256 of every shipped file, by file name (see ``datasets/SOURCES.md``).
CHECKSUMS: dict[str, str] = {
    "mnist_5k.npz": "63818dc867dd7ee1181196c2588842f34debadc19cc80dc16b1dc1401cbb62c4",
    "fashion_mnist_5k.npz": "1d825fa7342e2d88d835a74d521c74cfcb3ea01c2d3d6b0f71e90bf8873a924f",
    "lfw_faces_25.npz": "a3d1079290082d296a3a9ad38e7c249ed30a3f4e6b3bbe0c24a44c26f8c67e41",
    "digits_8x8.npz": "aa64e930663d6e9271e1566601d65e70236553f73ec6cb041a4ab37167cf1d04",
    "a1b_north_america_decadal.csv.gz": (
        "b1cf2ed5e504f9ddc74a22584da696764f046d4ce5b4d2cfcb91ea56f66a188c"
    ),
    "ontario_density.csv.gz": "4f238572c03a4a0871aebc1d2aa474692ab30bbe63f8084697fe04fc95ab40e4",
}


class DatasetIntegrityError(RuntimeError):
    """A shipped data file does not match its recorded SHA-256 (corrupt or modified)."""


def datasets_dir() -> Path:
    """The folder holding the shipped data files.

    ``$NTKCORE_DATASETS`` when set, otherwise the ``datasets/`` folder at the root of the
    repository that contains this package (``ntkcore/data/_files.py`` -> ``../../datasets``).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist (e.g. ``ntkcore`` was installed without its repository).
    """
    override = os.environ.get(ENV_VAR)
    folder = Path(override) if override else Path(__file__).resolve().parents[2] / "datasets"
    if not folder.is_dir():
        how = f"${ENV_VAR}={override!r}" if override else "the repository's datasets/ folder"
        raise FileNotFoundError(
            f"dataset folder not found: {folder} (from {how}). ntkcore.data reads the files "
            f"shipped in the repository's datasets/ folder; run from a checkout of the "
            f"repository or point ${ENV_VAR} at a copy of that folder."
        )
    return folder


def _read_verified(name: str) -> bytes:
    if name not in CHECKSUMS:
        raise ValueError(f"unknown data file {name!r}; shipped files: {sorted(CHECKSUMS)}")
    path = datasets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"data file missing: {path} (see datasets/SOURCES.md)")
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != CHECKSUMS[name]:
        raise DatasetIntegrityError(
            f"checksum mismatch for {path}: sha256 {digest}, expected {CHECKSUMS[name]}. "
            f"The file is corrupt or was modified; restore it from the repository or "
            f"regenerate it with the script named in datasets/SOURCES.md."
        )
    return payload


def _freeze(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


@functools.cache
def _cached_npz(folder: str, name: str) -> dict[str, np.ndarray]:
    del folder  # part of the cache key only: a different $NTKCORE_DATASETS is a different file
    with np.load(io.BytesIO(_read_verified(name)), allow_pickle=False) as archive:
        return {key: _freeze(archive[key]) for key in archive.files}


@functools.cache
def _cached_csv(folder: str, name: str) -> pd.DataFrame:
    del folder
    frame = pd.read_csv(io.BytesIO(_read_verified(name)), compression="gzip")
    return frame


def read_npz(name: str) -> dict[str, np.ndarray]:
    """Arrays of the shipped ``.npz`` file ``name`` (verified; cached; read-only arrays)."""
    return dict(_cached_npz(str(datasets_dir()), name))


def read_csv(name: str) -> pd.DataFrame:
    """The shipped gzip-compressed CSV file ``name`` as a DataFrame (verified; a fresh copy)."""
    return _cached_csv(str(datasets_dir()), name).copy()


def clear_cache() -> None:
    """Forget every parsed file (the next load re-reads and re-verifies from disk)."""
    _cached_npz.cache_clear()
    _cached_csv.cache_clear()
