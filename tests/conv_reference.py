"""An independent float64 NumPy reference of BLUR convolution, pooling and flatten layers and
of one inner step over such a chain (docs/conv.md), written with explicit loops over output
positions and kernel taps and full ``np.einsum`` contractions (never a library conv).

One population member; states ``[B, H, W, C, k]`` (or ``[B, n, k]`` for dense layers);
conv ``W [kh·kw·c_in + 1, c_out, k]`` (rows ``(dy, dx, i)``, then the bias),
``V [kh·kw·c_out, c_in, k]`` (rows ``(dy, dx, o)``).  Dense layer pairs use
``tests/reference.py``.  Layers are given as dicts: ``{"type": "conv", "filters",
"kernel": (kh, kw), "strides": (sh, sw), "padding"}``, ``{"type": "pool", "kind",
"size", "strides", "padding"}``, ``{"type": "flatten"}``, ``{"type": "dense", "units"}``.
"""

import numpy as np

try:
    import reference as ref
except ImportError:  # pragma: no cover
    from tests import reference as ref


def pads(size, kernel, stride, padding):
    """(out, before, after) along one axis, TensorFlow's convention."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def padded(a, kernel, strides, padding):
    """Zero-pad axes 1, 2 of ``a``; returns the padded array and the output sizes."""
    (oh, bh, ah), (ow, bw, aw) = (pads(a.shape[1 + i], kernel[i], strides[i], padding)
                                  for i in range(2))
    width = [(0, 0)] * a.ndim
    width[1], width[2] = (bh, ah), (bw, aw)
    return np.pad(a, width), (oh, ow), (bh, bw)


def window(ap, p, q, kernel, strides):
    y, x = p * strides[0], q * strides[1]
    return ap[:, y:y + kernel[0], x:x + kernel[1]]


def conv_forward(a, W, g, cfg, act, L):
    """z[b,p,q,o,c] = Σ_{dy,dx,i,d} ā_pad[b, p·sh+dy, q·sw+dx, i, d] ν[d,c] K[dy,dx,i,o,c]
    + Σ_d ν[d,c] W[bias,o,c]; then σ(norm(η z))."""
    kh, kw = L["kernel"]
    Wc = ref.synapse_norm(W, g["syn_scale"], cfg.synapse_norm_epsilon) if cfg.synapse_norm else W
    c_in, (c_out, k) = a.shape[3], Wc.shape[1:]
    K = Wc[:-1].reshape(kh, kw, c_in, c_out, k)
    ap, (oh, ow), _ = padded(a, L["kernel"], L["strides"], L["padding"])
    z = np.zeros((a.shape[0], oh, ow, c_out, k))
    for p in range(oh):
        for q in range(ow):
            patch = window(ap, p, q, L["kernel"], L["strides"])
            z[:, p, q] = np.einsum("byxid,dc,yxioc->boc", patch, g["nu"], K)
    z = z + np.einsum("dc,oc->oc", g["nu"], Wc[-1])
    return finish(g["eta"] * z, g, cfg, act)


def finish(u, g, cfg, act):
    """Activation norm over batch and positions (when on), then σ."""
    if cfg.activation_norm:
        shape = u.shape
        u = ref.activation_norm(u.reshape(-1, shape[-2], shape[-1]), g["gamma"], g["beta"],
                                cfg.norm_epsilon).reshape(shape)
    return ref.activation(act, u)


def conv_drive(a_up, V, g, cfg, L, lower_shape):
    """G[b,y,x,i,c] = Σ_{p,q,dy,dx: p·sh+dy = y+pad, …} Σ_{o,d} a[b,p,q,o,d] μ[d,c]
    V[(dy,dx,o),i,c]."""
    kh, kw = L["kernel"]
    Vc = ref.synapse_norm(V, g["syn_scale"], cfg.synapse_norm_epsilon) if cfg.synapse_norm else V
    c_in, k = Vc.shape[1:]
    Vt = Vc.reshape(kh, kw, -1, c_in, k)
    B = a_up.shape[0]
    lower = np.zeros((B,) + tuple(lower_shape) + (k,))
    gp, _, (bh, bw) = padded(lower, L["kernel"], L["strides"], L["padding"])
    sh, sw = L["strides"]
    for p in range(a_up.shape[1]):
        for q in range(a_up.shape[2]):
            for dy in range(kh):
                for dx in range(kw):
                    gp[:, p * sh + dy, q * sw + dx] += np.einsum(
                        "bod,dc,oic->bic", a_up[:, p, q], g["mu"], Vt[dy, dx])
    return gp[:, bh:bh + lower_shape[0], bw:bw + lower_shape[1]]


def backward_rule(a, G, g, cfg, act):
    """additive σ(f a + η G); multiplicative σ(f a⊙G); multiplicative_second on states ≥ 1."""
    if cfg.backward_rule == "additive":
        u = g["f"] * a + g["eta"] * G
    elif cfg.backward_rule == "multiplicative":
        u = g["f"] * a * G
    else:
        inner = np.array(a)
        inner[..., 1:] = a[..., 1:] * G[..., 1:]
        u = g["f"] * inner
    return finish(u, g, cfg, act)


def conv_hebbian(a_lo, a_up, pre, post, L, reduction, to_v=False):
    """ΔW[(dy,dx,i),o,c] = R Σ_{b,p,q} (Σ_e lo_pad[b,p·sh+dy,q·sw+dx,i,e] ν̃[e,c])
    (Σ_d μ̃[c,d] up[b,p,q,o,d]), bias row (Σ_e ν̃[e,c]) R Σ (Σ_d μ̃[c,d] up); with ``to_v``
    ΔV[(dy,dx,o),i,c] = R Σ (Σ_e up[b,p,q,o,e] ν̃[e,c]) (Σ_d μ̃[c,d] lo_pad[…, i, d])."""
    kh, kw = L["kernel"]
    ap, (oh, ow), _ = padded(a_lo, L["kernel"], L["strides"], L["padding"])
    c_in, c_out, k = a_lo.shape[3], a_up.shape[3], a_lo.shape[4]
    d = np.zeros((kh, kw, c_out, c_in, k)) if to_v else np.zeros((kh, kw, c_in, c_out, k))
    for p in range(oh):
        for q in range(ow):
            patch = window(ap, p, q, L["kernel"], L["strides"])
            if to_v:
                d += np.einsum("boe,ec,cd,byxid->yxoic", a_up[:, p, q], pre, post, patch)
            else:
                d += np.einsum("byxie,ec,cd,bod->yxioc", patch, pre, post, a_up[:, p, q])
    d = d.reshape(-1, d.shape[-2], k)
    if not to_v:
        bias = np.einsum("ec,cd,bpqod->oc", pre, post, a_up)
        d = np.concatenate([d, bias[None]], axis=0)
    return d / a_lo.shape[0] if reduction == "mean" else d


def conv_oja(M, a_dst, post, eta_syn, m, reduction):
    """−sign(η̃)|m| M[r, j, c] E[j, c], E = R Σ_{b, positions} (Σ_d μ̃[c,d] a_dst[…, j, d])²."""
    mixed = np.einsum("cd,bpqjd->bpqjc", post, a_dst)
    energy = (mixed ** 2).sum(axis=(0, 1, 2))
    if reduction == "mean":
        energy = energy / a_dst.shape[0]
    return -np.sign(eta_syn) * abs(m) * M * energy[None]


def conv_update(W, V, a_lo, a_up, g, cfg, L, update_backward):
    """W ← f̃W + η̃(ΔW + Oja), V likewise unless symmetric, saturation, single-state, symmetric."""
    red = cfg.batch_reduction
    dW = conv_hebbian(a_lo, a_up, g["pre"], g["post"], L, red)
    if cfg.oja:
        dW = dW + conv_oja(W, a_up, g["post"], g["eta_syn"], g["oja"], red)
    W_new = g["f_syn"] * W + g["eta_syn"] * dW
    V_new = np.array(V)
    if update_backward and not cfg.symmetric:
        dV = conv_hebbian(a_lo, a_up, g["pre"], g["post"], L, red, to_v=True)
        if cfg.oja:
            dV = dV + conv_oja(V, a_lo, g["post"], g["eta_syn"], g["oja"], red)
        V_new = g["f_syn"] * V + g["eta_syn"] * dV
    if cfg.saturation:
        W_new = g["alpha"] * np.tanh(W_new / g["alpha"])
        if update_backward:
            V_new = g["alpha"] * np.tanh(V_new / g["alpha"])
    if cfg.single_state:
        W_new = np.repeat(W_new[..., :1], W_new.shape[-1], -1)
        if update_backward and not cfg.symmetric:
            V_new = np.repeat(V_new[..., :1], V_new.shape[-1], -1)
    if cfg.symmetric and update_backward:
        kh, kw = L["kernel"]
        c_in = a_lo.shape[3]
        V_new = np.zeros_like(V)
        for dy in range(kh):
            for dx in range(kw):
                for i in range(c_in):
                    for o in range(W.shape[1]):
                        t = dy * kw + dx
                        V_new[t * W.shape[1] + o, i] = W_new[t * c_in + i, o]
    return W_new, V_new


def pool_choice(a, L):
    """Per output position and channel: the lower taps and their weights (max: the first tap
    where state 0 is largest; avg: every inside tap, 1/count)."""
    (oh, bh, _), (ow, bw, _) = (pads(a.shape[1 + i], L["size"][i], L["strides"][i], L["padding"])
                                for i in range(2))
    B, H, W_, C = a.shape[:4]
    choice = {}
    for b in range(B):
        for p in range(oh):
            for q in range(ow):
                for i in range(C):
                    taps = [(p * L["strides"][0] + dy - bh, q * L["strides"][1] + dx - bw)
                            for dy in range(L["size"][0]) for dx in range(L["size"][1])]
                    taps = [(y, x) for y, x in taps if 0 <= y < H and 0 <= x < W_]
                    if L["kind"] == "max":
                        best = int(np.argmax([a[b, y, x, i, 0] for y, x in taps]))
                        choice[b, p, q, i] = [(taps[best], 1.0)]
                    else:
                        choice[b, p, q, i] = [(t, 1.0 / len(taps)) for t in taps]
    return choice, (oh, ow)


def pool_forward(a, choice, out_hw):
    out = np.zeros((a.shape[0],) + out_hw + a.shape[3:])
    for (b, p, q, i), taps in choice.items():
        for (y, x), r in taps:
            out[b, p, q, i] += r * a[b, y, x, i]
    return out


def pool_back(G, choice, lower_shape):
    out = np.zeros((G.shape[0],) + tuple(lower_shape) + (G.shape[-1],))
    for (b, p, q, i), taps in choice.items():
        for (y, x), r in taps:
            out[b, y, x, i] += r * G[b, p, q, i]
    return out


def transforms(a, layers, choices=None):
    """Apply pools/flattens; returns (out, choices, input shapes)."""
    made, shapes = [], []
    for n, L in enumerate(layers):
        shapes.append(a.shape[1:-1])
        if L["type"] == "flatten":
            a = a.reshape(a.shape[0], -1, a.shape[-1])
            made.append(None)
        else:
            choice, out_hw = pool_choice(a, L) if choices is None else choices[n]
            a = pool_forward(a, choice, out_hw)
            made.append((choice, out_hw))
    return a, made, shapes


def stages_of(layers):
    """Split into (transforms, synaptic layer) stages."""
    stages, pending = [], []
    for L in layers:
        if L["type"] in ("conv", "dense"):
            stages.append((pending, L))
            pending = []
        else:
            pending.append(L)
    return stages


def inner_step(g, synapses, x, y, cfg, layers):
    """One inner step (docs/conv.md): reset, forward, feedback, backward, update (V⁰ kept)."""
    stages = stages_of(layers)
    k, n = synapses[0][0].shape[-1], len(stages)
    acts = [cfg.hidden_activation] * (n - 1) + [cfg.last_activation]
    a = [ref.input_states(x, k)]
    made = []
    for l, (trans, L) in enumerate(stages):
        lower, chosen, shapes = transforms(a[l], trans)
        made.append((chosen, shapes))
        W = synapses[l][0]
        a.append(conv_forward(lower, W, g, cfg, acts[l], L) if L["type"] == "conv"
                 else ref.forward_layer(lower, W, g, cfg, acts[l]))
    last = a[n]
    a[n] = ref.feedback(last.reshape(last.shape[0], -1, k), y.reshape(y.shape[0], -1),
                        cfg.feedback).reshape(last.shape)
    for l in range(n - 1, 0, -1):
        trans, L = stages[l]
        lower_shape = transforms(a[l], trans, made[l][0])[0].shape[1:-1]
        if L["type"] == "conv":
            G = conv_drive(a[l + 1], synapses[l][1], g, cfg, L, lower_shape)
        else:
            V = ref.synapse_norm(synapses[l][1], g["syn_scale"], cfg.synapse_norm_epsilon) \
                if cfg.synapse_norm else synapses[l][1]
            G = np.einsum("bjd,dc,jic->bic", a[l + 1], g["mu"], V)
        for T, chosen, shape in reversed(list(zip(trans, *made[l]))):
            G = G.reshape((G.shape[0],) + tuple(shape) + (k,)) if T["type"] == "flatten" \
                else pool_back(G, chosen[0], shape)
        a[l] = backward_rule(a[l], G, g, cfg, cfg.backward_activation)
    new = []
    for l, (trans, L) in enumerate(stages):
        lower = transforms(a[l], trans, made[l][0])[0]
        W, V = synapses[l]
        if L["type"] == "conv":
            new.append(conv_update(W, V, lower, a[l + 1], g, cfg, L, update_backward=l > 0))
        else:
            new.append(ref.update_pair(W, V, lower, a[l + 1], g, cfg, update_backward=l > 0))
    return new, a
