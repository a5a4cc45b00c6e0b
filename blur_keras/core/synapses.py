"""Synapses: initialisation, the Hebbian update, Oja decay, saturation, syncs
(docs/spec.md §1, §2 step 5, §3).

Forward synapses ``W^l``: ``[*P, k, n_l + 1, n_{l+1}]`` (row ``n_l`` is the
bias); backward synapses ``V^l``: ``[*P, k, n_{l+1}, n_l]``, in the core's
internal layout (``blur_keras.core.layout``); ``init_synapses`` returns the public one.
"""

import tensorflow as tf

from blur_keras.core.checks import check_k
from blur_keras.core.layout import pairs_out, synapses_in
from blur_keras.core.neurons import scalar
from blur_keras.core.states import (batch_reduce, input_outer_product, input_outer_scaled,
                                    mix_states, per_state_outer, with_bias_neuron)

__all__ = [
    "hebbian_delta", "hebbian_mixes", "post_mix", "input_hebbian_delta",
    "input_hebbian_delta_parts", "oja_energy", "oja_coefficient", "with_oja",
    "unsaturated", "saturate", "sync", "swap_src_dst", "tie_channels", "kept_synapses",
    "initial_ties", "update_pair", "update_pair_parts", "init_synapses", "flatten_pairs",
    "pair_up",
]


def post_mix(a_dst, params):
    """The post-synaptic mix ``Σ_d μ̃[c, d] a_dst[..., d, b, j]``: ``mix_states`` with ``μ̃ᵀ``."""
    return mix_states(a_dst, tf.linalg.matrix_transpose(params["post"]))


def hebbian_mixes(a_src, a_dst, params):
    """``(pre, post)`` of ``hebbian_delta``: ``Σ_e a_src[e] ν̃[e, c]`` and ``post_mix(a_dst)``."""
    return mix_states(a_src, params["pre"]), post_mix(a_dst, params)


def hebbian_delta(a_src, a_dst, params, reduction="sum"):
    """``Δ[c, i, j] = Σ_b (Σ_e a_src[e,b,i] ν̃[e,c]) (Σ_d μ̃[c,d] a_dst[d,b,j])``.

    For ``W^l`` pass ``a_src = ā^l`` (with bias neuron) and ``a_dst = a^{l+1}``;
    for ``V^l`` pass ``a_src = a^{l+1}`` and ``a_dst = a^l``.  Returns the delta
    and the mixed post-synaptic states (needed by the Oja term).
    """
    pre, post = hebbian_mixes(a_src, a_dst, params)
    return per_state_outer(pre, post, reduction), post


def input_hebbian_delta(x, a_dst, params, reduction="sum"):
    """``hebbian_delta(ā⁰, a_dst, …)`` for the input layer ``a⁰ = [x, 0, …, 0]``, from ``x``.

    One plain matmul ``xᵀ @ post`` (``states.input_outer``) instead of mixing
    the input's states and transposing around a batched matmul.
    """
    return input_hebbian_delta_parts(x, a_dst, params, reduction)[:2]


def input_hebbian_delta_parts(x, a_dst, params, reduction="sum"):
    """``input_hebbian_delta`` and ``[x, 1]ᵀ post`` (``states.input_outer_product``), from which
    the delta is scaled (``states.input_outer_scaled``): ``(delta, post, outer)``."""
    post = post_mix(a_dst, params)
    outer = input_outer_product(x, post)
    return input_outer_scaled(outer, post, params["pre"], reduction), post, outer


def oja_energy(post, reduction="sum"):
    """``Σ_b post[c, b, j]²`` (the batch mean under "mean"), ``[*P, k, n_dst]``."""
    return batch_reduce(tf.reduce_sum(tf.square(post), axis=-2), post, reduction)


def oja_coefficient(params):
    """The Oja term's per-population coefficient ``−sign(η̃) · |m_oja|``: a decay whatever the
    sign of the synapse update."""
    return -tf.sign(params["eta_syn"]) * tf.abs(params["oja"])


