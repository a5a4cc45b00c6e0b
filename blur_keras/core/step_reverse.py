"""The hand-derived reverse of one inner step (docs/benchmarks.md).

``reversed_step`` runs the step's forward, ``step.run_step`` (the formulas of ``forward``,
``backward``, ``feedback`` and ``synapses``, the only forward code), inside one
``tf.custom_gradient``, and writes its gradient out by hand, op by op in reverse, from the
intermediates those formulas return (their ``*_parts`` functions):

* a meta-gradient's while loop stores only what this backward reads (the
  layer states, the hidden pairs' mixes and drives, normalisation statistics,
  ``[x, 1]ᵀ post`` of the first pair) instead of every intermediate
  TensorFlow's autodiff keeps; cheap mixes and views are recomputed, by the owners'
  functions (``synapses.hebbian_mixes``, ``synapses.unsaturated``, ``states.input_drive``, …);
* the first pair's contractions are per-state matmuls of ``x`` (its other
  states are 0);
  σ' comes from σ's output where that is exact; the bias neuron's rows are
  handled without building ``[a ; 1]``.

A meta-step is ~1.2× faster than with autodiff (docs/benchmarks.md).

Every option of ``BlurConfig`` is covered.  ``step.step(..., reverse="autodiff")``
lets TensorFlow differentiate the same forward instead, which is how
``tests/test_gradient.py`` checks this reverse.

Notation: pair ``l`` connects layer ``l`` (below) to ``l + 1``; ``p[l]`` its
genome entries aligned to the population axes; ``d_*`` a gradient.  Tensors are
in the internal layout (``blur_keras.core.layout``): states ``[*P, k, B, n]``,
synapses ``[*P, k, n_src, n_dst]``.
"""

import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.backward import rule_product
from blur_keras.core.feedback import softmax_error
from blur_keras.core.genome_spec import used_entries
from blur_keras.core.gradient import sum_to
from blur_keras.core.neurons import scalar
from blur_keras.core.normalization import column_rnorm, scale_shift, synapse_view
from blur_keras.core.states import (batch_reduce, input_drive, input_outer_scaled,
                                    input_row_scale, mix_states_vjp, per_state_matmul,
                                    per_state_outer, state_vector, with_bias_neuron)
from blur_keras.core.synapses import (hebbian_mixes, kept_synapses, oja_coefficient, post_mix,
                                      saturate, swap_src_dst, unsaturated, with_oja)

__all__ = ["reversed_step"]


def reversed_step(run_step, layer_params, synapses, x, targets, config, forward_activations,
                  backward_activations):
    """``run_step(layer_params, synapses, x, targets)`` (``step.run_step``: ``(new synapses,
    states [a^0, …, a^L], parts)``) with the hand-derived gradient.

    ``layer_params``: one genome dict per layer pair, aligned to the
    population axes; ``x``, ``targets`` already in the synapses' dtype.
    Returns ``(new_synapses, [a^1, …, a^L])`` (the states after the backward
    pass; the caller prepends the input layer).
    """
    num_layers = len(synapses)
    names = list(used_entries(config))
    flat_p = [tf.convert_to_tensor(p[n]) for p in layer_params for n in names]
    flat_s = [tf.convert_to_tensor(t) for pair in synapses for t in pair]
    step = _Step(config, forward_activations, backward_activations, names, num_layers)

    @tf.custom_gradient
    def run(*args):
        p, syn, xx, tt = step.unpack(args)
        new, states, parts = run_step(p, syn, xx, tt)
        new = [t for pair in new for t in pair]
        cache = step.keep(p, syn, xx, tt, states, parts)

        def grad(*dys):
            d_new = [d if d is not None else tf.zeros_like(t) for d, t in zip(dys, new)]
            return step.backward(cache, d_new, list(dys[2 * num_layers:]))

        return new + states[1:], grad

    out = run(*flat_p, *flat_s, x, targets)
    new = tuple((out[2 * l], out[2 * l + 1]) for l in range(num_layers))
    return new, list(out[2 * num_layers:])


# -- small pieces: gradients of the owners' operations -----------------------------------------

def _scalar_grad(prod, s):
    """Gradient of a per-population scalar ``s`` used as ``scalar(s) * t`` (``prod = d · t``)."""
    return sum_to(tf.reduce_sum(prod, axis=[-3, -2, -1]), s)


