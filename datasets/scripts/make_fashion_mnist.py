"""Produce ``datasets/fashion_mnist_5k.npz``: 500 images per class of Fashion-MNIST (train).

Run once, never at run time.  The full data set comes from Debian's ``dataset-fashion-mnist``
package (``apt-get install dataset-fashion-mnist``), which installs the original IDX files of
Xiao et al. (2017) under ``/usr/share/datasets/fashion-mnist/``::

    python3 datasets/scripts/make_fashion_mnist.py   # needs numpy only

Selection: for each class 0..9, the first 500 images of that class in the training file's order
(so the slice is balanced like the MNIST sample and fully determined by the upstream file).
Output arrays: ``images`` uint8 (5000, 28, 28), ``labels`` uint8 (5000,), in training-file order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from _common import DATASETS_DIR, report, save_npz

SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
PER_CLASS = 500


def _read_idx(path: Path, magic: int, header_ints: int) -> tuple[list[int], np.ndarray]:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    header = np.frombuffer(raw[: 4 * header_ints], dtype=">i4").tolist()
    if header[0] != magic:
        raise SystemExit(f"{path}: bad magic {header[0]} (expected {magic})")
    return header, np.frombuffer(raw[4 * header_ints :], dtype=np.uint8)


def main() -> None:
    header, pixels = _read_idx(SOURCE_DIR / "train-images-idx3-ubyte.gz", 2051, 4)
    _, n_rows, n_cols = header[1:]
    images = pixels.reshape(header[1], n_rows, n_cols)
    _, labels = _read_idx(SOURCE_DIR / "train-labels-idx1-ubyte.gz", 2049, 2)
    if images.shape != (60000, 28, 28) or labels.shape != (60000,):
        raise SystemExit(f"unexpected shapes {images.shape}, {labels.shape}")
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)]))
    out = DATASETS_DIR / "fashion_mnist_5k.npz"
    save_npz(out, images=images[keep], labels=labels[keep])
    report(out)


if __name__ == "__main__":
    main()
