"""Convolutional BLUR layer pairs: forward, backward drive, Hebbian update (docs/conv.md).

Internal layout (no population axes): neuron states of a feature map ``[k, B, H, W, C]``;
their *flat view* ``[k, B·H·W, C]`` is a dense layer's ``[k, B, n]`` with every position
counted as an example, so mixing, activation normalisation (statistics over batch and
positions), σ and feedback are the dense functions applied to it.  Synapses:
``W [k, kh·kw·c_in + 1, c_out]`` (rows ``(t, i)``, ``t = (dy, dx)`` row-major, then the
bias row), ``V [k, kh·kw·c_out, c_in]`` (rows ``(t, o)``).  ``V[c, (t, o), i]`` connects
upper neuron ``(p, o)`` to lower neuron ``(p·s + t, i)`` (the same tap as ``W[c, (t, i), o]``),
so the symmetric tie is ``V[(t, o), i] = W[(t, i), o]``.  Positions ``p·s + t`` index the
lower map zero-padded as TensorFlow pads it (``layer_specs.same_padding``).
"""

import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.backward import backward_preactivation
from blur_keras.core.feedback import apply_feedback
from blur_keras.core.layer_specs import conv_output_size, same_padding
from blur_keras.core.neurons import neuron_update, preactivation
from blur_keras.core.normalization import batch_moments, synapse_view
from blur_keras.core.states import mix_states, state_vector
from blur_keras.core.synapses import oja_coefficient, saturate, tie_channels

__all__ = ["flat_view", "mix_maps", "kernels", "backward_filters", "conv_forward_layer",
           "input_conv_forward_layer", "conv_forward_drive", "input_conv_forward_drive",
           "layer_moments", "conv_backward_drive", "backward_update", "feedback",
           "hebbian_w", "input_hebbian_w", "hebbian_v", "oja_term", "symmetric_backward",
           "sync", "update_pair", "batch_size", "input_patches"]


def flat_view(a):
    """``[k, B, H, W, C] -> [k, B·H·W, C]`` (a dense layer's ``[k, B, n]``); rank-3 states
    pass through."""
    if a.shape.rank == 3:
        return a
    return tf.reshape(a, [a.shape[0], -1, a.shape[-1]])


def _unflat(u, like):
    return u if like.shape.rank == 3 else tf.reshape(u, tf.shape(like))


def batch_size(a, dtype):
    """``B`` of states ``[k, B, …]`` as a scalar of ``dtype``."""
    return tf.cast(tf.shape(a)[1], dtype)


def mix_maps(a, m):
    """``out[c, b, h, w, i] = Σ_d m[d, c] a[d, b, h, w, i]`` (``states.mix_states`` per
    position)."""
    return _unflat(mix_states(flat_view(a), m), a)


def _geometry(spec):
    return [1, *spec.strides, 1], spec.padding.upper()


def kernels(w, spec):
    """``W [k, kh·kw·c_in + 1, c_out]`` -> the per-state filters ``[k, kh, kw, c_in, c_out]``."""
    kh, kw = spec.kernel_size
    return tf.reshape(w[:, :-1, :], [w.shape[0], kh, kw, -1, w.shape[-1]])


def backward_filters(v, spec):
    """``V [k, kh·kw·c_out, c_in]`` -> filters ``F[c, dy, dx, i, o] = V[c, (dy, dx, o), i]``,
    the forward-shaped filters whose transposed convolution is the backward pass."""
    kh, kw = spec.kernel_size
    return tf.transpose(tf.reshape(v, [v.shape[0], kh, kw, -1, v.shape[-1]]), [0, 1, 2, 4, 3])


def _bias_drive(w, m):
    """``(Σ_d m[d, c]) W[c, bias, o]`` as ``[k, 1, 1, 1, c_out]`` (the bias neuron's k states
    are all 1)."""
    return tf.reshape(state_vector(tf.reduce_sum(m, axis=-2)) * w[:, -1:, :],
                      [w.shape[0], 1, 1, 1, w.shape[-1]])


def _activate(z, current, params, config, activation, moments=None):
    """``σ(norm(f · current + η · z))`` on the flat view (``neurons.neuron_update``);
    ``moments``: tracked statistics ``[k, 1, C]`` to normalise with, or None (the batch's)."""
    u = neuron_update(None if current is None else flat_view(current), flat_view(z), params,
                      config, moments)
    return _unflat(activations.get(activation)(u), z)


