"""The whole inner step (blur_keras.core.step): every option of docs/spec.md §2–3 together, per-layer
genomes, population broadcasting, the backprop anchor, XLA, against the independent float64
NumPy reference (tests/reference.py);
shared setup in tests/helpers.py (S = 2 species, R = 3 replicas, k = 3, non-square layers).
"""

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import BlurConfig, Genome, init_synapses, inner_step, predict
from helpers import (
    S, R, K, B, SIZES, RTOL, ATOL, TRANSFORMS, rand_genome, tf_params, member, rand, tfc,
    close, per_member, random_synapses, one_hot_pm, INNER_CONFIGS,
)
from helpers import reference as ref


# ---------------------------------------------------------------------------
# the genome used by most tests must make the tests discriminative
# ---------------------------------------------------------------------------


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
# the whole inner step, a 3-pair network 5-4-3-2, k = 3, S = 2, R = 3
# ---------------------------------------------------------------------------


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
    # float32 round-off: XLA orders the batch-norm reductions differently from eager TF
    for (w, v), (we, ve) in zip(jit_syn, eager_syn):
        close(w, we.numpy(), atol=3e-5)
        close(v, ve.numpy(), atol=3e-5)
    for a, ae in zip(jit_states, eager_states):
        close(a, ae.numpy(), atol=3e-5)


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
