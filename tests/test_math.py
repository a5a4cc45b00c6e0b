"""The TF math of blur_keras against the independent float64 NumPy reference (tests/reference.py).

Every option of docs/spec.md §2–3 is checked on small tensors (k = 3, non-square layers) with a
species axis (S = 2, genome entries differ per species) and a replica axis (R = 3) present; the reference
loops over species and replicas explicitly.  Genome transforms are random and asymmetric, so a
transposed ν, μ, ν̃ or μ̃ cannot pass (see ``test_tests_are_sensitive_to_index_order``).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import BlurConfig, Genome, activations, init_synapses, inner_step, predict
from blur_keras.backward import backward_layer
from blur_keras.feedback import apply_feedback
from blur_keras.forward import forward_layer, input_states
from blur_keras.genome import NAMES, align_to_population, num_core_numbers
from blur_keras.normalization import normalize_activations, normalize_synapses
from blur_keras.states import with_bias_neuron
from blur_keras.synapses import hebbian_delta, saturate, sync, update_pair

try:  # pytest's default (prepend) import mode puts tests/ on sys.path
    import reference as ref
except ImportError:  # pragma: no cover
    from tests import reference as ref

S, R, K, B = 2, 3, 3, 4          # species, replicas, states, batch
N_LO, N_UP = 5, 4                # a non-square layer pair
SIZES = (5, 4, 3, 2)             # 3 layer pairs, all non-square
RTOL = ATOL = 1e-5
TRANSFORMS = ("nu", "mu", "pre", "post")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def f32(x):
    """Round to float32 and return float64, so TF and the reference see identical inputs."""
    return np.asarray(x, np.float32).astype(np.float64)


def rand_genome(seed, lead=(S,), k=K, eta_syn_sign=-1.0, oja_signs=True):
    """A random genome with leading axes ``lead``; asymmetric transforms, values differ per species."""
    rng = np.random.default_rng(seed)

    def uni(lo, hi, shape=()):
        return f32(rng.uniform(lo, hi, lead + shape))

    g = {n: f32(rng.normal(0.0, 0.7, lead + (k, k))) for n in TRANSFORMS}
    for n in TRANSFORMS:  # asymmetric in every member
        m = g[n]
        assert np.min(np.abs(m - np.swapaxes(m, -1, -2)).reshape(-1, k * k).max(-1)) > 0.1
    oja = uni(0.5, 1.5)
    if oja_signs and lead:  # negative multipliers exercise |m_oja|
        oja = oja * np.where(np.arange(lead[0]) % 2 == 1, -1.0, 1.0).reshape((-1,) + (1,) * (len(lead) - 1))
    g.update(
        f=uni(0.5, 1.0), eta=uni(0.6, 1.4), f_syn=uni(0.85, 1.0),
        eta_syn=f32(eta_syn_sign * rng.uniform(0.02, 0.08, lead)),
        gamma=uni(0.5, 1.5, (k,)), beta=f32(rng.normal(0.0, 0.3, lead + (k,))),
        oja=f32(oja), alpha=uni(0.8, 2.0), syn_scale=uni(0.5, 2.0),
    )
    return g


def tf_params(g, num_pop=2):
    """Genome dict of float32 tensors, aligned to ``num_pop`` population axes (library helper)."""
    return align_to_population({n: tf.constant(v, tf.float32) for n, v in g.items()}, num_pop)


def member(g, *idx):
    return {n: v[idx] for n, v in g.items()}


def rand(seed, shape, lo=-1.0, hi=1.0):
    return f32(np.random.default_rng(seed).uniform(lo, hi, shape))


def rand_w(seed, n_src, n_dst, lead=(S, R), k=K, bias=True):
    """Random synapses (a non-zero bias row when ``bias``), entries O(1/sqrt(n_src))."""
    rows = n_src + 1 if bias else n_src
    return f32(np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(rows), lead + (rows, n_dst, k)))


def tfc(x):
    return tf.constant(x, tf.float32)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = actual.numpy() if hasattr(actual, "numpy") else np.asarray(actual)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def per_member(fn):
    """Stack ``fn(s, r)`` over the species and replica axes."""
    return np.stack([np.stack([fn(s, r) for r in range(R)]) for s in range(S)])


def random_synapses(seed, sizes=SIZES, lead=(S, R), cfg=None):
    syn = []
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rand_w(seed + 2 * l, n, m, lead)
        v = rand_w(seed + 2 * l + 1, m, n, lead, bias=False)
        if cfg is not None and (cfg.symmetric or cfg.single_state):
            flat_w = w.reshape((-1,) + w.shape[-3:])
            flat_v = v.reshape((-1,) + v.shape[-3:])
            pairs = [ref.sync(a, b, cfg.symmetric, cfg.single_state) for a, b in zip(flat_w, flat_v)]
            w = np.stack([p[0] for p in pairs]).reshape(w.shape)
            v = np.stack([p[1] for p in pairs]).reshape(v.shape)
        syn.append((w, v))
    return syn


def one_hot_pm(seed, lead, n_out):
    labels = np.random.default_rng(seed).integers(0, n_out, lead + (B,))
    return np.where(np.arange(n_out) == labels[..., None], 1.0, -1.0)


# ---------------------------------------------------------------------------
# the genome used by most tests must make the tests discriminative
# ---------------------------------------------------------------------------


def check_update_pair(w, v, a_lo, a_up, g, cfg):
    """``update_pair`` on the whole [S, R] population vs the reference member by member."""
    w_new, v_new = update_pair(tfc(w), tfc(v), tfc(a_lo), tfc(a_up), tf_params(g), cfg)
    exp = [[ref.update_pair(w[s, r], v[s, r], a_lo[s, r], a_up[s, r], member(g, s), cfg)
            for r in range(R)] for s in range(S)]
    close(w_new, np.array([[e[0] for e in row] for row in exp]))
    close(v_new, np.array([[e[1] for e in row] for row in exp]))
    return w_new, v_new

def test_tests_are_sensitive_to_index_order():
    """With the asymmetric test genome, transposing any transform changes the reference result."""
    g = member(rand_genome(0), 0)
    cfg = BlurConfig(backward_activation="tanh")
    syn = [(w[0, 0], v[0, 0]) for w, v in random_synapses(10)]
    x = rand(1, (B, SIZES[0]))
    y = one_hot_pm(2, (), SIZES[-1])
    base, states = ref.inner_step(g, syn, x, y, cfg)
    for name in TRANSFORMS:
        gt = dict(g, **{name: g[name].T})
        other, other_states = ref.inner_step(gt, syn, x, y, cfg)
        diff = max(np.abs(a - b).max() for p, q in zip(base, other) for a, b in zip(p, q))
        diff = max(diff, max(np.abs(a - b).max() for a, b in zip(states, other_states)))
        assert diff > 1e-2, name


# ---------------------------------------------------------------------------
# activations (σ and the state-aware backprop_*)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", activations.names())
def test_activation(name):
    u = rand(3, (S, R, B, N_UP, K), -2.5, 2.5)
    close(activations.get(name)(tfc(u)), ref.activation(name, u))
    if name.startswith("backprop_"):
        s, ds = ref.sigma(name[len("backprop_"):])
        out = activations.get(name)(tfc(u)).numpy()
        close(out[..., 0], s(u[..., 0]))
        close(out[..., 1:], ds(u[..., 1:]))


@pytest.mark.parametrize("name", ["relu_tanh", "tanh", "relu", "sigmoid", "linear"])
def test_derivative_closed_form(name):
    u = rand(4, (7, K), -2.5, 2.5)
    close(activations.derivative(name)(tfc(u)), ref.sigma(name)[1](u))


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="nope"):
        activations.get("nope")
    with pytest.raises(ValueError, match="hidden_activation"):
        BlurConfig(hidden_activation="nope")


# ---------------------------------------------------------------------------
# step 1–2: reset and forward layer
# ---------------------------------------------------------------------------

def test_input_states():
    x = rand(5, (S, R, B, N_LO))
    a = input_states(tfc(x), K)
    close(a, ref.input_states(x, K))
    assert np.all(a.numpy()[..., 1:] == 0)


def test_with_bias_neuron():
    a = rand(6, (S, R, B, N_LO, K))
    out = with_bias_neuron(tfc(a)).numpy()
    assert out.shape == (S, R, B, N_LO + 1, K)
    close(out[..., :N_LO, :], a)
    assert np.all(out[..., N_LO, :] == 1.0)


@pytest.mark.parametrize("with_current", [False, True], ids=["reset", "current"])
@pytest.mark.parametrize("act", activations.names())
def test_forward_layer(act, with_current):
    g = rand_genome(11)
    a = rand(12, (S, R, B, N_LO, K))
    w = rand_w(13, N_LO, N_UP)
    cur = rand(14, (S, R, B, N_UP, K)) if with_current else None
    cfg = BlurConfig()
    out = forward_layer(tfc(a), tfc(w), tf_params(g), cfg, act,
                        current=None if cur is None else tfc(cur))
    expected = per_member(lambda s, r: ref.forward_layer(
        a[s, r], w[s, r], member(g, s), cfg, act, None if cur is None else cur[s, r]))
    close(out, expected)


def test_forward_layer_bias_row_enters_as_bias():
    """Only the bias row is non-zero: z[b, j, c] = Σ_d ν[d, c] W[n, j, c] for every input."""
    g = rand_genome(15)
    a = rand(16, (S, R, B, N_LO, K))
    w = rand_w(17, N_LO, N_UP)
    w[..., :N_LO, :, :] = 0.0
    out = forward_layer(tfc(a), tfc(w), tf_params(g), BlurConfig(), "linear").numpy()
    for s in range(S):
        for r in range(R):
            z = np.einsum("dc,jc->jc", member(g, s)["nu"], w[s, r, N_LO])
            close(out[s, r], np.broadcast_to(member(g, s)["eta"] * z, (B, N_UP, K)))


# ---------------------------------------------------------------------------
# step 3: feedback
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("targets_lead", [(), (S, R)], ids=["broadcast", "population"])
@pytest.mark.parametrize("mode", ["target", "error"])
def test_feedback(mode, targets_lead):
    a = rand(20, (S, R, B, 2, K))
    if mode == "target":
        y = one_hot_pm(21, targets_lead, 2)
    else:
        y = rand(21, targets_lead + (B, 2))
    out = apply_feedback(tfc(a), tfc(y), mode)
    yb = np.broadcast_to(y, (S, R, B, 2))
    expected = per_member(lambda s, r: ref.feedback(a[s, r], yb[s, r], mode))
    close(out, expected)
    out = out.numpy()
    close(out[..., 0], a[..., 0])
    assert np.all(out[..., 2:] == 0)


# ---------------------------------------------------------------------------
# step 4: backward layer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["relu_tanh", "linear", "backprop_tanh"])
@pytest.mark.parametrize("rule", ["additive", "multiplicative", "multiplicative_second"])
def test_backward_layer(rule, act):
    g = rand_genome(30)
    a_up = rand(31, (S, R, B, N_UP, K))
    a_cur = rand(32, (S, R, B, N_LO, K))
    v = rand_w(33, N_UP, N_LO, bias=False)
    cfg = BlurConfig(backward_rule=rule)
    out = backward_layer(tfc(a_up), tfc(a_cur), tfc(v), tf_params(g), cfg, act)
    expected = per_member(lambda s, r: ref.backward_layer(
        a_up[s, r], a_cur[s, r], v[s, r], member(g, s), cfg, act))
    close(out, expected)


def test_multiplicative_second_keeps_state0():
    g = rand_genome(34)
    a_up = rand(35, (S, R, B, N_UP, K))
    a_cur = rand(36, (S, R, B, N_LO, K))
    v = rand_w(37, N_UP, N_LO, bias=False)
    cfg = BlurConfig(backward_rule="multiplicative_second")
    out = backward_layer(tfc(a_up), tfc(a_cur), tfc(v), tf_params(g), cfg, "linear").numpy()
    f = g["f"][:, None, None, None, None]
    close(out[..., 0], (f * a_cur)[..., 0])


# ---------------------------------------------------------------------------
# step 5: Hebbian update
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("direction", ["W", "V"])
def test_hebbian_delta(direction, reduction):
    g = rand_genome(40)
    a_lo = rand(41, (S, R, B, N_LO, K))
    a_up = rand(42, (S, R, B, N_UP, K))
    if direction == "W":
        src, dst = with_bias_neuron(tfc(a_lo)), tfc(a_up)
        ref_src = lambda s, r: ref.with_bias(a_lo[s, r])  # noqa: E731
        ref_dst = lambda s, r: a_up[s, r]  # noqa: E731
    else:
        src, dst = tfc(a_up), tfc(a_lo)
        ref_src = lambda s, r: a_up[s, r]  # noqa: E731
        ref_dst = lambda s, r: a_lo[s, r]  # noqa: E731
    delta, _ = hebbian_delta(src, dst, tf_params(g), reduction)
    expected = per_member(lambda s, r: ref.hebbian(
        ref_src(s, r), ref_dst(s, r), member(g, s)["pre"], member(g, s)["post"], reduction))
    close(delta, expected)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_update_pair_plain(reduction):
    """W ← f̃W + η̃ΔW and V ← f̃V + η̃ΔV, V by its own rule (no options)."""
    g = rand_genome(43)
    a_lo = rand(44, (S, R, B, N_LO, K))
    a_up = rand(45, (S, R, B, N_UP, K))
    w, v = rand_w(46, N_LO, N_UP), rand_w(47, N_UP, N_LO, bias=False)
    cfg = BlurConfig(batch_reduction=reduction)
    w_new, v_new = check_update_pair(w, v, a_lo, a_up, g, cfg)


def test_mean_is_sum_over_batch_size():
    g = rand_genome(48)
    a_lo = rand(49, (S, R, B, N_LO, K))
    a_up = rand(50, (S, R, B, N_UP, K))
    d_sum, _ = hebbian_delta(with_bias_neuron(tfc(a_lo)), tfc(a_up), tf_params(g), "sum")
    d_mean, _ = hebbian_delta(with_bias_neuron(tfc(a_lo)), tfc(a_up), tf_params(g), "mean")
    close(d_mean, d_sum.numpy() / B)


# ---------------------------------------------------------------------------
# §3 activation normalisation
# ---------------------------------------------------------------------------

def test_normalize_activations():
    g = rand_genome(60)
    u = rand(61, (S, R, B, N_UP, K), -2.0, 3.0)
    p = tf_params(g)
    out = normalize_activations(tfc(u), p["gamma"], p["beta"], 1e-3)
    expected = per_member(lambda s, r: ref.activation_norm(
        u[s, r], g["gamma"][s], g["beta"][s], 1e-3))
    close(out, expected)


@pytest.mark.parametrize("where", ["forward", "forward_current", "additive", "multiplicative",
                                   "multiplicative_second"])
def test_activation_norm_in_layers(where):
    g = rand_genome(62)
    a_lo = rand(63, (S, R, B, N_LO, K))
    a_up = rand(64, (S, R, B, N_UP, K))
    p = tf_params(g)
    if where.startswith("forward"):
        cfg = BlurConfig(activation_norm=True, norm_epsilon=1e-2)
        w = rand_w(65, N_LO, N_UP)
        cur = a_up if where == "forward_current" else None
        out = forward_layer(tfc(a_lo), tfc(w), p, cfg, "tanh",
                            current=None if cur is None else tfc(cur))
        expected = per_member(lambda s, r: ref.forward_layer(
            a_lo[s, r], w[s, r], member(g, s), cfg, "tanh", None if cur is None else cur[s, r]))
    else:
        cfg = BlurConfig(activation_norm=True, backward_rule=where, norm_epsilon=1e-2)
        v = rand_w(66, N_UP, N_LO, bias=False)
        out = backward_layer(tfc(a_up), tfc(a_lo), tfc(v), p, cfg, "tanh")
        expected = per_member(lambda s, r: ref.backward_layer(
            a_up[s, r], a_lo[s, r], v[s, r], member(g, s), cfg, "tanh"))
    close(out, expected)


# ---------------------------------------------------------------------------
# §3 synapse normalisation (in activations only)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["W", "V"])
def test_normalize_synapses(which):
    g = rand_genome(70)
    m = rand_w(71, N_LO, N_UP) if which == "W" else rand_w(72, N_UP, N_LO, bias=False)
    p = tf_params(g)
    out = normalize_synapses(tfc(m), p["syn_scale"], 1e-8)
    expected = per_member(lambda s, r: ref.synapse_norm(m[s, r], g["syn_scale"][s], 1e-8))
    close(out, expected)
    if which == "W":  # the bias row takes part in the column norm
        w2 = m.copy()
        w2[..., -1, :, :] *= 3.0
        out2 = normalize_synapses(tfc(w2), p["syn_scale"], 1e-8).numpy()
        assert np.abs(out2[..., :-1, :, :] - out.numpy()[..., :-1, :, :]).max() > 1e-3


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_synapse_norm_in_layers(direction):
    g = rand_genome(73)
    a_lo = rand(74, (S, R, B, N_LO, K))
    a_up = rand(75, (S, R, B, N_UP, K))
    cfg = BlurConfig(synapse_norm=True)
    p = tf_params(g)
    if direction == "forward":
        w = f32(5.0 * rand_w(76, N_LO, N_UP))  # large: the norm matters
        w_tf = tfc(w)
        out = forward_layer(tfc(a_lo), w_tf, p, cfg, "tanh")
        expected = per_member(lambda s, r: ref.forward_layer(
            a_lo[s, r], w[s, r], member(g, s), cfg, "tanh"))
        close(w_tf, w, rtol=0, atol=0)  # stored synapses unchanged
    else:
        v = f32(5.0 * rand_w(77, N_UP, N_LO, bias=False))
        out = backward_layer(tfc(a_up), tfc(a_lo), tfc(v), p, cfg, "tanh")
        expected = per_member(lambda s, r: ref.backward_layer(
            a_up[s, r], a_lo[s, r], v[s, r], member(g, s), cfg, "tanh"))
    close(out, expected)


# ---------------------------------------------------------------------------
# §3 Oja term, saturation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("eta_sign", [1.0, -1.0], ids=["eta+", "eta-"])
def test_oja(eta_sign, reduction):
    g = rand_genome(80, eta_syn_sign=eta_sign)  # species 1 has a negative m_oja
    assert g["oja"][1] < 0 < g["oja"][0]
    a_lo = rand(81, (S, R, B, N_LO, K))
    a_up = rand(82, (S, R, B, N_UP, K))
    w, v = rand_w(83, N_LO, N_UP), rand_w(84, N_UP, N_LO, bias=False)
    cfg = BlurConfig(oja=True, batch_reduction=reduction)
    w_new, v_new = check_update_pair(w, v, a_lo, a_up, g, cfg)
    # the Oja part alone makes a difference
    w_plain, v_plain = update_pair(tfc(w), tfc(v), tfc(a_lo), tfc(a_up), tf_params(g),
                                   cfg.replace(oja=False))
    assert np.abs(w_plain.numpy() - w_new.numpy()).max() > 1e-4
    assert np.abs(v_plain.numpy() - v_new.numpy()).max() > 1e-4


@pytest.mark.parametrize("eta_sign", [1.0, -1.0], ids=["eta+", "eta-"])
def test_oja_net_effect_is_decay(eta_sign):
    """With no Hebbian drive (ν̃ = 0) and f̃ = 1: W_new = W (1 − |η̃||m_oja| Σ_b post²), whatever sign(η̃)."""
    g = rand_genome(85, eta_syn_sign=eta_sign)
    g["pre"] = np.zeros_like(g["pre"])
    g["f_syn"] = np.ones_like(g["f_syn"])
    a_lo = rand(86, (S, R, B, N_LO, K))
    a_up = rand(87, (S, R, B, N_UP, K))
    w, v = rand_w(88, N_LO, N_UP), rand_w(89, N_UP, N_LO, bias=False)
    w_new, v_new = update_pair(tfc(w), tfc(v), tfc(a_lo), tfc(a_up), tf_params(g), BlurConfig(oja=True))
    for s in range(S):
        gs = member(g, s)
        for r in range(R):
            e_up = sum(np.einsum("cd,jd->jc", gs["post"], a_up[s, r, b]) ** 2 for b in range(B))
            e_lo = sum(np.einsum("cd,id->ic", gs["post"], a_lo[s, r, b]) ** 2 for b in range(B))
            decay = abs(gs["eta_syn"]) * abs(gs["oja"])
            close(w_new[s, r], w[s, r] * (1.0 - decay * e_up[None]))
            close(v_new[s, r], v[s, r] * (1.0 - decay * e_lo[None]))


def test_saturate_function():
    g = rand_genome(90)
    w = f32(4.0 * rand_w(91, N_LO, N_UP))
    out = saturate(tfc(w), tf_params(g)["alpha"]).numpy()
    alpha = g["alpha"][:, None, None, None, None]
    close(out, alpha * np.tanh(w / alpha))
    assert np.all(np.abs(out) < alpha + 1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_saturation_update(symmetric):
    g = rand_genome(92, eta_syn_sign=-1.0)
    g["eta_syn"] = f32(-np.abs(g["eta_syn"]) * 20)  # big steps, so tanh actually bites
    a_lo = rand(93, (S, R, B, N_LO, K))
    a_up = rand(94, (S, R, B, N_UP, K))
    w, v = f32(3.0 * rand_w(95, N_LO, N_UP)), rand_w(96, N_UP, N_LO, bias=False)
    cfg = BlurConfig(saturation=True, symmetric=symmetric)
    w_new, v_new = check_update_pair(w, v, a_lo, a_up, g, cfg)
    alpha = g["alpha"][:, None, None, None, None]
    assert np.all(np.abs(w_new.numpy()) <= alpha * (1 + 1e-6))


# ---------------------------------------------------------------------------
# §3 symmetric and single-state synapses
# ---------------------------------------------------------------------------

SYNC_CASES = [(True, False), (False, True), (True, True)]
SYNC_IDS = ["symmetric", "single_state", "both"]


@pytest.mark.parametrize("symmetric,single_state", SYNC_CASES, ids=SYNC_IDS)
def test_sync_function(symmetric, single_state):
    w, v = rand_w(100, N_LO, N_UP), rand_w(101, N_UP, N_LO, bias=False)
    w_s, v_s = sync(tfc(w), tfc(v), symmetric, single_state)
    exp = [[ref.sync(w[s, r], v[s, r], symmetric, single_state) for r in range(R)] for s in range(S)]
    close(w_s, np.array([[e[0] for e in row] for row in exp]), rtol=0, atol=0)
    close(v_s, np.array([[e[1] for e in row] for row in exp]), rtol=0, atol=0)


@pytest.mark.parametrize("oja", [False, True], ids=["plain", "oja"])
@pytest.mark.parametrize("symmetric,single_state", SYNC_CASES, ids=SYNC_IDS)
def test_sync_after_update(symmetric, single_state, oja):
    g = rand_genome(102)
    a_lo = rand(103, (S, R, B, N_LO, K))
    a_up = rand(104, (S, R, B, N_UP, K))
    cfg = BlurConfig(symmetric=symmetric, single_state=single_state, oja=oja)
    w, v = rand_w(105, N_LO, N_UP), rand_w(106, N_UP, N_LO, bias=False)
    w_new, v_new = check_update_pair(w, v, a_lo, a_up, g, cfg)
    w_new, v_new = w_new.numpy(), v_new.numpy()
    if symmetric:
        np.testing.assert_array_equal(v_new, np.swapaxes(w_new[..., :N_LO, :, :], -3, -2))
    if single_state:
        for c in range(1, K):
            np.testing.assert_array_equal(w_new[..., c], w_new[..., 0])
            np.testing.assert_array_equal(v_new[..., c], v_new[..., 0])


# ---------------------------------------------------------------------------
# the whole inner step, a 3-pair network 5-4-3-2, k = 3, S = 2, R = 3
# ---------------------------------------------------------------------------

INNER_CONFIGS = {
    "default": BlurConfig(),
    "mult_mean": BlurConfig(hidden_activation="tanh", last_activation="sigmoid",
                            backward_activation="tanh", backward_rule="multiplicative",
                            batch_reduction="mean"),
    "error_mult2": BlurConfig(hidden_activation="backprop_relu_tanh", last_activation="backprop_tanh",
                              backward_activation="linear", feedback="error",
                              backward_rule="multiplicative_second"),
    "stability": BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                            norm_epsilon=1e-2),
    "sym_oja_mean": BlurConfig(symmetric=True, oja=True, batch_reduction="mean",
                               backward_activation="tanh"),
    "single_sat": BlurConfig(single_state=True, saturation=True, hidden_activation="sigmoid"),
    "all": BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                      symmetric=True, single_state=True, feedback="error",
                      backward_rule="multiplicative_second", norm_epsilon=1e-2),
}


def _targets(cfg, seed, lead):
    if cfg.feedback == "target":
        return one_hot_pm(seed, lead, SIZES[-1])
    return rand(seed, lead + (B, SIZES[-1]))


def _ref_population(genome_of, syn, x, y, cfg, per_layer=False, steps=1):
    """Run the reference for every (species, replica) member; returns stacked synapses and states."""
    new_syn, states = [], []
    xb = np.broadcast_to(x, (S, R) + x.shape[-2:])
    yb = np.broadcast_to(y, (S, R) + y.shape[-2:])
    for s in range(S):
        row_syn, row_states = [], []
        for r in range(R):
            cur = [(w[s, r], v[s, r]) for w, v in syn]
            for _ in range(steps):
                cur, st = ref.inner_step(genome_of(s), cur, xb[s, r], yb[s, r], cfg, per_layer)
            row_syn.append(cur)
            row_states.append(st)
        new_syn.append(row_syn)
        states.append(row_states)
    L = len(syn)
    out_syn = [tuple(np.array([[new_syn[s][r][l][i] for r in range(R)] for s in range(S)])
                     for i in range(2)) for l in range(L)]
    out_states = [np.array([[states[s][r][l] for r in range(R)] for s in range(S)])
                  for l in range(L + 1)]
    return out_syn, out_states


def _tf_steps(params, syn, x, y, cfg, per_layer=False, steps=1):
    cur = tuple((tfc(w), tfc(v)) for w, v in syn)
    for _ in range(steps):
        cur, states = inner_step(params, cur, tfc(x), tfc(y), cfg, per_layer=per_layer)
    return cur, states


def _compare(tf_syn, tf_states, ref_syn, ref_states, rtol=RTOL, atol=ATOL):
    for (w, v), (rw, rv) in zip(tf_syn, ref_syn):
        close(w, rw, rtol, atol)
        close(v, rv, rtol, atol)
    for a, ra in zip(tf_states, ref_states):
        # the input layer keeps the population axes of x only (it is never changed)
        close(np.broadcast_to(a.numpy(), ra.shape), ra, rtol, atol)
    for a in tf_states[1:]:
        assert a.shape == tf_states[-1].shape[:-2] + a.shape[-2:]
        assert tuple(a.shape[:2]) == (S, R)


@pytest.mark.parametrize("name", list(INNER_CONFIGS))
def test_inner_step(name):
    cfg = INNER_CONFIGS[name]
    g = rand_genome(200)
    g["eta_syn"] = g["eta_syn"] * 4  # visible synapse changes
    syn = random_synapses(210, cfg=cfg)
    x = rand(220, (S, R, B, SIZES[0]))
    y = _targets(cfg, 221, (S, R))
    tf_syn, tf_states = _tf_steps(tf_params(g), syn, x, y, cfg, steps=2)
    ref_syn, ref_states = _ref_population(lambda s: member(g, s), syn, x, y, cfg, steps=2)
    _compare(tf_syn, tf_states, ref_syn, ref_states)
    # the synapses really moved
    assert max(np.abs(w.numpy() - w0).max() for (w, _), (w0, _) in zip(tf_syn, syn)) > 1e-3


def test_inner_step_hidden_last_backward_activations_are_per_layer():
    """Hidden σ on layers 1…L−1, last σ on layer L, backward σ on layers L−1…1."""
    cfg = BlurConfig(hidden_activation="relu", last_activation="sigmoid", backward_activation="tanh")
    g = rand_genome(230)
    syn = random_synapses(231)
    x = rand(232, (S, R, B, SIZES[0]))
    y = _targets(cfg, 233, (S, R))
    _, states = _tf_steps(tf_params(g), syn, x, y, cfg)
    last = states[-1].numpy()[..., 0]
    assert np.all((last > 0) & (last < 1))           # sigmoid on the last layer
    for a in states[1:-1]:                           # tanh after the backward pass
        assert np.all(np.abs(a.numpy()) < 1) and np.any(a.numpy() < 0)


def test_inner_step_per_layer_activation_overrides():
    """``forward_activations``/``backward_activations``: entry l−1 is layer l's σ."""
    cfg = BlurConfig()
    fwd, bwd = ("tanh", "backprop_sigmoid", "sigmoid"), ("linear", "tanh", "relu")
    g = rand_genome(234)
    syn = random_synapses(235)
    x = rand(236, (S, R, B, SIZES[0]))
    y = _targets(cfg, 237, (S, R))
    cur = tuple((tfc(w), tfc(v)) for w, v in syn)
    tf_syn, tf_states = inner_step(tf_params(g), cur, tfc(x), tfc(y), cfg,
                                   forward_activations=fwd, backward_activations=bwd)
    for s in range(S):
        for r in range(R):
            new, states = ref.inner_step(member(g, s), [(w[s, r], v[s, r]) for w, v in syn],
                                         x[s, r], y[s, r], cfg, forward_acts=fwd, backward_acts=bwd)
            for (w, v), (rw, rv) in zip(tf_syn, new):
                close(w[s, r], rw)
                close(v[s, r], rv)
            for a, ra in zip(tf_states, states):
                close(a[s, r], ra)