def conv_forward_drive(a_below, w, params, config, spec):
    """``z[c, b, p, o] = Σ_{t, i} (Σ_d a[d, b, p·s + t, i] ν[d, c]) W[c, (t, i), o]
    + (Σ_d ν[d, c]) W[c, bias, o]``: one convolution per state c of the ν-mixed states."""
    w = synapse_view(w, params, config)
    mixed, filters = mix_maps(a_below, params["nu"]), kernels(w, spec)
    strides, padding = _geometry(spec)
    z = tf.stack([tf.nn.conv2d(mixed[c], filters[c], strides, padding)
                  for c in range(w.shape[0])])
    return z + _bias_drive(w, params["nu"])


def conv_forward_layer(a_below, w, params, config, activation, spec, moments=None):
    """New states ``σ(η · z)`` of the upper map (after a reset), ``z`` the
    ``conv_forward_drive``; ``moments``: as in ``_activate``."""
    z = conv_forward_drive(a_below, w, params, config, spec)
    return _activate(z, None, params, config, activation, moments)


def layer_moments(below, w, params, config, spec, input_layer=False):
    """The batch's mean and variance of the upper map's forward pre-activation ``η z`` over
    batch and positions, ``[k, 1, c_out]`` each: what its activation normalisation uses in
    training, and what inference tracks (``normalization.track_moments``).  ``below``: the
    input map ``x`` when ``input_layer``, else the lower states."""
    drive = input_conv_forward_drive if input_layer else conv_forward_drive
    z = drive(below, w, params, config, spec)
    return batch_moments(preactivation(None, flat_view(z), params))


def input_patches(x, spec):
    """``P[(b, p), (t, i)] = x[b, p·s + t, i]`` of the zero-padded input ``[B, H, W, c_in]``:
    ``[B·H'·W', kh·kw·c_in]``, columns in W's row order."""
    (kh, kw), (sh, sw) = spec.kernel_size, spec.strides
    (oh, bh, ah), (ow, bw, aw) = (_window(x.shape[1 + i], spec, i) for i in (0, 1))
    x = tf.pad(x, [[0, 0], [bh, ah], [bw, aw], [0, 0]])
    taps = [x[:, dy:dy + (oh - 1) * sh + 1:sh, dx:dx + (ow - 1) * sw + 1:sw, :]
            for dy in range(kh) for dx in range(kw)]
    return tf.reshape(tf.concat(taps, axis=-1), [-1, kh * kw * x.shape[-1]])


def _window(size, spec, axis):
    """``(out, before, after)`` of one spatial axis of a conv."""
    args = (size, spec.kernel_size[axis], spec.strides[axis], spec.padding)
    return (conv_output_size(*args),) + same_padding(*args)


def _input_products(x, w, spec):
    """``y[c, b, p, o] = Σ_{t, i} x[b, p·s + t, i] W[c, (t, i), o]`` ``[k, B, H', W', c_out]``."""
    k, c_out = w.shape[0], w.shape[-1]
    strides, padding = _geometry(spec)
    out = [conv_output_size(x.shape[1 + i], spec.kernel_size[i], spec.strides[i], spec.padding)
           for i in (0, 1)]
    if input_patches_fit(x, spec, k, c_out):
        y = tf.matmul(input_patches(x, spec)[None], w[:, :-1, :])  # [k, B·H'·W', c_out]
        return tf.reshape(y, [k, -1, *out, c_out])
    filters = kernels(w, spec)
    side = tf.reshape(tf.transpose(filters, [1, 2, 3, 0, 4]), [*filters.shape[1:4], k * c_out])
    y = tf.nn.conv2d(x, side, strides, padding)
    return tf.transpose(tf.reshape(y, [-1, *out, k, c_out]), [3, 0, 1, 2, 4])


def input_conv_forward_drive(x, w, params, config, spec):
    """``conv_forward_drive`` of the input layer ``a⁰ = [x, 0, …, 0]``:
    ``z[c] = ν[0, c] · Σ_{t, i} x[b, p·s + t, i] W[c, (t, i), o] + (Σ_d ν[d, c]) W[c, bias, o]``:
    one matmul of the input's patches with every state's W, or one convolution of ``x`` with
    the k filters side by side (``input_patches_fit``)."""
    w = synapse_view(w, params, config)
    y = _input_products(tf.cast(x, w.dtype), w, spec)
    z = tf.reshape(params["nu"][0, :], [w.shape[0], 1, 1, 1, 1]) * y
    return z + _bias_drive(w, params["nu"])


def input_conv_forward_layer(x, w, params, config, activation, spec, moments=None):
    """``conv_forward_layer`` for the input layer, from ``x`` alone
    (``input_conv_forward_drive``)."""
    z = input_conv_forward_drive(x, w, params, config, spec)
    return _activate(z, None, params, config, activation, moments)


