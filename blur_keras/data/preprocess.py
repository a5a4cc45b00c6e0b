"""Preprocessing the paper uses: scale to [0, 1], centre crop, resize, flatten, class subsets,
±1 targets.

All functions take NumPy arrays (or tensors, where noted) and are deterministic. Image arrays are
``[N, H, W]``; flattened features are ``[N, H * W]`` in row-major order.
"""

import numpy as np
import tensorflow as tf

from blur_keras.core.feedback import pm1_targets

__all__ = [
    "center_crop",
    "flatten",
    "parse_classes",
    "preprocess_images",
    "resize",
    "scale01",
    "select_classes",
    "to_pm1_targets",
]


def scale01(images):
    """uint8 pixels ``0..255`` to float32 ``[0, 1]`` (``x / 255``)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def center_crop(images, size):
    """The central ``size x size`` window of ``[N, H, W]`` images (offset ``(H - size) // 2``)."""
    images = np.asarray(images)
    h, w = images.shape[-2:]
    if not 0 < size <= min(h, w):
        raise ValueError(f"crop size {size} does not fit images of size {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


def resize(images, size, method="bilinear", chunk=16384):
    """Resizes float ``[N, H, W]`` images to ``[N, size, size]`` with ``tf.image.resize``.

    ``method="bilinear"`` (default, no antialiasing, half-pixel centres: 20→10 averages each 2x2
    block exactly) or any other ``tf.image.resize`` method (``"area"`` averages over each output
    pixel's footprint). A resize to the same size is the identity.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.shape[-2:] == (size, size):
        return images
    out = []
    with tf.device("/CPU:0"):
        for start in range(0, len(images), chunk):
            part = tf.convert_to_tensor(images[start:start + chunk, :, :, None])
            out.append(tf.image.resize(part, [size, size], method=method).numpy()[..., 0])
    if not out:
        return np.zeros((0, size, size), np.float32)
    return np.concatenate(out, axis=0)


def flatten(images):
    """``[N, H, W]`` → ``[N, H * W]`` (row-major)."""
    images = np.asarray(images)
    return images.reshape(images.shape[0], -1)


def preprocess_images(images, crop=None, resolution=28, method="bilinear"):
    """uint8 ``[N, 28, 28]`` → float32 ``[N, resolution²]``: scale to [0, 1], centre crop, resize,
    flatten."""
    x = scale01(images)
    if crop is not None:
        x = center_crop(x, crop)
    x = resize(x, resolution, method=method)
    return flatten(x)


def parse_classes(classes):
    """Normalises a class subset: ``None`` (all), an iterable of ints, a ``range``, or a string
    ``"0-4"`` / ``"10-19"`` (inclusive ranges) / ``"1,3,5"``. Order is kept: it defines the
    remapping."""
    if classes is None:
        return None
    if isinstance(classes, str):
        out = []
        for part in classes.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        classes = out
    elif isinstance(classes, (int, np.integer)):
        classes = [int(classes)]
    result = tuple(int(c) for c in classes)
    if not result:
        raise ValueError("a class subset must name at least one class")
    if len(set(result)) != len(result):
        raise ValueError(f"class subset {result} repeats a class")
    return result


def select_classes(x, y, classes, num_classes=None):
    """Keeps the examples whose label is in ``classes`` and remaps labels to ``0..len(classes)-1``
    in the order given (``classes=(5, 6, 7, 8, 9)``: 5→0, …, 9→4). ``classes=None`` keeps
    all."""
    x, y = np.asarray(x), np.asarray(y)
    subset = parse_classes(classes)
    if subset is None:
        return x, y
    if num_classes is not None:
        bad = [c for c in subset if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"classes {bad} are outside 0..{num_classes - 1}")
    lookup = np.full(max(int(y.max(initial=0)), max(subset)) + 1, -1, np.int64)
    lookup[list(subset)] = np.arange(len(subset))
    new = lookup[y]
    keep = new >= 0
    return x[keep], new[keep].astype(y.dtype)


def to_pm1_targets(labels, num_classes):
    """±1 one-hot targets (docs/spec.md §2 step 3): ``+1`` for the true class, ``-1`` for
    the others.

    Works on tensors (returns a float32 tensor) and NumPy arrays (returns float32 NumPy); the
    encoding itself is ``blur_keras.core.feedback.pm1_targets``.
    """
    if tf.is_tensor(labels):
        return pm1_targets(labels, num_classes)
    return pm1_targets(np.asarray(labels), num_classes).numpy()
