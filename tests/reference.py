"""An independent float64 NumPy reference of BLUR (docs/spec.md §2–3), written from the
specification text.

Everything here works on ONE population member: activations ``[B, n, k]``,
forward synapses ``W [n_l + 1, n_{l+1}, k]`` (last row = bias), backward
synapses ``V [n_{l+1}, n_l, k]``, and a genome given as a dict of plain arrays
without species/layer axes (``nu``, ``mu``, ``pre``, ``post``: ``[k, k]``;
``f``, ``eta``, ``f_syn``, ``eta_syn``, ``oja``, ``alpha``, ``syn_scale``:
scalars; ``gamma``, ``beta``: ``[k]``).  Population axes (docs/spec.md §6) are handled
by the caller with explicit Python loops over species and replicas.

The formulas are transcribed literally (full ``np.einsum`` contractions with
all operands, or explicit loops), deliberately NOT in the two-contraction form
the library uses, so that index-order mistakes in either show up.

``cfg`` is any object with the attributes of ``blur_keras.BlurConfig``
(``hidden_activation``, ``last_activation``, ``backward_activation``,
``feedback``, ``backward_rule``, ``symmetric``, ``single_state``,
``batch_reduction``, ``activation_norm``, ``synapse_norm``, ``oja``,
``saturation``, ``norm_epsilon``, ``synapse_norm_epsilon``); only its fields
are read.
"""

import numpy as np

# ---------------------------------------------------------------------------
# σ and σ' (docs/spec.md §2, §4)
# ---------------------------------------------------------------------------


def _sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


def _sech2(u):
    return 1.0 / np.cosh(u) ** 2


# name -> (σ, σ'), each written independently of the library
_FUNCS = {
    "relu_tanh": (lambda u: np.maximum(np.tanh(u), 0.0),
                  lambda u: np.where(u > 0, _sech2(u), 0.0)),
    "tanh": (np.tanh, _sech2),
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: np.where(u > 0, 1.0, 0.0)),
    "sigmoid": (_sigmoid, lambda u: np.exp(-u) / (1.0 + np.exp(-u)) ** 2),
    "linear": (lambda u: np.array(u, dtype=np.float64), lambda u: np.ones_like(u, dtype=np.float64)),
}
_ALIASES = {"identity": "linear", None: "linear"}


def sigma(name):
    """(σ, σ') of an elementwise activation name."""
    return _FUNCS[_ALIASES.get(name, name)]


def activation(name, u):
    """Apply activation ``name`` to a k-state pre-activation ``u[..., k]``.

    ``backprop_<base>`` is state-aware: state 0 gets σ(u0), states ≥ 1 get σ'(u).
    """
    u = np.asarray(u, dtype=np.float64)
    if isinstance(name, str) and name.startswith("backprop_"):
        s, ds = sigma(name[len("backprop_"):])
        out = np.empty_like(u)
        out[..., 0] = s(u[..., 0])
        out[..., 1:] = ds(u[..., 1:])
        return out
    return sigma(name)[0](u)


# ---------------------------------------------------------------------------
# Steps 1–2: reset and forward
# ---------------------------------------------------------------------------


def input_states(x, k):
    """Reset: a^0[..., 0] = x, other states 0."""
    x = np.asarray(x, dtype=np.float64)
    a = np.zeros(x.shape + (k,))
    a[..., 0] = x
    return a


def with_bias(a):
    """ā = [a ; 1]: a bias neuron whose k states are all 1, appended on the neuron axis."""
    B, n, k = a.shape
    out = np.ones((B, n + 1, k))
    out[:, :n, :] = a
    return out


def activation_norm(u, gamma, beta, eps):
    """Batch normalisation per neuron and state, then per-state γ, β (docs/spec.md §3).

    ``u[B, n, k]``; mean and (biased) variance over the batch axis.
    """
    B, n, k = u.shape
    out = np.empty_like(u)
    for i in range(n):
        for c in range(k):
            col = u[:, i, c]
            m = col.sum() / B
            var = ((col - m) ** 2).sum() / B
            out[:, i, c] = gamma[c] * (col - m) / np.sqrt(var + eps) + beta[c]
    return out