def test_predict_and_forward_pass():
    cfg = BlurConfig(activation_norm=True, synapse_norm=True)
    g = rand_genome(240)
    syn = random_synapses(241)
    x = rand(242, (B, SIZES[0]))
    out = predict(tf_params(g), tuple((tfc(w), tfc(v)) for w, v in syn), tfc(x), cfg)
    expected = per_member(lambda s, r: ref.forward_pass(
        member(g, s), [(w[s, r], v[s, r]) for w, v in syn], x, cfg)[-1][..., 0])
    close(out, expected)


# ---------------------------------------------------------------------------
# per-layer genome, population broadcasting
# ---------------------------------------------------------------------------

def test_per_layer_genome():
    L = len(SIZES) - 1
    cfg = BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                     backward_activation="tanh", norm_epsilon=1e-2)
    values = rand_genome(300, lead=(S, L))
    genome = Genome(K, num_layers=L, species=S, values=values)
    assert genome.params()["nu"].shape == (S, L, K, K)
    assert genome.params()["f"].shape == (S, L)
    syn = random_synapses(301)
    x = rand(302, (S, R, B, SIZES[0]))
    y = _targets(cfg, 303, (S, R))
    tf_syn, tf_states = _tf_steps(genome.params(), syn, x, y, cfg, per_layer=True)
    ref_syn, ref_states = _ref_population(
        lambda s: [member(values, s, l) for l in range(L)], syn, x, y, cfg, per_layer=True)
    _compare(tf_syn, tf_states, ref_syn, ref_states)
    # layer 0's entries used everywhere would give a different result
    wrong_syn, _ = _ref_population(lambda s: [member(values, s, 0)] * L, syn, x, y, cfg, per_layer=True)
    assert np.abs(wrong_syn[-1][0] - ref_syn[-1][0]).max() > 1e-3


