"""Feedback into the last layer (docs/spec.md §2 step 3). No loss is computed."""

import tensorflow as tf

__all__ = ["apply_feedback", "softmax_error", "pm1_targets", "pm1_from_one_hot"]


def apply_feedback(a_last, targets, mode="target"):
    """Write the teaching signal into state 1 of the last layer.

    ``a_last``: ``[*P, k, B, n_L]`` (the internal layout); ``targets``: ``[*P', B, n_L]``
    (±1 one-hot by default; broadcast over population axes).

    * ``"target"``: state 0 keeps the prediction, state 1 := target, states ≥ 2 := 0;
    * ``"error"``: state 1 := (state 0 − target) ⊙ state 1, states ≥ 2 := 0 (the gradient of
      ½‖state 0 − target‖²);
    * ``"softmax"``: state 1 := (softmax(state 0) − (target + 1)/2) ⊙ state 1, states ≥ 2 := 0
      (the gradient of the softmax cross-entropy of the logits state 0; ``(target + 1)/2`` is the
      0/1 one-hot of the ±1 targets).
    """
    targets = tf.cast(targets, a_last.dtype)
    pred = a_last[..., :1, :, :]
    targets = targets[..., None, :, :]
    if mode == "target":
        signal = targets + tf.zeros_like(pred)
    elif mode == "error":
        signal = (pred - targets) * a_last[..., 1:2, :, :]
    elif mode == "softmax":
        signal = softmax_error(pred, targets) * a_last[..., 1:2, :, :]
    else:
        raise ValueError(f"Unknown feedback mode {mode!r}; expected 'target', 'error' or "
                         "'softmax'.")
    rest = tf.zeros_like(a_last[..., 2:, :, :])
    return tf.concat([pred, signal, rest], axis=-3)


def softmax_error(logits, targets):
    """softmax(logits) − one-hot over the last axis; ``targets`` ±1 one-hot."""
    return tf.nn.softmax(logits, axis=-1) - 0.5 * (targets + 1.0)


def pm1_targets(labels, num_classes, dtype=tf.float32):
    """Integer labels -> ±1 one-hot targets: +1 for the true class, −1 for the others."""
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes, on_value=1.0, off_value=-1.0,
                      dtype=dtype)


def pm1_from_one_hot(one_hot):
    """0/1 one-hot rows -> ±1 targets (the same encoding as ``pm1_targets``)."""
    return 2.0 * one_hot - 1.0