def synapse_norm(M, scale, eps):
    """``M[:, j, c] / sqrt(Σ_i M[i, j, c]² + ε)``, × scale (docs/spec.md §3); sums over the
    first (source) axis."""
    n_src, n_dst, k = M.shape
    out = np.empty_like(M)
    for j in range(n_dst):
        for c in range(k):
            out[:, j, c] = scale * M[:, j, c] / np.sqrt(np.sum(M[:, j, c] ** 2) + eps)
    return out


def forward_layer(a_below, W, g, cfg, act, current=None):
    """a^{l+1} = σ(f · a^{l+1} + η · z^{l+1}),
    z^{l+1}[b, j, c] = Σ_i Σ_d ā^l[b, i, d] ν[d, c] W[i, j, c].

    ``current`` is the present a^{l+1} (zeros after a reset when None).
    """
    abar = with_bias(a_below)
    Wc = synapse_norm(W, g["syn_scale"], cfg.synapse_norm_epsilon) if cfg.synapse_norm else W
    z = np.einsum("bid,dc,ijc->bjc", abar, g["nu"], Wc)
    if current is None:
        current = np.zeros_like(z)
    u = g["f"] * current + g["eta"] * z
    if cfg.activation_norm:
        u = activation_norm(u, g["gamma"], g["beta"], cfg.norm_epsilon)
    return activation(act, u)


# ---------------------------------------------------------------------------
# Step 3: feedback
# ---------------------------------------------------------------------------


