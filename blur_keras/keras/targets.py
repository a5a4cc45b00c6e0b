"""How ``BlurModel`` turns labels into the feedback targets of the inner step.

``targets`` names the encoding (``BlurModel(targets=...)``): ``"pm1"`` (±1 one-hot,
docs/spec.md §2 step 3), ``"one_hot"`` (0/1 one-hot) or ``"raw"`` (``y`` as given). The
first two take integer labels ``[B]`` / ``[B, 1]`` or one-hot rows ``[B, C]``.
"""

import tensorflow as tf

from blur_keras.core.feedback import pm1_from_one_hot, pm1_targets

__all__ = ["TARGET_ENCODINGS", "check_encoding", "class_labels", "encode_targets",
           "feedback_loss"]

TARGET_ENCODINGS = ("pm1", "one_hot", "raw")


def check_encoding(targets):
    """Error at the door for ``BlurModel(targets=...)``."""
    if targets not in TARGET_ENCODINGS:
        raise ValueError(f"targets={targets!r}; expected one of {list(TARGET_ENCODINGS)}.")


def class_labels(y, targets, num_classes):
    """Integer-label view of the tensor ``y`` (``[B]``), or None for one-hot / raw targets."""
    if targets == "raw":
        return None
    if len(y.shape) == 2 and y.shape[-1] == 1 and num_classes > 1:
        return y[:, 0]
    return y if len(y.shape) == 1 else None


def encode_targets(y, targets, num_classes, dtype):
    """Labels (integer ``[B]``/``[B, 1]`` or one-hot ``[B, C]``) to feedback targets ``[B, C]``."""
    y = tf.convert_to_tensor(y)
    if targets == "raw":
        return tf.cast(y, dtype)
    labels = class_labels(y, targets, num_classes)
    if labels is not None and targets == "pm1":
        return pm1_targets(labels, num_classes, dtype)
    if labels is not None:
        return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=dtype)
    if len(y.shape) != 2 or y.shape[-1] != num_classes:
        raise ValueError(f"Labels must be integers [batch] or one-hot [batch, {num_classes}]; "
                         f"got shape {tuple(y.shape)}.")
    one_hot = tf.cast(y, dtype)
    return pm1_from_one_hot(one_hot) if targets == "pm1" else one_hot


def feedback_loss(prediction, encoded, feedback):
    """Per example, the loss whose gradient the feedback writes into the last layer: the
    softmax cross-entropy for ``feedback="softmax"`` (``encoded``: ±1 one-hot), else the mean
    squared distance from the prediction to the target."""
    if feedback == "softmax":
        return tf.nn.softmax_cross_entropy_with_logits(0.5 * (encoded + 1.0), prediction)
    return tf.reduce_mean(tf.square(prediction - encoded), axis=-1)
