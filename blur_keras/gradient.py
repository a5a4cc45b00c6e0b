"""Hand-derived gradients (vector-Jacobian products) of the inner step's primitives.

TensorFlow's autodiff of ``states.mix_states`` (written as a sum of scaled
states, which is the fast form for the forward pass) reduces k² products over
the batch and neuron axes one by one.  The hand-derived product below computes
the same numbers as one matmul over the flattened ``(b, i)`` axes.

``plain_autodiff()`` switches the hand-derived gradients off while a function
is traced (this one and that of a whole inner step, ``step_gradient``), so
that tests can compare them with TensorFlow's own; ``autodiff_step()`` only
that of the whole step (``GradientTrainer(step_gradient="autodiff")``).
"""

import contextlib

import tensorflow as tf

__all__ = ["hand_gradients", "hand_step_gradient", "plain_autodiff", "autodiff_step",
           "sum_to_shape", "mix_states_vjp"]

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


def sum_to_shape(t, shape):
    """Sum ``t`` over the axes along which a tensor of ``shape`` was broadcast to ``t``'s shape."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(t), s1=shape)
    return tf.reshape(tf.reduce_sum(t, axis=axes), shape)


def mix_states_vjp(a, m, dy):
    """Gradients of ``out[..., c, b, i] = Σ_d m[..., d, c] a[..., d, b, i]``.

    ``da[..., d, b, i] = Σ_c m[..., d, c] dy[..., c, b, i]`` (the same mix with
    ``mᵀ``, k×k work per element as the forward); ``dm[..., d, c] = Σ_{b, i}
    a[..., d, b, i] dy[..., c, b, i]``: one matmul over the flattened ``(b, i)``
    axes.  Both are summed back over the population axes that were broadcast.
    """
    k = a.shape[-3]
    mt = tf.linalg.matrix_transpose(m)
    da = tf.add_n([mt[..., d, :, None, None] * dy[..., d:d + 1, :, :] for d in range(k)])
    a_rows = tf.reshape(a, tf.concat([tf.shape(a)[:-2], [-1]], axis=0))
    dy_rows = tf.reshape(dy, tf.concat([tf.shape(dy)[:-2], [-1]], axis=0))
    dm = tf.matmul(a_rows, dy_rows, transpose_b=True)
    return sum_to_shape(da, tf.shape(a)), sum_to_shape(dm, tf.shape(m))