def feedback(aL, y, mode):
    """target: state 1 := y; error: state 1 := (state 0 − y) ⊙ state 1; states ≥ 2 := 0."""
    a = np.array(aL, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if mode == "target":
        a[..., 1] = y
    elif mode == "error":
        a[..., 1] = (aL[..., 0] - y) * aL[..., 1]
    else:
        raise ValueError(mode)
    a[..., 2:] = 0.0
    return a


# ---------------------------------------------------------------------------
# Step 4: backward
# ---------------------------------------------------------------------------


def backward_layer(a_above, a_cur, V, g, cfg, act):
    """g^l[b, i, c] = Σ_j Σ_d a^{l+1}[b, j, d] μ[d, c] V[j, i, c], then the selected rule."""
    Vc = synapse_norm(V, g["syn_scale"], cfg.synapse_norm_epsilon) if cfg.synapse_norm else V
    G = np.einsum("bjd,dc,jic->bic", a_above, g["mu"], Vc)
    rule = cfg.backward_rule
    if rule == "additive":
        u = g["f"] * a_cur + g["eta"] * G
    elif rule == "multiplicative":
        u = g["f"] * (a_cur * G)
    elif rule == "multiplicative_second":
        inner = np.array(a_cur, dtype=np.float64)
        inner[..., 1:] = a_cur[..., 1:] * G[..., 1:]
        u = g["f"] * inner
    else:
        raise ValueError(rule)
    if cfg.activation_norm:
        u = activation_norm(u, g["gamma"], g["beta"], cfg.norm_epsilon)
    return activation(act, u)


# ---------------------------------------------------------------------------
# Step 5 and §3: synapse update
# ---------------------------------------------------------------------------


def hebbian(a_src, a_dst, pre, post, reduction="sum"):
    """Δ[i, j, c] = Σ_b (Σ_e a_src[b,i,e] ν̃[e,c]) (Σ_d μ̃[c,d] a_dst[b,j,d]) (or batch mean)."""
    d = np.einsum("bie,ec,cd,bjd->ijc", a_src, pre, post, a_dst)
    if reduction == "mean":
        d = d / a_src.shape[0]
    return d


def oja(M, a_dst, post, eta_syn, m_oja, reduction="sum"):
    """−sign(η̃) |m_oja| M[i, j, c] Σ_b (Σ_d μ̃[c,d] a_dst[b,j,d])²  (batch mean under "mean").

    ``M`` is W (``a_dst = a^{l+1}``) or V (``a_dst = a^l``); ``j`` indexes M's second axis.
    """
    B, n_dst, k = a_dst.shape
    energy = np.zeros((n_dst, k))
    for b in range(B):
        for j in range(n_dst):
            for c in range(k):
                energy[j, c] += sum(post[c, d] * a_dst[b, j, d] for d in range(k)) ** 2
    if reduction == "mean":
        energy = energy / B
    return -np.sign(eta_syn) * abs(m_oja) * M * energy[None, :, :]


def update_pair(W, V, a_lo, a_up, g, cfg, update_backward=True):
    """W ← f̃W + η̃(ΔW [+ Oja]); V likewise unless symmetric; saturation; then syncs.

    ``update_backward=False`` (the first pair): V is returned unchanged, W is updated as usual
    (saturation and the single-state tie included).
    """
    if not update_backward:
        W_new, _ = update_pair(W, V, a_lo, a_up, g, cfg.replace(symmetric=True))
        return W_new, np.array(V, dtype=np.float64)
    red = cfg.batch_reduction
    n = a_lo.shape[1]
    abar = with_bias(a_lo)
    dW = hebbian(abar, a_up, g["pre"], g["post"], red)
    if cfg.oja:
        dW = dW + oja(W, a_up, g["post"], g["eta_syn"], g["oja"], red)
    W_new = g["f_syn"] * W + g["eta_syn"] * dW
    if cfg.symmetric:
        V_new = None
    else:
        dV = hebbian(a_up, a_lo, g["pre"], g["post"], red)
        if cfg.oja:
            dV = dV + oja(V, a_lo, g["post"], g["eta_syn"], g["oja"], red)
        V_new = g["f_syn"] * V + g["eta_syn"] * dV
    if cfg.saturation:
        W_new = g["alpha"] * np.tanh(W_new / g["alpha"])
        if V_new is not None:
            V_new = g["alpha"] * np.tanh(V_new / g["alpha"])
    W_new, V_new = sync(W_new, V_new, cfg.symmetric, cfg.single_state, n)
    return W_new, V_new


def sync(W, V, symmetric, single_state, n=None):
    """single_state: every channel := channel 0; symmetric: V := W[:n]ᵀ (bias row dropped)."""
    W = np.array(W, dtype=np.float64)
    if n is None:
        n = W.shape[0] - 1
    if single_state:
        for c in range(1, W.shape[-1]):
            W[..., c] = W[..., 0]
        if V is not None:
            V = np.array(V, dtype=np.float64)
            for c in range(1, V.shape[-1]):
                V[..., c] = V[..., 0]
    if symmetric:
        n_up, k = W.shape[1], W.shape[2]
        V = np.empty((n_up, n, k))
        for j in range(n_up):
            for i in range(n):
                V[j, i, :] = W[i, j, :]
    return W, V


# ---------------------------------------------------------------------------
# A whole inner step
# ---------------------------------------------------------------------------


def forward_pass(genome, synapses, x, cfg, per_layer=False, forward_acts=None):
    """Reset + forward; returns [a^0, …, a^L]. ``genome`` is a dict, or a list of dicts (per layer).

    ``forward_acts[l - 1]`` (optional) is the forward σ of layer l = 1…L; by default the
    hidden σ for layers 1…L−1 and the last-layer σ for layer L.
    """
    L = len(synapses)
    k = synapses[0][0].shape[-1]
    acts = forward_acts or [cfg.hidden_activation] * (L - 1) + [cfg.last_activation]
    a = [input_states(x, k)]
    for l in range(L):
        gl = genome[l] if per_layer else genome
        a.append(forward_layer(a[l], synapses[l][0], gl, cfg, acts[l]))
    return a


def inner_step(genome, synapses, x, y, cfg, per_layer=False, forward_acts=None, backward_acts=None):
    """Reset, forward, feedback, backward (l = L−1 … 1), synapse update of every pair (V⁰ kept).

    With a per-layer genome, pair l (W^l, V^l) uses ``genome[l]`` for everything that goes
    through it: the forward step into layer l+1, the backward step into layer l and its update.
    ``backward_acts[l - 1]`` (optional) is the backward σ of layer l (default: the backward σ).
    Returns ``(new_synapses, states)``.
    """
    L = len(synapses)
    a = forward_pass(genome, synapses, x, cfg, per_layer, forward_acts)
    a[L] = feedback(a[L], y, cfg.feedback)
    for l in range(L - 1, 0, -1):
        gl = genome[l] if per_layer else genome
        act = backward_acts[l - 1] if backward_acts else cfg.backward_activation
        a[l] = backward_layer(a[l + 1], a[l], synapses[l][1], gl, cfg, act)
    new = []
    for l in range(L):
        gl = genome[l] if per_layer else genome
        # V⁰ is never read (the input layer is never written): it stays as it was
        new.append(update_pair(synapses[l][0], synapses[l][1], a[l], a[l + 1], gl, cfg,
                               update_backward=l > 0))
    return new, a