@pytest.mark.parametrize("x_lead", [(), (1, R)], ids=["no_population_axes", "replica_only"])
def test_population_broadcasting(x_lead):
    cfg = BlurConfig(activation_norm=True, oja=True, norm_epsilon=1e-2)
    g = rand_genome(310)
    syn = random_synapses(311)
    x = rand(312, x_lead + (B, SIZES[0]))
    y = _targets(cfg, 313, x_lead)
    tf_syn, tf_states = _tf_steps(tf_params(g), syn, x, y, cfg)
    assert tf_syn[0][0].shape == (S, R, SIZES[0] + 1, SIZES[1], K)
    ref_syn, ref_states = _ref_population(lambda s: member(g, s), syn, x, y, cfg)
    _compare(tf_syn, tf_states, ref_syn, ref_states)
    # the same as feeding explicitly tiled inputs
    xt = np.broadcast_to(x, (S, R, B, SIZES[0])).copy()
    yt = np.broadcast_to(y, (S, R, B, SIZES[-1])).copy()
    tiled_syn, _ = _tf_steps(tf_params(g), syn, xt, yt, cfg)
    for (w, v), (wt, vt) in zip(tf_syn, tiled_syn):
        close(w, wt.numpy(), rtol=1e-6, atol=1e-6)
        close(v, vt.numpy(), rtol=1e-6, atol=1e-6)


