"""The switches of the hand-derived gradients (vector-Jacobian products), and their helper.

The hand-derived gradients live beside their forward: ``states.mix_states_vjp``
(TensorFlow's autodiff of ``states.mix_states``, a sum of scaled states,
reduces k² products over the batch and neuron axes one by one; the hand-derived
one computes the same numbers as one matmul over the flattened ``(b, i)`` axes)
and ``step_gradient`` (a whole inner step).

``plain_autodiff()`` switches the hand-derived gradients off while a function
is traced (this one and that of a whole inner step, ``step_gradient``), so
that tests can compare them with TensorFlow's own; ``autodiff_step()`` only
that of the whole step (``GradientTrainer(step_gradient="autodiff")``).
"""

import contextlib

import tensorflow as tf

__all__ = ["hand_gradients", "hand_step_gradient", "plain_autodiff", "autodiff_step",
           "sum_to"]

_STATE = {"hand": True, "step": True}


def hand_gradients():
    """Whether the primitives trace with their hand-derived gradients (default True)."""
    return _STATE["hand"]


def hand_step_gradient():
    """Whether an inner step traces with its hand-derived gradient (default True)."""
    return _STATE["hand"] and _STATE["step"]


@contextlib.contextmanager
def _switched_off(key):
    previous = _STATE[key]
    _STATE[key] = False
    try:
        yield
    finally:
        _STATE[key] = previous


def plain_autodiff():
    """Within this block, primitives and the inner step are traced with TensorFlow's
    autodiff instead."""
    return _switched_off("hand")


def autodiff_step():
    """Within this block, the inner step is traced with TensorFlow's autodiff of its
    primitives (which keep their hand-derived gradients)."""
    return _switched_off("step")


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
