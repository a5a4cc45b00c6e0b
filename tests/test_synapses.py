"""Step 5 (Hebbian update), Oja term, saturation, symmetric and single-state synapses and
init_synapses (blur_keras.core.synapses), against the independent float64 NumPy reference (tests/reference.py);
shared setup in tests/helpers.py (S = 2 species, R = 3 replicas, k = 3, non-square layers).
"""

import numpy as np
import pytest

from blur_keras import BlurConfig, init_synapses
from blur_keras.core.states import with_bias_neuron
from blur_keras.core.synapses import hebbian_delta, saturate, sync, update_pair

from helpers import (
    S, R, K, B, N_LO, N_UP, SIZES, f32, rand_genome, tf_params, member, rand, rand_w, tfc, tfi, pub,
    close, per_member, check_update_pair,
)
from helpers import reference as ref


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
        src, dst = with_bias_neuron(tfi(a_lo)), tfi(a_up)
        ref_src = lambda s, r: ref.with_bias(a_lo[s, r])  # noqa: E731
        ref_dst = lambda s, r: a_up[s, r]  # noqa: E731
    else:
        src, dst = tfi(a_up), tfi(a_lo)
        ref_src = lambda s, r: a_up[s, r]  # noqa: E731
        ref_dst = lambda s, r: a_lo[s, r]  # noqa: E731
    delta, _ = hebbian_delta(src, dst, tf_params(g), reduction)
    expected = per_member(lambda s, r: ref.hebbian(
        ref_src(s, r), ref_dst(s, r), member(g, s)["pre"], member(g, s)["post"], reduction))
    close(pub(delta), expected)


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
    d_sum, _ = hebbian_delta(with_bias_neuron(tfi(a_lo)), tfi(a_up), tf_params(g), "sum")
    d_mean, _ = hebbian_delta(with_bias_neuron(tfi(a_lo)), tfi(a_up), tf_params(g), "mean")
    close(pub(d_mean), pub(d_sum) / B)


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
    w_plain, v_plain = (pub(t) for t in update_pair(tfi(w), tfi(v), tfi(a_lo), tfi(a_up),
                                                     tf_params(g), cfg.replace(oja=False)))
    assert np.abs(w_plain - w_new).max() > 1e-4
    assert np.abs(v_plain - v_new).max() > 1e-4


@pytest.mark.parametrize("eta_sign", [1.0, -1.0], ids=["eta+", "eta-"])
def test_oja_net_effect_is_decay(eta_sign):
    """With no Hebbian drive (ν̃ = 0) and f̃ = 1: W_new = W (1 − |η̃||m_oja| Σ_b post²), whatever sign(η̃)."""
    g = rand_genome(85, eta_syn_sign=eta_sign)
    g["pre"] = np.zeros_like(g["pre"])
    g["f_syn"] = np.ones_like(g["f_syn"])
    a_lo = rand(86, (S, R, B, N_LO, K))
    a_up = rand(87, (S, R, B, N_UP, K))
    w, v = rand_w(88, N_LO, N_UP), rand_w(89, N_UP, N_LO, bias=False)
    w_new, v_new = (pub(t) for t in update_pair(tfi(w), tfi(v), tfi(a_lo), tfi(a_up), tf_params(g),
                                                 BlurConfig(oja=True)))
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
    assert np.all(np.abs(w_new) <= alpha * (1 + 1e-6))


# ---------------------------------------------------------------------------
# §3 symmetric and single-state synapses
# ---------------------------------------------------------------------------

SYNC_CASES = [(True, False), (False, True), (True, True)]
SYNC_IDS = ["symmetric", "single_state", "both"]


@pytest.mark.parametrize("symmetric,single_state", SYNC_CASES, ids=SYNC_IDS)
def test_sync_function(symmetric, single_state):
    w, v = rand_w(100, N_LO, N_UP), rand_w(101, N_UP, N_LO, bias=False)
    w_s, v_s = (pub(t) for t in sync(tfi(w), tfi(v), symmetric, single_state))
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
    if symmetric:
        np.testing.assert_array_equal(v_new, np.swapaxes(w_new[..., :N_LO, :, :], -3, -2))
    if single_state:
        for c in range(1, K):
            np.testing.assert_array_equal(w_new[..., c], w_new[..., 0])
            np.testing.assert_array_equal(v_new[..., c], v_new[..., 0])


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