def test_genome_without_species_axis_broadcasts():
    cfg = BlurConfig()
    g = rand_genome(320, lead=())
    syn = random_synapses(321)
    x = rand(322, (B, SIZES[0]))
    y = _targets(cfg, 323, ())
    tf_syn, tf_states = _tf_steps(tf_params(g), syn, x, y, cfg)
    ref_syn, ref_states = _ref_population(lambda s: g, syn, x, y, cfg)
    _compare(tf_syn, tf_states, ref_syn, ref_states)


# ---------------------------------------------------------------------------
# init_synapses
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [None, BlurConfig(), BlurConfig(symmetric=True),
                                 BlurConfig(single_state=True),
                                 BlurConfig(symmetric=True, single_state=True)],
                         ids=["none", "plain", "symmetric", "single_state", "both"])
def test_init_synapses(cfg):
    syn = init_synapses(7, SIZES, K, population_shape=(S, R), config=cfg)
    assert len(syn) == len(SIZES) - 1
    for l, (w, v) in enumerate(syn):
        n, m = SIZES[l], SIZES[l + 1]
        w, v = w.numpy(), v.numpy()
        assert w.shape == (S, R, n + 1, m, K) and v.shape == (S, R, m, n, K)
        assert w.dtype == np.float32
        assert np.all(w[..., n, :, :] == 0)          # bias row
        assert np.all(np.isfinite(w)) and np.all(np.isfinite(v))
        assert np.abs(w[..., :n, :, :]).max() > 0
        if cfg is not None and cfg.symmetric:
            np.testing.assert_array_equal(v, np.swapaxes(w[..., :n, :, :], -3, -2))
        if cfg is not None and cfg.single_state:
            for c in range(1, K):
                np.testing.assert_array_equal(w[..., c], w[..., 0])
                np.testing.assert_array_equal(v[..., c], v[..., 0])
        if cfg is None or not (cfg.symmetric or cfg.single_state):
            # independent draws per replica and per channel
            assert np.abs(w[:, 0] - w[:, 1]).max() > 0
            assert np.abs(w[..., 0] - w[..., 1]).max() > 0
    again = init_synapses(7, SIZES, K, population_shape=(S, R), config=cfg)
    other = init_synapses(8, SIZES, K, population_shape=(S, R), config=cfg)
    for (w, v), (w2, v2), (w3, _) in zip(syn, again, other):
        np.testing.assert_array_equal(w.numpy(), w2.numpy())
        np.testing.assert_array_equal(v.numpy(), v2.numpy())
        assert np.abs(w.numpy() - w3.numpy()).max() > 0