def conv_backward_drive(a_above, v, params, config, spec, lower_shape):
    """``g[c, b, q, i] = Σ_{p, t: q = p·s + t} Σ_o (Σ_d a[d, b, p, o] μ[d, c]) V[c, (t, o), i]``:
    the transposed convolution of the μ-mixed upper states, per state c.  ``lower_shape``:
    ``(H, W, c_in)`` of the lower map."""
    v = synapse_view(v, params, config)
    mixed, filters = mix_maps(a_above, params["mu"]), backward_filters(v, spec)
    strides, padding = _geometry(spec)
    shape = tf.concat([tf.shape(a_above)[1:2], list(lower_shape)], 0)
    return tf.stack([tf.nn.conv2d_transpose(mixed[c], filters[c], shape, strides, padding)
                     for c in range(v.shape[0])])


def backward_update(a_current, g, params, config, activation):
    """The backward rule (docs/spec.md §2 step 4) on any states and their drive ``g``:
    additive ``σ(f a + η g)``, multiplicative ``σ(f (a ⊙ g))``, multiplicative_second
    ``σ(f [a₀ ; a₁… ⊙ g₁…])``, normalised over batch and positions when configured."""
    u = backward_preactivation(flat_view(a_current), flat_view(g), params, config)
    return _unflat(activations.get(activation)(u), a_current)


def feedback(a_last, targets, mode):
    """``feedback.apply_feedback`` on the flat view: ``targets`` has the last layer's
    per-example shape (``[B, n]`` or ``[B, H, W, C]``)."""
    flat = flat_view(a_last)
    targets = tf.reshape(tf.cast(targets, a_last.dtype), tf.shape(flat)[1:])
    return _unflat(apply_feedback(flat, targets, mode), a_last)


def _post(a, post):
    """``Σ_d μ̃[c, d] a[d, …]``."""
    return mix_maps(a, tf.linalg.matrix_transpose(post))


def _filter_grad(inputs, out_backprop, spec):
    """``F[dy, dx, i, o] = Σ_{b, p} inputs[b, p·s + t, i] · out_backprop[b, p, o]``."""
    strides, padding = _geometry(spec)
    sizes = [*spec.kernel_size, inputs.shape[-1], out_backprop.shape[-1]]
    return tf.compat.v1.nn.conv2d_backprop_filter(inputs, sizes, out_backprop, strides, padding)


def _rows(filters):
    """``[k, kh, kw, a, b] -> [k, kh·kw·a, b]``."""
    return tf.reshape(filters, [filters.shape[0], -1, filters.shape[-1]])


def _reduce(delta, a):
    return delta / batch_size(a, delta.dtype)


def hebbian_w(a_lower, a_upper, params, spec, reduction="sum"):
    """``ΔW[c, (t, i), o] = R_b Σ_p (Σ_e a_lo[e, b, p·s + t, i] ν̃[e, c]) · post[c, b, p, o]``
    with ``post[c] = Σ_d μ̃[c, d] a_up[d]``; bias row ``(Σ_e ν̃[e, c]) R_b Σ_p post[c, b, p, o]``.
    ``R_b``: sum over the batch, or its mean (divided by B, summed over positions).
    Returns ``(ΔW, post)``."""
    pre, post = mix_maps(a_lower, params["pre"]), _post(a_upper, params["post"])
    grads = tf.stack([_filter_grad(pre[c], post[c], spec) for c in range(post.shape[0])])
    bias = _bias_row(post, params["pre"])
    delta = tf.concat([_rows(grads), bias], axis=1)
    return (_reduce(delta, post) if reduction == "mean" else delta), post


def _bias_row(post, pre):
    """``(Σ_e ν̃[e, c]) Σ_{b, p} post[c, b, p, o]`` as ``[k, 1, c_out]``."""
    total = tf.reduce_sum(flat_view(post), axis=1, keepdims=True)
    return state_vector(tf.reduce_sum(pre, axis=-2)) * total


