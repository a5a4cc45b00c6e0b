"""A meta-batch: the entries a meta-step reads, and their species and replica axes.

``train_x [T, S, R, B, F]``, ``train_y [T, S, R, B]`` (T inner steps) and
``query_x [S, R, Q, F]``, ``query_y [S, R, Q]``; a stream may carry more
(e.g. ``species_first``), which ``meta_batch`` leaves out.
"""

import tensorflow as tf

__all__ = ["BATCH_AXES", "BATCH_KEYS", "meta_batch"]

# (species axis, replica axis) of the batch entries a meta-step reads
BATCH_AXES = {"train_x": (1, 2), "train_y": (1, 2), "query_x": (0, 1), "query_y": (0, 1)}
BATCH_KEYS = tuple(BATCH_AXES)


def meta_batch(batch, as_tensors=False):
    """The entries of ``batch`` a meta-step reads (as tensors with ``as_tensors``)."""
    return {k: tf.convert_to_tensor(batch[k]) if as_tensors else batch[k] for k in BATCH_KEYS}