def test_init_synapses_scale():
    sizes = (64, 48, 10)
    syn = init_synapses(3, sizes, 2, population_shape=(4,), scale=2.0)
    for l, (w, v) in enumerate(syn):
        n, m = sizes[l], sizes[l + 1]
        assert abs(np.std(w.numpy()[..., :n, :, :]) - 2.0 / np.sqrt(n)) < 0.1 * 2.0 / np.sqrt(n)
        assert abs(np.std(v.numpy()) - 2.0 / np.sqrt(m)) < 0.1 * 2.0 / np.sqrt(m)


# ---------------------------------------------------------------------------
# Genome
# ---------------------------------------------------------------------------

def _random_values(seed, lead):
    g = rand_genome(seed, lead=lead)
    return {n: v.astype(np.float32) for n, v in g.items()}


@pytest.mark.parametrize("num_layers,species", [(None, None), (3, None), (None, 2), (3, 2)])
def test_genome_config_and_json_round_trip(num_layers, species):
    lead = tuple(d for d in (species, num_layers) if d is not None)
    values = _random_values(400, lead)
    genome = Genome(K, num_layers=num_layers, species=species, values=values)
    for name in NAMES:
        np.testing.assert_array_equal(genome.numpy()[name], values[name])
    for clone in (Genome.from_config(genome.get_config()), Genome.from_json(genome.to_json()),
                  Genome.from_config(json.loads(json.dumps(genome.get_config())))):
        assert (clone.k, clone.num_layers, clone.species) == (K, num_layers, species)
        for name in NAMES:
            np.testing.assert_array_equal(clone.numpy()[name], genome.numpy()[name])
            assert clone.numpy()[name].dtype == np.float32