def with_oja(w, dw, energy, params):
    """``Δw`` plus the Oja term ``oja_coefficient · w[c, i, j] · energy[c, j]`` (``oja_energy``);
    ``energy=None`` (no Oja) returns ``Δw``."""
    if energy is None:
        return dw
    return dw + scalar(oja_coefficient(params)) * w * energy[..., :, None, :]


def unsaturated(w, dw, energy, params, config):
    """``f̃ kept(w) + η̃ (Δw [+ Oja])``: the update before saturation (``with_oja``)."""
    return (scalar(params["f_syn"]) * kept_synapses(w, params, config)
            + scalar(params["eta_syn"]) * with_oja(w, dw, energy, params))


def saturate(w, alpha):
    """``α tanh(w / α)`` with a per-population scalar α."""
    alpha = alpha[..., None, None, None]
    return alpha * tf.tanh(w / alpha)


def tie_channels(t, velocity=False):
    """Single-state tie: every channel := channel 0 (with a ``velocity`` channel, the last,
    every other one)."""
    if not velocity:
        return tf.broadcast_to(t[..., :1, :, :], tf.shape(t))
    tied = tf.broadcast_to(t[..., :1, :, :], tf.shape(t[..., :-1, :, :]))
    return tf.concat([tied, t[..., -1:, :, :]], axis=-3)


def sync(w, v, symmetric=False, single_state=False, velocity=False):
    """Apply the symmetric (``V := W[:n]ᵀ``) and single-state (every channel := channel 0,
    ``velocity``: but the last) ties."""
    if single_state:
        w = tie_channels(w, velocity)
        if not symmetric:
            v = tie_channels(v, velocity)
    if symmetric:
        v = swap_src_dst(w[..., :-1, :])
    return w, v


def swap_src_dst(t):
    """``[..., k, a, b] -> [..., k, b, a]``: forward synapses (no bias row) as backward ones."""
    return tf.linalg.matrix_transpose(t)


def update_pair(w, v, a_lower, a_upper, params, config, update_backward=True, input_layer=False):
    """One synapse update of the pair (W^l, V^l) from the states after the backward pass.

    ``W ← f̃ W + η̃ (ΔW + Oja)``, likewise V (unless symmetric), then optional
    saturation, then the syncs.  ``update_backward=False`` (the first pair,
    whose V⁰ is never read: the input layer is never written) returns V
    unchanged and updates W alone.  ``input_layer=True`` says that ``a_lower``
    is the input layer (only state 0 non-zero), which makes ΔW one plain
    matmul (``input_hebbian_delta``).
    """
    return update_pair_parts(w, v, a_lower, a_upper, params, config, update_backward,
                             input_layer)[0]


def update_pair_parts(w, v, a_lower, a_upper, params, config, update_backward=True,
                      input_layer=False):
    """``update_pair`` and its intermediates, what a hand-derived reverse reads
    (``step_reverse``): ``((W, V), parts)``, ``parts["w"]`` (and ``parts["v"]`` when V is
    updated) a dict of the Hebbian ``delta``, the Oja ``energy`` (or None) and, for the
    input layer, the ``outer`` product the delta is scaled from (``input_hebbian_delta_parts``).
    """
    reduction = config.batch_reduction
    outer = None
    if input_layer:
        dw, post_w, outer = input_hebbian_delta_parts(a_lower[..., 0, :, :], a_upper, params,
                                                      reduction)
    else:
        dw, post_w = hebbian_delta(with_bias_neuron(a_lower), a_upper, params, reduction)
    w_new, energy = _apply_delta(w, dw, post_w, params, config)
    parts = {"w": {"delta": dw, "energy": energy, "outer": outer}}
    if not update_backward:
        w_new = tie_channels(w_new, config.velocity_channel) if config.single_state else w_new
        return (w_new, v), parts
    if config.symmetric:
        v_new = v
    else:
        dv, post_v = hebbian_delta(a_upper, a_lower, params, reduction)
        v_new, energy_v = _apply_delta(v, dv, post_v, params, config)
        parts["v"] = {"delta": dv, "energy": energy_v}
    return sync(w_new, v_new, config.symmetric, config.single_state,
                config.velocity_channel), parts