def _state_grad(prod, v):
    """Gradient of a per-state vector ``v`` used as ``state_vector(v) * t``."""
    return sum_to(tf.reduce_sum(prod, axis=[-2, -1]), v)


def _bias_mix_vjp(a, m, d):
    """Gradients of ``mix_states(with_bias_neuron(a), m)`` without building ``[a ; 1]``: the bias
    neuron's states are all 1, so its rows add ``Σ_b d[b, n, c]`` to every ``m[·, c]``."""
    d_a, d_m = mix_states_vjp(a, m, d[..., :-1])
    bias = tf.reduce_sum(d[..., -1], axis=-1)[..., None, :]  # [*P, 1, k]
    return d_a, d_m + sum_to(bias + tf.zeros_like(d_m), m)


def _mix_t_vjp(a, m, d):
    """Gradients of ``mix_states(a, mᵀ)``: ``(d_a, d_m)``."""
    d_a, d_mt = mix_states_vjp(a, tf.linalg.matrix_transpose(m), d)
    return d_a, tf.linalg.matrix_transpose(d_mt)


def _matmul_vjp(m, w, d):
    """Gradients of ``per_state_matmul(m, w)``: ``(d_m, d_w)``."""
    d_m = tf.matmul(d, w, transpose_b=True)
    return sum_to(d_m, m), sum_to(per_state_outer(m, d), w)


def _outer_vjp(p, q, d, reduction):
    """Gradients of ``per_state_outer(p, q, reduction)``: ``(d_p, d_q)``."""
    d = batch_reduce(d, p, reduction)
    d_p = tf.matmul(q, d, transpose_b=True)
    return sum_to(d_p, p), sum_to(per_state_matmul(p, d), q)


def _synapse_view_vjp(w, p, config, d):
    """Gradients of ``normalization.synapse_view``: ``(d_w, d_syn_scale or None)``."""
    if not config.synapse_norm:
        return d, None
    s = scalar(p["syn_scale"])
    r = column_rnorm(w, config.synapse_norm_epsilon)
    d_w = s * r * (d - w * tf.square(r) * tf.reduce_sum(d * w, axis=-2, keepdims=True))
    return sum_to(d_w, w), _scalar_grad(d * w * r, p["syn_scale"])


def _act_vjp(name, u, y, d):
    """Gradient of ``y = σ(u)``; ``u`` is a thunk (called only when σ' needs it)."""
    from_output = activations.derivative_from_output(name)
    if from_output is not None:
        return d * from_output(y)
    u = u()
    with tf.GradientTape() as tape:
        tape.watch(u)
        y = activations.get(name)(u)
    return tape.gradient(y, u, output_gradients=d)


def _bn_vjp(cache, p, d):
    """Gradients of ``normalize_activations`` from the normalised ``xhat`` and ``rstd``:
    ``(d_u, d_gamma, d_beta)``."""
    xhat, rstd = cache
    d_xhat = d * state_vector(p["gamma"])
    d_u = rstd * (d_xhat - tf.reduce_mean(d_xhat, axis=-2, keepdims=True)
                  - xhat * tf.reduce_mean(d_xhat * xhat, axis=-2, keepdims=True))
    return d_u, _state_grad(d * xhat, p["gamma"]), _state_grad(d, p["beta"])


def _act_kept(parts):
    """What the reverse keeps of ``neurons.normalized_parts``'s ``(u, norm)``: ``u`` without
    the activation norm, else the normalised ``û`` and ``rstd`` (σ's input is recomputed from
    them, ``normalization.scale_shift``)."""
    u, norm = parts
    return (u, None) if norm is None else (None, norm)


def _norm_act_vjp(cache, p, config, name, y, d, grads):
    """Gradient of the activation norm (if configured) then σ (output ``y``) w.r.t. their input
    ``u``, from ``_act_kept``'s ``cache``; adds γ's and β's into ``grads``."""
    v, bn = cache
    d_u = _act_vjp(name, lambda: v if bn is None else scale_shift(bn[0], p["gamma"], p["beta"]),
                   y, d)
    if bn is not None:
        d_u, d_gamma, d_beta = _bn_vjp(bn, p, d_u)
        _add(grads, "gamma", d_gamma)
        _add(grads, "beta", d_beta)
    return d_u