def test_genome_save_load_json(tmp_path):
    genome = Genome(K, species=S, values=_random_values(401, (S,)))
    path = tmp_path / "g.json"
    genome.save_json(str(path))
    clone = Genome.load_json(str(path))
    for name in NAMES:
        np.testing.assert_array_equal(clone.numpy()[name], genome.numpy()[name])


def test_genome_defaults_and_size():
    g = Genome(4).numpy()
    np.testing.assert_array_equal(g["nu"], np.eye(4))
    assert g["f"] == 1 and g["eta"] == 1 and g["f_syn"] == 1
    assert g["eta_syn"] == np.float32(-1e-3)
    assert num_core_numbers(2) == 20 and num_core_numbers(4) == 68
    core = sum(g[n].size for n in ("nu", "mu", "pre", "post", "f", "eta", "f_syn", "eta_syn"))
    assert core == num_core_numbers(4)


@pytest.mark.parametrize("species", [None, 3])
def test_genome_backprop(species):
    lr = 0.037
    genome = Genome.backprop(lr, species=species)
    g = genome.numpy()
    lead = () if species is None else (species,)
    expected = {"nu": [[1, 1], [0, 0]], "mu": np.eye(2), "pre": np.eye(2),
                "post": [[0, 1], [1, 0]], "f": 1.0, "eta": 1.0, "f_syn": 1.0,
                "eta_syn": -lr}
    for name, val in expected.items():
        assert g[name].shape == lead + np.shape(val)
        np.testing.assert_array_equal(g[name], np.broadcast_to(np.float32(val), lead + np.shape(val)))
    with pytest.raises(ValueError, match="k=2"):
        Genome.backprop(lr, k=3)