def kept_synapses(w, params, config):
    """What the update keeps of ``w`` before ``f̃``: ``w``, or under ``config.synapse_mix``
    ``Σ_d T[c, d] w[d]`` (``T = syn_mix``)."""
    if not config.synapse_mix:
        return w
    return mix_states(w, tf.linalg.matrix_transpose(params["syn_mix"]))


def _apply_delta(w, dw, post, params, config):
    """``f̃ kept(w) + η̃ (Δw [+ Oja])``, then saturation if configured (no sync):
    ``(new synapses, Oja energy or None)``."""
    energy = oja_energy(post, config.batch_reduction) if config.oja else None
    w_new = unsaturated(w, dw, energy, params, config)
    if config.saturation:
        w_new = saturate(w_new, params["alpha"])
    return w_new, energy


def initial_ties(w, v, config):
    """Fresh synapses under ``config``: the syncs, and a velocity channel at 0."""
    w, v = sync(w, v, config.symmetric, config.single_state, config.velocity_channel)
    if config.velocity_channel:
        w, v = (tf.concat([t[..., :-1, :, :], tf.zeros_like(t[..., -1:, :, :])], axis=-3)
                for t in (w, v))
    return w, v


def flatten_pairs(synapses):
    """``((W⁰, V⁰), (W¹, V¹), …)`` -> ``[W⁰, V⁰, W¹, V¹, …]``."""
    return [t for pair in synapses for t in pair]


def pair_up(flat):
    """Inverse of ``flatten_pairs``: ``[W⁰, V⁰, W¹, V¹, …]`` -> ``((W⁰, V⁰), (W¹, V¹), …)``."""
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def init_synapses(seed, sizes, k, population_shape=(), config=None, scale=1.0, dtype=tf.float32):
    """Random synapses for layer sizes ``n_0 … n_L``, in the public layout.

    ``W[:n_l] ~ N(0, scale² / n_l)``, bias row 0; ``V ~ N(0, scale² / n_{l+1})``;
    stateless (``seed``: int or shape-[2] tensor) so it compiles with XLA and is
    reproducible.  Returns a tuple of ``(W, V)`` pairs with the syncs applied,
    ``W^l``: ``[*P, n_l + 1, n_{l+1}, k]``, ``V^l``: ``[*P, n_{l+1}, n_l, k]``.

    The generator is named (Philox): it draws the same numbers as the default
    ``auto_select`` does on CPU, but under XLA the default lowers to code ~35×
    slower (a third of a meta-step's forward time at 100-256-10, k=4).
    """
    return pairs_out(_init_internal(seed, sizes, k, population_shape, config, scale, dtype))


def _init_internal(seed, sizes, k, population_shape, config, scale, dtype):
    """``init_synapses`` in the internal layout, where the syncs apply."""
    check_k(k, "init_synapses")
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    pop = list(population_shape)
    seeds = tf.random.experimental.stateless_split(seed, 2 * (len(sizes) - 1))
    pairs = []
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = _normal(pop + [n, m, k], seeds[2 * l], dtype) * (scale / n ** 0.5)
        w = synapses_in(tf.concat([w, tf.zeros(pop + [1, m, k], dtype)], axis=-3))
        v = synapses_in(_normal(pop + [m, n, k], seeds[2 * l + 1], dtype) * (scale / m ** 0.5))
        if config is not None:
            w, v = initial_ties(w, v, config)
        pairs.append((w, v))
    return tuple(pairs)


def _normal(shape, seed, dtype):
    """Standard normals from a stateless seed, Philox (see ``init_synapses``)."""
    return tf.random.stateless_normal(shape, seed, dtype=dtype, alg="philox")
