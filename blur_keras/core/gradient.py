"""A helper of the hand-derived gradients (vector-Jacobian products): ``sum_to``.

The hand-derived gradients live beside their forward: ``states.mix_states_vjp`` (TensorFlow's
autodiff of ``states.mix_states``, a sum of scaled states, reduces k² products over the batch
and neuron axes one by one; the hand-derived one computes the same numbers as one matmul over
the flattened ``(b, i)`` axes) and ``step_reverse`` (a whole inner step, chosen by
``step.step(..., reverse="hand")``).
"""

import tensorflow as tf

__all__ = ["sum_to"]


def sum_to(t, like):
    """Sum ``t`` over the axes along which ``like`` was broadcast to ``t``'s shape.

    With static shapes the axes are found in Python, and nothing is traced when
    there are none (most calls in a meta-step).
    """
    if not (t.shape.is_fully_defined() and like.shape.is_fully_defined()):
        _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(t), s1=tf.shape(like))
        return tf.reshape(tf.reduce_sum(t, axis=axes), tf.shape(like))
    src, dst = t.shape.as_list(), like.shape.as_list()
    lead = len(src) - len(dst)
    axes = list(range(lead)) + [lead + i for i, n in enumerate(dst) if n == 1 != src[lead + i]]
    if not axes:
        return t
    return tf.reshape(tf.reduce_sum(t, axis=axes), dst)