def test_genome_random_statistics():
    k, L = 8, 2
    g = Genome.random(k, seed=5, num_layers=L, species=3, transform_std=0.5, same_start=False)
    vals = g.numpy()
    pooled = []
    for name in TRANSFORMS:
        assert vals[name].shape == (3, L, k, k)
        pooled.append(vals[name].ravel())
    pooled = np.concatenate(pooled)            # 1536 draws of N(0, 0.25)
    assert abs(pooled.mean()) < 0.05
    assert abs(pooled.std() - 0.5) < 0.05
    assert np.abs(vals["nu"][0] - vals["nu"][1]).max() > 0      # independent species
    assert np.abs(vals["nu"] - vals["mu"]).max() > 0
    for name, val in (("f", 1.0), ("eta", 1.0), ("f_syn", 1.0), ("eta_syn", -1e-3)):
        assert vals[name].shape == (3, L)
        np.testing.assert_array_equal(vals[name], np.float32(val))
    same = Genome.random(k, seed=5, num_layers=L, species=3, transform_std=0.5).numpy()
    for name in TRANSFORMS:                    # same_start: one draw for every species
        assert same[name].shape == (3, L, k, k)
        np.testing.assert_array_equal(same[name][0], same[name][2])
    again = Genome.random(k, seed=5, num_layers=L, species=3, transform_std=0.5, same_start=False)
    np.testing.assert_array_equal(again.numpy()["post"], vals["post"])
    other = Genome.random(k, seed=6, num_layers=L, species=3, transform_std=0.5, same_start=False)
    assert np.abs(other.numpy()["post"] - vals["post"]).max() > 0


