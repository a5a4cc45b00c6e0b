"""Hand-derived gradients (vector-Jacobian products) of the inner step's primitives.

TensorFlow's autodiff of ``states.mix_states`` (written as a broadcast
multiply and a sum over states, which is the fast form for the forward pass)
materialises a ``[*P, B, n, k, k]`` product and reduces it over the batch and
neuron axes with a windowed reduction: in a meta-gradient at 100-256-10, k=4
those reductions were the largest items of the profile (docs/speed.md).  The
hand-derived product below computes the same numbers as one matmul over the
flattened ``(b, i)`` axes.

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
    """Gradients of ``out[..., b, i, c] = Σ_d a[..., b, i, d] m[..., d, c]``.

    ``da[..., b, i, d] = Σ_c dy[..., b, i, c] m[..., d, c]`` (k×k work per
    element, as the forward); ``dm[..., d, c] = Σ_{b, i} a[..., b, i, d]
    dy[..., b, i, c]``: one matmul over the flattened ``(b, i)`` axes.  Both
    are summed back over the population axes that were broadcast.
    """
    da = tf.reduce_sum(dy[..., None, :] * m[..., None, None, :, :], axis=-1)
    k = a.shape[-1]
    a_rows = tf.reshape(a, tf.concat([tf.shape(a)[:-3], [-1, k]], axis=0))
    dy_rows = tf.reshape(dy, tf.concat([tf.shape(dy)[:-3], [-1, dy.shape[-1]]], axis=0))
    dm = tf.matmul(a_rows, dy_rows, transpose_a=True)
    return sum_to_shape(da, tf.shape(a)), sum_to_shape(dm, tf.shape(m))
