"""The two contractions every BLUR pass is made of (docs/spec.md §2).

The core's internal layout (``blur_keras.core.layout``): neuron states
``[*P, k, B, n]``, synapses ``[*P, k, n_src, n_dst]``.  A 4-operand contraction
``Σ_i Σ_d a[d,b,i] ν[d,c] W[c,i,j]`` is computed as ``mix_states`` (a k×k matrix
applied to the state axis) followed by ``per_state_matmul`` (one matmul per
state/channel c).  Both broadcast over leading population axes.
"""

import tensorflow as tf

from blur_keras.core import gradient
from blur_keras.core.layout import reshape_axes, unit_axes

__all__ = ["mix_states", "mix_states_vjp", "per_state_matmul", "per_state_outer",
           "with_bias_neuron", "input_matmul", "input_outer", "input_product", "input_outer_product",
           "input_row_scale", "input_drive", "input_outer_scaled", "batch_reduce",
           "state_vector"]


def state_vector(v):
    """A per-state genome vector ``[*P, k]`` broadcast against states or synapses
    ``[*P, k, ·, ·]``."""
    return unit_axes(v, 2)


def mix_states(a, m):
    """``out[..., c, b, i] = Σ_d m[..., d, c] a[..., d, b, i]``.

    ``a``: ``[*P, k, B, n]``; ``m``: ``[*P', k, k]`` with ``P'`` broadcastable
    to ``P`` (use ``genome.align_to_population`` first).

    Written as k scaled copies of the states summed, not a matmul: with k ≤ 8
    states a dot with a k-long contraction runs far below peak on CPU, while
    XLA fuses this form into one elementwise loop along the neurons.  Its
    gradient is hand-derived (``mix_states_vjp``; tested against autodiff of the formula).
    """
    return _mix_states_hand(a, m)


def _mix(a, m):
    k = a.shape[-3]
    rows = tf.unstack(m, num=k, axis=-2)  # one op each, not 2k slices in the traced graph
    parts = tf.split(a, k, axis=-3)
    return tf.add_n([state_vector(r) * part for r, part in zip(rows, parts)])


@tf.custom_gradient
def _mix_states_hand(a, m):
    """``_mix`` with the hand-derived gradient."""
    return _mix(a, m), lambda dy: mix_states_vjp(a, m, dy)


def mix_states_vjp(a, m, dy):
    """Gradients of ``out[..., c, b, i] = Σ_d m[..., d, c] a[..., d, b, i]``.

    ``da[..., d, b, i] = Σ_c m[..., d, c] dy[..., c, b, i]`` (the same mix with
    ``mᵀ``, k×k work per element as the forward); ``dm[..., d, c] = Σ_{b, i}
    a[..., d, b, i] dy[..., c, b, i]``: one matmul over the flattened ``(b, i)``
    axes.  Both are summed back over the population axes that were broadcast.
    """
    da = _mix(dy, tf.linalg.matrix_transpose(m))
    dm = tf.matmul(_flat_rows(a), _flat_rows(dy), transpose_b=True)
    return gradient.sum_to(da, a), gradient.sum_to(dm, m)


def _flat_rows(t):
    """``[..., k, B, n]`` -> ``[..., k, B·n]``."""
    return reshape_axes(t, t.shape.rank - 2, t.shape.rank, [-1])


def per_state_matmul(x, w):
    """``out[..., c, b, j] = Σ_i x[..., c, b, i] w[..., c, i, j]``: one batched matmul."""
    return tf.matmul(x, w)


def per_state_outer(p, q, reduction="sum"):
    """``out[..., c, i, j] = Σ_b p[..., c, b, i] q[..., c, b, j]`` (or the batch mean)."""
    return batch_reduce(tf.matmul(p, q, transpose_a=True), q, reduction)


def batch_reduce(t, like, reduction="sum"):
    """A sum over the batch as ``reduction`` asks: ``t`` (``"sum"``), or ``t / B`` (``"mean"``)
    with ``B`` the batch axis (``-2``) of the states ``like``."""
    if reduction == "mean":
        return t / tf.cast(tf.shape(like)[-2], t.dtype)
    return t


def input_matmul(x, w, m):
    """``per_state_matmul(mix_states(ā, m), w)`` for an input layer ``ā = [[x, 0, …, 0] ; 1]``.

    Only state 0 of the input layer is non-zero (docs/spec.md §2 step 1), so
    ``out[..., c, b, j] = m[0, c] Σ_i x[b, i] w[c, i, j] + Σ_d m[d, c] w[c, n, j]``:
    a matmul ``x @ w[c, :n]`` per state (no state mixing of the input), then a
    per-state scale and the bias row.  ``x``: ``[*P', B, n]``; ``w``:
    ``[*P, k, n + 1, m]``; ``m``: ``[*P'', k, k]``, all broadcastable.
    """
    return input_drive(input_product(x, w), w, m)


def input_drive(xw, w, m):
    """``input_matmul`` from ``xw = input_product(x, w)``: the per-state scale and bias row."""
    bias = state_vector(tf.reduce_sum(m, axis=-2)) * w[..., -1:, :]  # [*P, k, 1, m]
    return state_vector(m[..., 0, :]) * xw + bias


def input_product(x, w):
    """``x @ w[c, :n]`` for every state c: ``[*P, k, B, m]`` (no bias row)."""
    n = _dim(w, -2) - 1
    return tf.matmul(tf.cast(x, w.dtype)[..., None, :, :], w[..., :n, :])


def input_outer(x, q, m, reduction="sum"):
    """``per_state_outer(mix_states(ā, m), q, reduction)`` for ``ā = [[x, 0, …, 0] ; 1]``.

    ``out[..., c, i, j] = m[0, c] Σ_b x[b, i] q[c, b, j]`` for ``i < n`` and
    ``Σ_d m[d, c] Σ_b q[c, b, j]`` for the bias row ``i = n``: a matmul
    ``[x, 1]ᵀ @ q[c]`` per state, then a per-row, per-state scale.
    ``x``: ``[*P', B, n]``; ``q``: ``[*P, k, B, m]``.
    """
    return input_outer_scaled(input_outer_product(x, q), q, m, reduction)


def input_outer_scaled(outer, q, m, reduction="sum"):
    """``input_outer`` from ``outer = input_outer_product(x, q)``: the per-row, per-state
    scale (``input_row_scale``), then the batch reduction."""
    scale = input_row_scale(m, _dim(outer, -2) - 1)
    return batch_reduce(outer * scale[..., None], q, reduction)


def input_outer_product(x, q):
    """``[x, 1]ᵀ @ q[c]`` for every state c: ``[*P, k, n + 1, m]``."""
    x_bar = with_bias_neuron(tf.cast(x, q.dtype))
    return tf.matmul(x_bar[..., None, :, :], q, transpose_a=True)


def input_row_scale(m, n):
    """``[*P, k, n + 1]``: ``m[0, c]`` on the ``n`` input rows, ``Σ_d m[d, c]`` on the bias row."""
    is_bias = tf.range(n + 1) == n  # [n + 1]
    return tf.where(is_bias, tf.reduce_sum(m, axis=-2)[..., None], m[..., 0, :, None])


def _dim(t, axis):
    """Axis ``axis`` of ``t``: a Python int when static, else a scalar tensor (dynamic widths)."""
    size = t.shape[axis]
    return size if size is not None else tf.shape(t)[axis]


def with_bias_neuron(a):
    """Append the bias neuron, whose k states are all 1: ``[..., k, B, n] -> [..., k, B, n+1]``."""
    return tf.concat([a, tf.ones_like(a[..., :1])], axis=-1)
