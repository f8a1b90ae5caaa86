"""On-disk checkpoint cache: safetensors weights plus a JSON sidecar, no pickle anywhere.

Layout, under :func:`cache_root` (``$NTKCORE_CACHE``, default ``~/.cache/ntkcore``)::

    zoo/<stem>.safetensors   tensors of the state dict (safetensors format)
    zoo/<stem>.json          metadata: cache key and key material, training record,
                             torch version, sha256 and size of the weights file

Both files are written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX and Windows), weights first and sidecar last, so the sidecar
is the commit record: an entry without a sidecar, whose weights do not match the sidecar's
checksum (for instance two processes racing to write the same entry with different bytes),
or whose tensors do not match the architecture's state dict, is reported with a
:class:`CacheCorruptionWarning`, removed, and treated as a miss.  Loading never unpickles:
the sidecar is read with ``json`` and the weights with ``safetensors.torch.load`` from the very
bytes whose checksum was verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

__all__ = [
    "ENV_VAR",
    "FORMAT_VERSION",
    "CacheCorruptionWarning",
    "CheckpointStore",
    "cache_root",
    "canonical_json",
    "digest",
]

#: Environment variable naming the cache root.
ENV_VAR = "NTKCORE_CACHE"
#: Version of the cache format and of the key material; bump it when either changes meaning.
FORMAT_VERSION = 1
_SIDECAR_MAX_BYTES = 16 * 1024 * 1024


class CacheCorruptionWarning(UserWarning):
    """A cache entry was unreadable or inconsistent and has been removed."""


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Root directory of the ntkcore cache.

    Parameters
    ----------
    override : path-like, optional
        Explicit directory; otherwise ``$NTKCORE_CACHE``, otherwise ``~/.cache/ntkcore``.
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ntkcore"


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text of ``obj``: sorted keys, no whitespace, ASCII, no NaN.

    Raises
    ------
    ValueError
        If ``obj`` is not representable in JSON (for example a tensor or a NaN).
    """
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"cache key material must be plain JSON data: {err}") from None


def digest(obj: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cache entries are readable like any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Corrupt(Exception):
    """Internal: the entry is unusable; the message says why."""


class CheckpointStore:
    """Directory of checkpoints addressed by a file stem and verified by a cache key.

    Parameters
    ----------
    root : path-like, optional
        Cache root (see :func:`cache_root`); entries live in its ``zoo`` subdirectory.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.directory = cache_root(root) / "zoo"

    def paths(self, stem: str) -> tuple[Path, Path]:
        """``(weights, sidecar)`` paths of entry ``stem``."""
        return self.directory / f"{stem}.safetensors", self.directory / f"{stem}.json"

    def contains(self, stem: str) -> bool:
        """Whether a committed entry (sidecar present) exists; its integrity is not checked."""
        return self.paths(stem)[1].is_file()

    def remove(self, stem: str) -> None:
        """Delete both files of entry ``stem`` (missing files are ignored)."""
        for path in self.paths(stem):
            path.unlink(missing_ok=True)

    def save(
        self,
        stem: str,
        key: str,
        state_dict: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Write an entry atomically and return the sidecar written.

        Parameters
        ----------
        stem : str
            File stem (letters, digits, ``-``, ``_`` and ``.`` only).
        key : str
            Cache key recorded in both files and checked on load.
        state_dict : mapping of str to torch.Tensor
            Tensors to store (copied to CPU, contiguous).
        metadata : mapping
            JSON-serializable metadata merged into the sidecar.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        weights_path, sidecar_path = self.paths(stem)
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        blob = save_safetensors(
            tensors, metadata={"ntkcore_key": key, "ntkcore_format": str(FORMAT_VERSION)}
        )
        sidecar = {
            **metadata,
            "format": FORMAT_VERSION,
            "key": key,
            "torch_version": torch.__version__,
            "weights_file": weights_path.name,
            "weights_bytes": len(blob),
            "weights_sha256": hashlib.sha256(blob).hexdigest(),
        }
        text = json.dumps(sidecar, indent=1, sort_keys=True, allow_nan=False)
        _atomic_write(weights_path, blob)
        _atomic_write(sidecar_path, text.encode("utf-8"))
        return sidecar

    def load(
        self, stem: str, key: str, expected: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Load and verify entry ``stem``.

        Parameters
        ----------
        stem : str
            File stem.
        key : str
            Expected cache key.
        expected : mapping of str to torch.Tensor
            Reference state dict (names, shapes and dtypes are compared).

        Returns
        -------
        (state_dict, sidecar) or None
            ``None`` on a miss.  A damaged entry emits :class:`CacheCorruptionWarning`, is
            removed, and also returns ``None``.
        """
        weights_path, sidecar_path = self.paths(stem)
        if not weights_path.exists() and not sidecar_path.exists():
            return None
        try:
            return self._read(weights_path, sidecar_path, key, expected)
        except _Corrupt as err:
            warnings.warn(
                f"removing corrupt cache entry {sidecar_path.with_suffix('')}: {err}; "
                "it will be rebuilt",
                CacheCorruptionWarning,
                stacklevel=3,
            )
            try:
                self.remove(stem)
            except OSError as rm_err:  # e.g. a read-only cache: the entry is skipped, not used
                warnings.warn(
                    f"could not remove {sidecar_path.with_suffix('')}: {rm_err}",
                    CacheCorruptionWarning,
                    stacklevel=3,
                )
            return None

    @staticmethod
    def _read(
        weights_path: Path, sidecar_path: Path, key: str, expected: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        try:
            if sidecar_path.stat().st_size > _SIDECAR_MAX_BYTES:
                raise _Corrupt("sidecar is implausibly large")
            sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
            blob = weights_path.read_bytes()
        except FileNotFoundError as err:
            raise _Corrupt(f"incomplete entry ({Path(err.filename).name} is missing)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _Corrupt(f"unreadable: {err}") from None
        if not isinstance(sidecar, dict):
            raise _Corrupt("sidecar is not a JSON object")
        if sidecar.get("format") != FORMAT_VERSION or sidecar.get("key") != key:
            raise _Corrupt("sidecar does not belong to this cache key or format")
        if sidecar.get("weights_bytes") != len(blob):
            raise _Corrupt(
                f"weights file has {len(blob)} bytes, sidecar says {sidecar.get('weights_bytes')}"
            )
        if sidecar.get("weights_sha256") != hashlib.sha256(blob).hexdigest():
            raise _Corrupt("weights checksum mismatch")
        try:
            tensors = load_safetensors(blob)
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise _Corrupt(f"invalid safetensors data: {err}") from None
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise _Corrupt(f"state-dict keys differ (missing {missing[:5]}, extra {extra[:5]})")
        for name, ref in expected.items():
            t = tensors[name]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise _Corrupt(
                    f"tensor {name!r} is {t.dtype}{tuple(t.shape)}, "
                    f"expected {ref.dtype}{tuple(ref.shape)}"
                )
        return tensors, sidecar
