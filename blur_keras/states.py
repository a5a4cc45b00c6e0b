"""The two contractions every BLUR pass is made of (docs/spec.md §2).

A 4-operand contraction ``Σ_i Σ_d a[b,i,d] ν[d,c] W[i,j,c]`` is computed as
``mix_states`` (a k×k matrix applied to the state axis) followed by
``per_state_matmul`` (one batched matmul per state/channel c).  Both broadcast
over leading population axes.
"""

import tensorflow as tf

from blur_keras import gradient

__all__ = ["mix_states", "per_state_matmul", "per_state_outer", "with_bias_neuron",
           "input_matmul", "input_outer", "input_product", "input_outer_product",
           "input_row_scale"]


def mix_states(a, m):
    """``out[..., b, i, c] = Σ_d a[..., b, i, d] m[..., d, c]``.

    ``a``: ``[*P, B, n, k]``; ``m``: ``[*P', k, k]`` with ``P'`` broadcastable
    to ``P`` (use ``genome.align_to_population`` first).

    Written as a broadcast multiply and a sum over d, not a matmul: with k ≤ 8
    states a dot with a k-long contraction runs far below peak on CPU, while
    XLA fuses this form into one elementwise loop (inner step ~2× faster).
    Its gradient is hand-derived (``gradient.mix_states_vjp``) unless traced
    under ``gradient.plain_autodiff()``.
    """
    if gradient.hand_gradients():
        return _mix_states_hand(a, m)
    return _mix(a, m)


def _mix(a, m):
    return tf.reduce_sum(a[..., :, None] * m[..., None, None, :, :], axis=-2)


@tf.custom_gradient
def _mix_states_hand(a, m):
    """``_mix`` with the hand-derived gradient."""
    return _mix(a, m), lambda dy: gradient.mix_states_vjp(a, m, dy)


def per_state_matmul(x, w):
    """``out[..., b, j, c] = Σ_i x[..., b, i, c] w[..., i, j, c]``."""
    return tf.einsum("...bic,...ijc->...bjc", x, w)


def per_state_outer(p, q, reduction="sum"):
    """``out[..., i, j, c] = Σ_b p[..., b, i, c] q[..., b, j, c]`` (or the batch mean).

    Written as explicit transposes around one batched matmul (state axis
    leading): on CPU, XLA runs this ~15% faster than the equivalent einsum.
    """
    out = _move_state_axis_last(tf.matmul(_transpose_last3(p, (2, 1, 0)),
                                          _transpose_last3(q, (2, 0, 1))))
    if reduction == "mean":
        out = out / tf.cast(tf.shape(p)[-3], out.dtype)
    return out


def input_matmul(x, w, m):
    """``per_state_matmul(mix_states(ā, m), w)`` for an input layer ``ā = [[x, 0, …, 0] ; 1]``.

    Only state 0 of the input layer is non-zero (docs/spec.md §2 step 1), so
    ``out[..., b, j, c] = m[0, c] Σ_i x[b, i] w[i, j, c] + Σ_d m[d, c] w[n, j, c]``:
    one plain matmul ``x @ w[:n]`` with ``w``'s ``(j, c)`` axes flattened (no
    transposes, no state mixing of the input), then a per-state scale and the
    bias row.  ``x``: ``[*P', B, n]``; ``w``: ``[*P, n + 1, m, k]``; ``m``:
    ``[*P'', k, k]``, all broadcastable.
    """
    xw = input_product(x, w)
    bias = tf.reduce_sum(m, axis=-2)[..., None, None, :] * w[..., -1:, :, :]  # [*P, 1, m, k]
    return m[..., None, None, 0, :] * xw + bias


def input_product(x, w):
    """``x @ w[:n]`` with ``w``'s ``(j, c)`` axes flattened: ``[*P, B, m, k]`` (no bias row)."""
    n = _dim(w, -3) - 1
    return _unflatten_last(tf.matmul(tf.cast(x, w.dtype), _flatten_last2(w[..., :n, :, :])), w)


def input_outer(x, q, m, reduction="sum"):
    """``per_state_outer(mix_states(ā, m), q, reduction)`` for ``ā = [[x, 0, …, 0] ; 1]``.

    ``out[..., i, j, c] = m[0, c] Σ_b x[b, i] q[b, j, c]`` for ``i < n`` and
    ``Σ_d m[d, c] Σ_b q[b, j, c]`` for the bias row ``i = n``: one plain matmul
    ``[x, 1]ᵀ @ q`` with ``q``'s ``(j, c)`` axes flattened, already in the
    synapses' ``[i, j, c]`` layout, then a per-row, per-state scale.
    ``x``: ``[*P', B, n]``; ``q``: ``[*P, B, m, k]``.
    """
    out = input_outer_product(x, q) * input_row_scale(m, _dim(x, -1))[..., :, None, :]
    if reduction == "mean":
        out = out / tf.cast(tf.shape(q)[-3], out.dtype)
    return out


def input_outer_product(x, q):
    """``[x, 1]ᵀ @ q`` with ``q``'s ``(j, c)`` axes flattened: ``[*P, n + 1, m, k]``."""
    x = tf.cast(x, q.dtype)
    x_bar = tf.concat([x, tf.ones_like(x[..., :1])], axis=-1)
    return _unflatten_last(tf.matmul(x_bar, _flatten_last2(q), transpose_a=True), q)


def input_row_scale(m, n):
    """``[*P, n + 1, k]``: ``m[0, c]`` on the ``n`` input rows, ``Σ_d m[d, c]`` on the bias row."""
    is_bias = tf.range(n + 1)[:, None] == n  # [n + 1, 1]
    return tf.where(is_bias, tf.reduce_sum(m, axis=-2, keepdims=True), m[..., None, 0, :])


def _dim(t, axis):
    """Axis ``axis`` of ``t``: a Python int when static, else a scalar tensor (dynamic widths)."""
    size = t.shape[axis]
    return size if size is not None else tf.shape(t)[axis]


def _flatten_last2(t):
    """``[..., a, m, k] -> [..., a, m·k]`` (a free reshape)."""
    return tf.reshape(t, tf.concat([tf.shape(t)[:-2], [_dim(t, -2) * _dim(t, -1)]], axis=0))


def _unflatten_last(t, like):
    """``[..., a, m·k] -> [..., a, m, k]`` with ``m, k`` the last two axes of ``like``."""
    return tf.reshape(t, tf.concat([tf.shape(t)[:-1], [_dim(like, -2), _dim(like, -1)]], axis=0))


def with_bias_neuron(a):
    """Append the bias neuron, whose k states are all 1: ``[..., B, n, k] -> [..., B, n+1, k]``."""
    ones = tf.ones_like(a[..., :1, :])
    return tf.concat([a, ones], axis=-2)


def _transpose_last3(x, order):
    """Permute the last three axes of ``x`` by ``order``, leading axes unchanged."""
    lead = len(x.shape) - 3
    return tf.transpose(x, list(range(lead)) + [lead + o for o in order])


def _move_state_axis_last(x):
    """``[..., c, i, j] -> [..., i, j, c]``."""
    return _transpose_last3(x, (1, 2, 0))
