"""Reading untrusted uploads: a path, bytes, text or a file-like object, with a size limit.

Shared by :func:`ntkcore.data.from_csv` and :func:`ntkcore.zoo.load_model`.  The size is checked
*before* the content is read (``os.stat`` for a path, ``.size`` or ``seek``/``tell`` for a file
object such as Streamlit's ``UploadedFile``), and never more than ``max_bytes + 1`` bytes are
read, so an oversized upload costs no memory.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Upload", "UploadTooLarge", "check_max_bytes", "read_upload"]


@dataclass(frozen=True)
class Upload:
    """The bytes of one upload and the name to use for it in messages."""

    name: str
    data: bytes


def check_max_bytes(max_bytes: Any) -> int:
    """``max_bytes`` as a positive int, or a ``ValueError``."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    return max_bytes


class UploadTooLarge(ValueError):
    """The upload exceeds ``max_bytes``."""


def _too_large(name: str, size: int, max_bytes: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"{name}: the file has {size:,} bytes, more than the limit of {max_bytes:,} bytes "
        f"(max_bytes)"
    )


def _display_name(raw: Any, default: str) -> str:
    if isinstance(raw, str | os.PathLike) and str(raw):
        return repr(Path(os.fspath(raw)).name)
    return default


def read_upload(
    source: Any, *, max_bytes: int, what: str = "file", allow_text: bool = False
) -> Upload:
    """Read ``source`` into bytes, refusing anything larger than ``max_bytes``.

    Parameters
    ----------
    source : path-like, str, bytes, or file-like
        A path (``str`` or ``os.PathLike``); raw ``bytes``/``bytearray``/``memoryview``; an
        object with ``read()`` returning bytes or text (an open file, ``io.BytesIO``,
        ``io.StringIO``, Streamlit's ``UploadedFile``: read from the start, size taken from
        ``.size`` or by seeking); with ``allow_text``, a ``str`` containing a newline is the
        content itself rather than a path.
    max_bytes : int
        Largest accepted size in bytes (text is counted UTF-8 encoded).
    what : str
        What the content is, for messages ("CSV file", "model file").
    allow_text : bool
        Whether a multi-line ``str`` is content (CSV text) rather than a path.

    Raises
    ------
    ValueError
        For a missing or unreadable file, a directory, an unsupported type, or content larger
        than ``max_bytes``.
    """
    max_bytes = check_max_bytes(max_bytes)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > max_bytes:
            raise _too_large(f"<{what} bytes>", len(data), max_bytes)
        return Upload(f"<{what} bytes>", data)
    if isinstance(source, str) and allow_text and ("\n" in source or "\r" in source):
        data = source.encode("utf-8", errors="surrogatepass")
        if len(data) > max_bytes:
            raise _too_large(f"<{what} text>", len(data), max_bytes)
        return Upload(f"<{what} text>", data)
    if isinstance(source, str | os.PathLike):
        return _read_path(source, max_bytes, what)
    if callable(getattr(source, "read", None)):
        return _read_file_object(source, max_bytes, what)
    kinds = "a path, bytes, a file-like object" + (" or text" if allow_text else "")
    raise ValueError(f"the {what} must be {kinds}, got {type(source).__name__}")


def _read_path(source: str | os.PathLike, max_bytes: int, what: str) -> Upload:
    try:
        path = Path(os.fspath(source))
    except TypeError as err:
        raise ValueError(f"invalid {what} path {source!r}: {err}") from None
    name = repr(path.name or str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{what} not found: {str(path)!r}") from None
    except (OSError, ValueError) as err:  # ValueError: embedded NUL in the path
        raise ValueError(f"cannot read {what} {str(path)!r}: {err}") from None
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory, not a file")
    if info.st_size > max_bytes:
        raise _too_large(name, info.st_size, max_bytes)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise ValueError(f"cannot read {what} {str(path)!r}: {err}") from None
    if len(data) > max_bytes:  # the file grew after stat
        raise _too_large(name, len(data), max_bytes)
    return Upload(name, data)


def _read_file_object(source: Any, max_bytes: int, what: str) -> Upload:
    name = _display_name(getattr(source, "name", None), f"<{what}>")
    size = getattr(source, "size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size > max_bytes:
        raise _too_large(name, size, max_bytes)
    try:
        if getattr(source, "seekable", lambda: False)():
            # Streamlit reruns hand the same UploadedFile object again: read from the start.
            end = source.seek(0, io.SEEK_END)
            source.seek(0)
            if isinstance(end, int) and end > max_bytes:
                raise _too_large(name, end, max_bytes)
        data = source.read(max_bytes + 1)
    except UploadTooLarge:
        raise
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"cannot read {what} {name}: {err}") from None
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    elif isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ValueError(
            f"{what} {name}: read() returned {type(data).__name__}, expected bytes or text"
        )
    if len(data) > max_bytes:
        raise _too_large(name, len(data), max_bytes)
    return Upload(name, data)
