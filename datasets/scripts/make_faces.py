"""Produce ``datasets/lfw_faces_25.npz`` and ``datasets/digits_8x8.npz`` (pose-task images).

Run once in a throw-away environment, never at run time::

    python -m venv /tmp/genv && /tmp/genv/bin/pip install scikit-image==0.26.0 \
        scikit-learn==1.9.1 numpy
    /tmp/genv/bin/python datasets/scripts/make_faces.py

``lfw_faces_25.npz``: the 100 face crops (25 x 25, grey) of ``skimage.data.lfw_subset()``
(its first 100 images; the other 100 are non-face background crops and are dropped), quantised
to uint8 as ``round(255 * value)``.  Array ``images`` uint8 (100, 25, 25).

``digits_8x8.npz``: scikit-learn's bundled copy of the UCI optical-recognition digits (test
part, 1,797 images of 8 x 8 pixels with counts 0..16).  Arrays ``images`` uint8 (1797, 8, 8)
and ``labels`` uint8 (1797,).
"""

from __future__ import annotations

import numpy as np
from _common import DATASETS_DIR, report, save_npz


def main() -> None:
    import skimage.data
    import sklearn.datasets

    faces = np.asarray(skimage.data.lfw_subset(), dtype=np.float64)[:100]
    if faces.shape != (100, 25, 25) or faces.min() < 0 or faces.max() > 1:
        raise SystemExit(f"unexpected lfw_subset content: {faces.shape}")
    out = DATASETS_DIR / "lfw_faces_25.npz"
    save_npz(out, images=np.round(255.0 * faces).astype(np.uint8))
    report(out)

    digits = sklearn.datasets.load_digits()
    images = np.asarray(digits.images)
    if images.shape != (1797, 8, 8) or not np.array_equal(images, np.round(images)):
        raise SystemExit(f"unexpected digits content: {images.shape}")
    out = DATASETS_DIR / "digits_8x8.npz"
    save_npz(out, images=images.astype(np.uint8), labels=np.asarray(digits.target, np.uint8))
    report(out)


if __name__ == "__main__":
    main()