def _plus(a, b):
    """``a + b`` where ``None`` stands for a zero gradient."""
    return b if a is None else a if b is None else a + b


def _add(grads, name, value):
    grads[name] = value if grads.get(name) is None else grads[name] + value


class _Step:
    """What the reverse of one inner step keeps of its forward (``keep``), and that reverse."""

    def __init__(self, config, forward_activations, backward_activations, names, num_layers):
        self.config = config
        self.fwd, self.bwd = forward_activations, backward_activations
        self.names = names
        self.num_layers = num_layers

    def unpack(self, args):
        n, L = len(self.names), self.num_layers
        p = [dict(zip(self.names, args[l * n:(l + 1) * n])) for l in range(L)]
        flat = args[L * n:L * n + 2 * L]
        syn = [(flat[2 * l], flat[2 * l + 1]) for l in range(L)]
        return p, syn, args[-2], args[-1]

    def keep(self, p, syn, x, t, states, parts):
        """What the reverse reads, from ``step.run_step``'s states and parts: ``cache``."""
        fwd = []
        for l, (contracted, z, act) in enumerate(parts["fwd"]):
            # at l = 0 ``contracted`` is x W[:n]; z is recomputed from it (states.input_drive)
            fwd.append((contracted, None if l == 0 else z, _act_kept(act)))
        bwd = {l: (mixed, g, _act_kept(act)) for l, (mixed, g, act) in parts["bwd"].items()}
        upd = []
        for l, pair in enumerate(parts["upd"]):
            w = pair["w"]
            # ΔW⁰ is recomputed from [x, 1]ᵀ post (states.input_outer_scaled)
            entry = {"w": (w["outer"] if l == 0 else w["delta"], w["energy"])}
            if "v" in pair:
                entry["v"] = (pair["v"]["delta"], pair["v"]["energy"])
            upd.append(entry)
        return {"p": p, "syn": syn, "x": x, "t": t, "fwd": fwd, "bwd": bwd, "upd": upd,
                "a_fwd": [None] + parts["forward"][1:], "states": [None] + states[1:]}

    # -- reverse ----------------------------------------------------------------------------
    def backward(self, cache, d_new, d_states):
        """Gradients of every input of ``run`` from those of its outputs."""
        L = self.num_layers
        p = cache["p"]
        grads = [dict() for _ in range(L)]
        d_syn = [[None, None] for _ in range(L)]
        d_st = [None] + list(d_states)  # d_st[l]: gradient of layer l's final state (or None)
        d_x = None
        for l in range(L):
            d_w, d_v, d_lo, d_up, dx = self._update_pair_vjp(l, cache, d_new[2 * l],
                                                             d_new[2 * l + 1], grads[l])
            d_syn[l] = [d_w, d_v]
            if l == 0:
                d_x = dx
            else:
                d_st[l] = _plus(d_st[l], d_lo)
            d_st[l + 1] = _plus(d_st[l + 1], d_up)
        d_fwd = [None] * (L + 1)  # gradients of the layers after the forward pass
        for l in range(1, L):
            d_above, d_fwd[l], d_v = self._backward_layer_vjp(l, cache, d_st[l], grads[l])
            d_st[l + 1] += d_above
            d_syn[l][1] += d_v
        d_fwd[L], d_t = self._feedback_vjp(cache, d_st[L])
        for l in range(L - 1, -1, -1):
            d_below, d_w = self._forward_layer_vjp(l, cache, d_fwd[l + 1], grads[l])
            d_syn[l][0] += d_w
            if l == 0:
                d_x = _plus(d_x, d_below)
            else:
                d_fwd[l] = _plus(d_fwd[l], d_below)
        flat_p = [grads[l].get(n) for l in range(L) for n in self.names]
        flat_p = [g if g is not None else tf.zeros_like(v)
                  for g, v in zip(flat_p, [p[l][n] for l in range(L) for n in self.names])]
        flat_s = [d for pair in d_syn for d in pair]
        return (*flat_p, *flat_s, d_x, d_t)

    def _update_pair_vjp(self, l, cache, d_w_new, d_v_new, grads):
        """Reverse of ``synapses.update_pair_parts``: ``(d_w, d_v, d_lower, d_upper, d_x)``."""
        cfg = self.config
        w, v = cache["syn"][l]
        p = cache["p"][l]
        states = cache["states"]
        entry = cache["upd"][l]
        if l == 0:
            d_v, d_v_new = d_v_new, None  # V⁰ passes through unchanged
        elif cfg.symmetric:
            bias_row = tf.zeros_like(d_w_new[..., -1:, :])
            d_w_new = d_w_new + tf.concat([swap_src_dst(d_v_new), bias_row], axis=-2)
            d_v, d_v_new = tf.zeros_like(v), None
        if cfg.single_state:
            d_w_new = _untie(d_w_new, cfg.velocity_channel)
            if d_v_new is not None:
                d_v_new = _untie(d_v_new, cfg.velocity_channel)
        kept, energy = entry["w"]
        d_lower = d_upper = d_x = None
        if l == 0:
            post_w = post_mix(states[1], p)
            dw = input_outer_scaled(kept, post_w, p["pre"], cfg.batch_reduction)
        else:
            pre_w, post_w = hebbian_mixes(with_bias_neuron(states[l]), states[l + 1], p)
            dw = kept
        d_w, d_delta, d_post_w = self._apply_delta_vjp(w, dw, energy, post_w, p, d_w_new, grads)
        if l == 0:
            d_x, d_post = self._input_outer_vjp(cache["x"], kept, post_w, p, d_delta, grads)
        else:
            d_pre, d_post = _outer_vjp(pre_w, post_w, d_delta, cfg.batch_reduction)
            d_lower, d_m = _bias_mix_vjp(states[l], p["pre"], d_pre)
            _add(grads, "pre", d_m)
        d_post = d_post + d_post_w
        d_upper, d_m = _mix_t_vjp(states[l + 1], p["post"], d_post)
        _add(grads, "post", d_m)
        if d_v_new is not None:
            pre_v, post_v = hebbian_mixes(states[l + 1], states[l], p)
            dv, energy_v = entry["v"]
            d_v, d_delta_v, d_post_v = self._apply_delta_vjp(v, dv, energy_v, post_v, p, d_v_new,
                                                             grads)
            d_pre, d_post = _outer_vjp(pre_v, post_v, d_delta_v, cfg.batch_reduction)
            d_up, d_m = mix_states_vjp(states[l + 1], p["pre"], d_pre)
            _add(grads, "pre", d_m)
            d_lo, d_m = _mix_t_vjp(states[l], p["post"], d_post + d_post_v)
            _add(grads, "post", d_m)
            d_upper, d_lower = d_upper + d_up, d_lower + d_lo
        return d_w, d_v, d_lower, d_upper, d_x

    def _input_outer_vjp(self, x, outer, post, p, d_delta, grads):
        """Reverse of ``ΔW⁰ = reduce(([x, 1]ᵀ post) × row scale)``: ``(d_x, d_post)``."""
        d_delta = batch_reduce(d_delta, post, self.config.batch_reduction)
        scale = input_row_scale(p["pre"], _width(x))
        d_outer = d_delta * scale[..., None]
        d_scale = tf.reduce_sum(d_delta * outer, axis=-1)  # [*P, k, n + 1]
        d_m0 = tf.reduce_sum(d_scale[..., :-1], axis=-1)
        _add(grads, "pre", _first_row_and_sums_vjp(d_m0, d_scale[..., -1], p["pre"]))
        d_post = sum_to(tf.matmul(with_bias_neuron(x)[..., None, :, :], d_outer), post)
        d_x_bar = tf.reduce_sum(tf.matmul(post, d_outer, transpose_b=True), axis=-3)
        return sum_to(d_x_bar[..., :-1], x), d_post

    def _apply_delta_vjp(self, w, hebbian, energy, post, p, d, grads):
        """Reverse of ``synapses._apply_delta``: ``(d_w, d_hebbian, d_post)``."""
        cfg = self.config
        dw = with_oja(w, hebbian, energy, p)
        if cfg.saturation:
            pre_sat = unsaturated(w, hebbian, energy, p, cfg)
            alpha = scalar(p["alpha"])
            th = saturate(pre_sat, p["alpha"]) / alpha  # tanh(pre_sat / α)
            d_pre = d * (1.0 - tf.square(th))
            _add(grads, "alpha", _scalar_grad(d * (th - pre_sat / alpha * (1.0 - tf.square(th))),
                                              p["alpha"]))
            d = d_pre
        _add(grads, "f_syn", _scalar_grad(d * kept_synapses(w, p, cfg), p["f_syn"]))
        _add(grads, "eta_syn", _scalar_grad(d * dw, p["eta_syn"]))
        d_w = scalar(p["f_syn"]) * d
        if cfg.synapse_mix:  # kept = mix_states(w, Tᵀ)
            d_w, d_mix = _mix_t_vjp(w, p["syn_mix"], d_w)
            _add(grads, "syn_mix", d_mix)
        d_dw = scalar(p["eta_syn"]) * d
        d_post = 0.0
        if cfg.oja:  # the coefficient −sign(η̃)|m| has the derivative −sign(η̃) sign(m) in m
            coeff = scalar(oja_coefficient(p))
            d_w += coeff * d_dw * energy[..., :, None, :]
            d_energy = tf.reduce_sum(coeff * d_dw * w, axis=-2)  # [*P, k, n_dst]
            d_post = batch_reduce(2.0 * post * d_energy[..., :, None, :], post, cfg.batch_reduction)
            d_coeff = -tf.sign(p["eta_syn"]) * tf.sign(p["oja"])
            _add(grads, "oja", _scalar_grad(d_dw * w * energy[..., :, None, :] * scalar(d_coeff),
                                            p["oja"]))
        return sum_to(d_w, w), d_dw, d_post

    def _backward_layer_vjp(self, l, cache, d, grads):
        """Reverse of ``backward.backward_layer_parts``: ``(d_above, d_current, d_v)``."""
        cfg = self.config
        p = cache["p"][l]
        mixed, g, act = cache["bwd"][l]
        v_view = synapse_view(cache["syn"][l][1], p, cfg)
        current = cache["a_fwd"][l]
        d_u = _norm_act_vjp(act, p, cfg, self.bwd[l - 1], cache["states"][l], d, grads)
        if cfg.backward_rule == "additive":
            d_g = scalar(p["eta"]) * d_u
            d_cur = scalar(p["f"]) * d_u
            _add(grads, "eta", _scalar_grad(d_u * g, p["eta"]))
            _add(grads, "f", _scalar_grad(d_u * current, p["f"]))
        else:
            _add(grads, "f", _scalar_grad(d_u * rule_product(current, g, cfg.backward_rule),
                                          p["f"]))
            d_prod = scalar(p["f"]) * d_u
            if cfg.backward_rule == "multiplicative":
                d_g, d_cur = d_prod * current, d_prod * g
            else:
                first, rest = d_prod[..., :1, :, :], d_prod[..., 1:, :, :]
                d_g = tf.concat([tf.zeros_like(first), rest * current[..., 1:, :, :]], axis=-3)
                d_cur = tf.concat([first, rest * g[..., 1:, :, :]], axis=-3)
        d_mixed, d_view = _matmul_vjp(mixed, v_view, d_g)
        d_above, d_m = mix_states_vjp(cache["states"][l + 1], p["mu"], d_mixed)
        _add(grads, "mu", d_m)
        d_v, d_scale = _synapse_view_vjp(cache["syn"][l][1], p, cfg, d_view)
        _add(grads, "syn_scale", d_scale)
        return d_above, sum_to(d_cur, current), d_v

    def _feedback_vjp(self, cache, d):
        """Reverse of ``apply_feedback``: ``(d_last, d_targets)``."""
        a, t = cache["a_fwd"][-1], cache["t"]
        zeros = tf.zeros_like(d[..., 2:, :, :])
        if self.config.feedback == "target":
            d_a = tf.concat([d[..., :1, :, :], tf.zeros_like(d[..., 1:2, :, :]), zeros], axis=-3)
            return d_a, sum_to(d[..., 1, :, :], t)
        pred, state1 = a[..., 0, :, :], a[..., 1, :, :]
        d1 = d[..., 1, :, :]
        g = d1 * state1  # d/d(error) of state 1 = error ⊙ state 1
        if self.config.feedback == "softmax":
            s = tf.nn.softmax(pred, axis=-1)
            d_pred = s * (g - tf.reduce_sum(g * s, axis=-1, keepdims=True))
            error, d_t = softmax_error(pred, t), -0.5 * g
        else:
            d_pred, error, d_t = g, pred - t, -g
        d_a = tf.concat([(d[..., 0, :, :] + d_pred)[..., None, :, :],
                         (d1 * error)[..., None, :, :], zeros], axis=-3)
        return d_a, sum_to(d_t, t)

    def _forward_layer_vjp(self, l, cache, d, grads):
        """Reverse of ``forward.forward_layer_parts``: ``(d_below, d_w)`` (``d_below`` is ``d_x``
        at l = 0)."""
        cfg = self.config
        p = cache["p"][l]
        mixed, z, act = cache["fwd"][l]
        w_view = synapse_view(cache["syn"][l][0], p, cfg)
        if l == 0:  # mixed = x W[:n]
            z = input_drive(mixed, w_view, p["nu"])
        d_u = _norm_act_vjp(act, p, cfg, self.fwd[l], cache["a_fwd"][l + 1], d, grads)
        _add(grads, "eta", _scalar_grad(d_u * z, p["eta"]))
        d_z = scalar(p["eta"]) * d_u
        if l == 0:
            d_below, d_view = self._input_matmul_vjp(cache["x"], w_view, mixed, p, d_z, grads)
        else:
            d_mixed, d_view = _matmul_vjp(mixed, w_view, d_z)
            d_below, d_m = _bias_mix_vjp(cache["a_fwd"][l], p["nu"], d_mixed)
            _add(grads, "nu", d_m)
        d_w, d_scale = _synapse_view_vjp(cache["syn"][l][0], p, cfg, d_view)
        _add(grads, "syn_scale", d_scale)
        return d_below, d_w

    def _input_matmul_vjp(self, x, w, xw, p, d, grads):
        """Reverse of ``z[c] = ν[0, c] (x W[c, :n]) + (Σ_d ν[d, c]) W[c, n]``: ``(d_x, d_w)``."""
        nu = p["nu"]
        d_xw = d * state_vector(nu[..., 0, :])
        d_m0 = tf.reduce_sum(d * xw, axis=[-2, -1])
        d_sum_b = tf.reduce_sum(d, axis=-2, keepdims=True)  # [*P, k, 1, m]
        d_cs = tf.reduce_sum(d_sum_b * w[..., -1:, :], axis=[-2, -1])
        _add(grads, "nu", _first_row_and_sums_vjp(d_m0, d_cs, nu))
        d_x = tf.reduce_sum(tf.matmul(d_xw, w[..., :-1, :], transpose_b=True), axis=-3)
        d_top = tf.matmul(x[..., None, :, :], d_xw, transpose_a=True)  # [*P, k, n, m]
        d_bias = d_sum_b * state_vector(tf.reduce_sum(nu, axis=-2))
        d_w = tf.concat([sum_to(d_top, w[..., :-1, :]), d_bias], axis=-2)
        return sum_to(d_x, x), sum_to(d_w, w)


def _width(x):
    """``x``'s last axis: a Python int when static."""
    return x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]


def _first_row_and_sums_vjp(d_row0, d_colsum, m):
    """Gradient of ``m`` used as ``m[0, c]`` (gradient ``d_row0``) and ``Σ_d m[d, c]``
    (``d_colsum``), both ``[*P, k]``."""
    k = m.shape[-1]
    first = tf.one_hot(0, k, dtype=m.dtype)[:, None]  # [k, 1]
    return sum_to(d_colsum[..., None, :] + first * d_row0[..., None, :], m)


def _untie(d, velocity=False):
    """Gradient of ``tie_channels``: every tied channel's gradient summed into channel 0 (a
    ``velocity`` channel, the last, keeps its own)."""
    if velocity:
        return tf.concat([_untie(d[..., :-1, :, :]), d[..., -1:, :, :]], axis=-3)
    total = tf.reduce_sum(d, axis=-3, keepdims=True)
    return tf.concat([total, tf.zeros_like(d[..., 1:, :, :])], axis=-3)