def input_hebbian_w(x, a_upper, params, spec, reduction="sum"):
    """``hebbian_w`` for the input layer ``a⁰ = [x, 0, …, 0]``: the pre side of channel c is
    ``ν̃[0, c] x``, so ``ΔW[c, (t, i), o] = ν̃[0, c] Σ_{b, p} x[b, p·s + t, i] post[c, b, p, o]``:
    one matmul of the input's patches with the k post maps, or one filter gradient of ``x``
    against them side by side (``input_patches_fit``)."""
    post = _post(a_upper, params["post"])
    k, c_out = post.shape[0], post.shape[-1]
    x = tf.cast(x, post.dtype)
    if input_patches_fit(x, spec, k, c_out):
        grads = tf.matmul(input_patches(x, spec)[None], flat_view(post), transpose_a=True)
    else:
        side = tf.reshape(tf.transpose(post, [1, 2, 3, 0, 4]),
                          tf.concat([tf.shape(post)[1:4], [k * c_out]], 0))
        grads = _filter_grad(x, side, spec)  # [kh, kw, c_in, k·c_out]
        grads = _rows(tf.transpose(tf.reshape(grads, [*grads.shape[:3], k, c_out]),
                                   [3, 0, 1, 2, 4]))
    grads = tf.reshape(params["pre"][0, :], [k, 1, 1]) * grads
    delta = tf.concat([grads, _bias_row(post, params["pre"])], axis=1)
    return (_reduce(delta, post) if reduction == "mean" else delta), post


def input_patches_fit(x, spec, k, c_out):
    """Whether the input layer's pair runs on ``input_patches``: when a patch (kh·kw·c_in
    numbers) is no larger than the k output channels of a position."""
    return spec.kernel_size[0] * spec.kernel_size[1] * x.shape[-1] <= k * c_out


def hebbian_v(a_upper, a_lower, params, spec, reduction="sum"):
    """``ΔV[c, (t, o), i] = R_b Σ_p (Σ_e a_up[e, b, p, o] ν̃[e, c]) · post[c, b, p·s + t, i]``
    with ``post[c] = Σ_d μ̃[c, d] a_lo[d]``.  Returns ``(ΔV, post)``."""
    pre, post = mix_maps(a_upper, params["pre"]), _post(a_lower, params["post"])
    grads = tf.stack([_filter_grad(post[c], pre[c], spec) for c in range(post.shape[0])])
    delta = _rows(tf.transpose(grads, [0, 1, 2, 4, 3]))
    return (_reduce(delta, post) if reduction == "mean" else delta), post


def oja_term(w, post, params, reduction="sum"):
    """``−sign(η̃) |m| · w[c, r, j] · E[c, j]``, ``E[c, j] = R_b Σ_p post[c, b, p, j]²``
    (j: the channel of the side ``post`` belongs to)."""
    energy = tf.reduce_sum(tf.square(flat_view(post)), axis=1)  # [k, C]
    if reduction == "mean":
        energy = _reduce(energy, post)
    return oja_coefficient(params) * w * energy[:, None, :]


def symmetric_backward(w, spec):
    """``V[c, (t, o), i] = W[c, (t, i), o]`` (the bias row dropped)."""
    filters = kernels(w, spec)  # [k, kh, kw, c_in, c_out]
    return _rows(tf.transpose(filters, [0, 1, 2, 4, 3]))


def sync(w, v, spec, symmetric=False, single_state=False):
    """The single-state tie (every channel := channel 0), then the symmetric one."""
    if single_state:
        w = tie_channels(w)
        if not symmetric:
            v = tie_channels(v)
    if symmetric:
        v = symmetric_backward(w, spec)
    return w, v


def _apply_delta(w, dw, post, params, config):
    """``f̃ w + η̃ (Δw [+ Oja])``, then saturation if configured."""
    if config.oja:
        dw = dw + oja_term(w, post, params, config.batch_reduction)
    w_new = params["f_syn"] * w + params["eta_syn"] * dw
    return saturate(w_new, params["alpha"]) if config.saturation else w_new


def update_pair(w, v, a_lower, a_upper, params, config, spec, update_backward=True,
                input_x=None):
    """One synapse update of a conv pair (docs/spec.md §2 step 5, §3 order): Hebbian Δ (+ Oja)
    → ``f̃, η̃`` → saturation → single-state → symmetric.  ``update_backward=False`` (the
    first pair) leaves V as it is; ``input_x``: the input map, when ``a_lower`` is the input
    layer (only state 0 non-zero)."""
    reduction = config.batch_reduction
    if input_x is not None:
        dw, post_w = input_hebbian_w(input_x, a_upper, params, spec, reduction)
    else:
        dw, post_w = hebbian_w(a_lower, a_upper, params, spec, reduction)
    w_new = _apply_delta(w, dw, post_w, params, config)
    if not update_backward:
        return (tie_channels(w_new) if config.single_state else w_new), v
    if config.symmetric:
        v_new = v
    else:
        dv, post_v = hebbian_v(a_upper, a_lower, params, spec, reduction)
        v_new = _apply_delta(v, dv, post_v, params, config)
    return sync(w_new, v_new, spec, config.symmetric, config.single_state)