@pytest.mark.parametrize("name,bad", [("nu", np.nan), ("eta_syn", np.inf), ("gamma", -np.inf),
                                      ("oja", np.nan)])
def test_genome_rejects_non_finite(name, bad):
    shape = (K,) * {"nu": 2, "gamma": 1}.get(name, 0)
    arr = np.zeros(shape, np.float32)
    arr.flat[0] = bad
    with pytest.raises(ValueError, match=f"'{name}'"):
        Genome(K, values={name: arr})
    genome = Genome(K)
    with pytest.raises(ValueError, match=f"'{name}'"):
        genome.assign({name: arr})


@pytest.mark.parametrize("name,shape", [("mu", (2, 2)), ("gamma", (K + 2,)), ("f", (4,)),
                                        ("post", (K, K, K))])
def test_genome_rejects_wrong_shape(name, shape):
    with pytest.raises(ValueError, match=f"'{name}'"):
        Genome(K, values={name: np.zeros(shape, np.float32)})


@pytest.mark.parametrize("k", [1, 0, -2, 2.0, True])
def test_genome_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k"):
        Genome(k)


def test_genome_rejects_unknown_entry():
    with pytest.raises(ValueError, match="bogus"):
        Genome(K, values={"bogus": 1.0})


# ---------------------------------------------------------------------------
# §4 anchor: the backprop genome is one SGD step
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_backprop_genome_is_sgd_step(reduction):
    lr, sizes = 0.1, (5, 4, 3)
    cfg = BlurConfig.backprop(hidden_activation="tanh", last_activation="linear",
                              batch_reduction=reduction)
    genome = Genome.backprop(lr)
    syn = init_synapses(11, sizes, 2, population_shape=(R,), config=cfg)
    x = rand(500, (B, sizes[0]))
    y = rand(501, (B, sizes[-1]))
    new_syn, _ = inner_step(genome.params(), syn, tfc(x), tfc(y), cfg)
    scale = 1.0 if reduction == "sum" else 1.0 / B
    for r in range(R):
        ws = [w.numpy()[r, ..., 0].astype(np.float64) for w, _ in syn]
        hs, zs = [x], []
        for l, w in enumerate(ws):                      # plain float64 MLP
            z = np.concatenate([hs[-1], np.ones((B, 1))], 1) @ w
            zs.append(z)
            hs.append(np.tanh(z) if l < len(ws) - 1 else z)
        delta = hs[-1] - y                               # d(½Σ(ŷ−y)²)/dz^L, linear output
        grads = [None] * len(ws)
        for l in range(len(ws) - 1, -1, -1):
            grads[l] = np.concatenate([hs[l], np.ones((B, 1))], 1).T @ delta
            if l > 0:
                delta = (delta @ ws[l][:-1].T) * (1 - np.tanh(zs[l - 1]) ** 2)
        for l, (w, v) in enumerate(new_syn):
            expected = ws[l] - lr * scale * grads[l]
            for c in range(2):
                close(w.numpy()[r, ..., c], expected)
            if l > 0:  # V⁰ is never read, so it keeps its initial value
                close(v.numpy()[r], np.swapaxes(w.numpy()[r, :-1], 0, 1), rtol=0, atol=0)
            else:
                close(v.numpy()[r], syn[0][1].numpy()[r], rtol=0, atol=0)


# ---------------------------------------------------------------------------
# XLA
# ---------------------------------------------------------------------------

def test_jit_matches_eager():
    cfg = BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                     norm_epsilon=1e-2)
    g = rand_genome(600)
    syn = tuple((tfc(w), tfc(v)) for w, v in random_synapses(601))
    x = tfc(rand(602, (S, R, B, SIZES[0])))
    y = tfc(_targets(cfg, 603, (S, R)))
    params = tf_params(g)
    eager_syn, eager_states = inner_step(params, syn, x, y, cfg)
    jitted = tf.function(inner_step, jit_compile=True)
    jit_syn, jit_states = jitted(params, syn, x, y, cfg)
    for (w, v), (we, ve) in zip(jit_syn, eager_syn):
        close(w, we.numpy())
        close(v, ve.numpy())
    for a, ae in zip(jit_states, eager_states):
        close(a, ae.numpy())


@pytest.mark.parametrize("name", ["plain", "symmetric_single", "saturation_oja"])
def test_first_backward_synapses_pass_through(name):
    """V⁰ is never read (the input layer is never written), so inner_step leaves it unchanged."""
    cfg = {"plain": BlurConfig(),
           "symmetric_single": BlurConfig(symmetric=True, single_state=True),
           "saturation_oja": BlurConfig(saturation=True, oja=True)}[name]
    g = rand_genome(610)
    syn = tuple((tfc(w), tfc(v)) for w, v in random_synapses(611, cfg=cfg))
    x = tfc(rand(612, (S, R, B, SIZES[0])))
    y = tfc(_targets(cfg, 613, (S, R)))
    new, _ = inner_step(tf_params(g), syn, x, y, cfg)
    close(new[0][1], syn[0][1].numpy(), rtol=0, atol=0)
    assert np.abs(new[0][0].numpy() - syn[0][0].numpy()).max() > 1e-4
