"""Hand-derived gradients and the input-layer shortcut against TensorFlow's own math.

Every comparison runs the same function twice: with ``reverse="hand"`` (the hand-derived
gradient of a whole inner step, ``blur_keras.core.step_reverse``) and ``reverse="autodiff"``
(TensorFlow's autodiff of the formulas of forward, backward, feedback and synapses; the one
primitive with its own gradient, ``mix_states``, is checked against autodiff of its formula
below).  Gradients of every genome entry and of the initial synapses must agree to 1e-5
relative, for every BlurConfig option, with species and replica axes, through recomputation,
and under XLA.
"""

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import BlurConfig, inner_step, predict

from blur_keras.core import step_reverse as step_gradient
from blur_keras.core.forward import input_states
from blur_keras.core.gradient import sum_to
from blur_keras.rules.genome import align_to_population
from blur_keras.core.layout import reshape_axes, unit_axes
from blur_keras.meta.objective.unroll import meta_loss
from blur_keras.core.states import (input_matmul, input_outer, mix_states, mix_states_vjp,
                               per_state_matmul, per_state_outer, with_bias_neuron)

try:  # pytest's default (prepend) import mode puts tests/ on sys.path
    from helpers import INNER_CONFIGS, SIZES, K, S, R, B, rand, rand_genome
except ImportError:  # pragma: no cover
    from tests.helpers import INNER_CONFIGS, SIZES, K, S, R, B, rand, rand_genome

RTOL = 1e-5

CONFIGS = dict(INNER_CONFIGS, **{
    "error_additive": BlurConfig(feedback="error", backward_activation="tanh"),
    "softmax_mean": BlurConfig(feedback="softmax", backward_activation="tanh",
                               batch_reduction="mean"),
    "multiplicative": BlurConfig(backward_rule="multiplicative", backward_activation="tanh"),
    "symmetric": BlurConfig(symmetric=True),
    "single_state": BlurConfig(single_state=True),
    "mean": BlurConfig(batch_reduction="mean"),
    "activation_norm": BlurConfig(activation_norm=True, norm_epsilon=1e-2),
    "synapse_norm": BlurConfig(synapse_norm=True),
    "oja": BlurConfig(oja=True),
    "saturation": BlurConfig(saturation=True),
    "relu_linear": BlurConfig(hidden_activation="relu", last_activation="linear",
                              backward_activation="relu", activation_norm=True, norm_epsilon=1e-2),
    "backprop_sigmoid": BlurConfig(hidden_activation="backprop_sigmoid",
                                   backward_activation="backprop_relu", feedback="error"),
})


def _params(seed, dtype=tf.float64):
    """A random genome ``[S, ...]`` (asymmetric transforms, every entry in use somewhere)."""
    g = rand_genome(seed)
    g["eta_syn"] = g["eta_syn"] * 4
    return {n: tf.constant(v, dtype) for n, v in g.items()}


def _synapses(seed, cfg, dtype=tf.float64):
    rng = np.random.default_rng(seed)
    out = []
    for n, m in zip(SIZES[:-1], SIZES[1:]):
        w = tf.constant(rng.normal(0, 1 / np.sqrt(n), (S, R, n + 1, m, K)), dtype)
        v = tf.constant(rng.normal(0, 1 / np.sqrt(m), (S, R, m, n, K)), dtype)
        out.append((w, v))
    return tuple(out)


def _inputs(seed, cfg, dtype=tf.float64):
    x = tf.constant(rand(seed, (S, R, B, SIZES[0])), dtype)
    rng = np.random.default_rng(seed + 1)
    if cfg.feedback == "target":
        t = 2.0 * np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], (S, R, B))] - 1.0
    else:
        t = rng.uniform(-1, 1, (S, R, B, SIZES[-1]))
    return x, tf.constant(t, dtype)


def _two_steps_loss(cfg, x, t, weights, steps=2):
    """A scalar of ``steps`` inner steps: a weighted sum of the new synapses and of a
    prediction."""

    def loss(params, synapses, reverse="hand"):
        p = align_to_population(params, 2)
        for _ in range(steps):
            synapses, _ = inner_step(p, synapses, x, t, cfg, reverse=reverse)
        total = tf.reduce_sum(predict(p, synapses, x[..., ::-1, :], cfg) * weights[-1])
        for (w, v), (cw, cv) in zip(synapses, weights[:-1]):
            total += tf.reduce_sum(w * cw) + tf.reduce_sum(v * cv)
        return total

    return loss


def _gradients(loss, params, synapses, jit=False, reverse="hand"):
    def run(params, synapses):
        with tf.GradientTape() as tape:
            tape.watch([params, synapses])
            value = loss(params, synapses, reverse)
        return value, tape.gradient(value, [params, synapses],
                                    unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return (tf.function(run, jit_compile=True, autograph=False) if jit else run)(params, synapses)


def _assert_same(hand, plain, what=""):
    for path, h, p in zip(range(len(tf.nest.flatten(hand))), tf.nest.flatten(hand),
                          tf.nest.flatten(plain)):
        h, p = np.asarray(h), np.asarray(p)
        scale = max(np.abs(p).max(), 1e-30)
        assert np.abs(h - p).max() <= RTOL * scale, (what, path, np.abs(h - p).max(), scale)


def _hand_and_plain(fn):
    """``fn(reverse)`` with the hand-derived reverse, and with autodiff."""
    return fn("hand"), fn("autodiff")


def _weights(cfg, synapses, seed):
    rng = np.random.default_rng(seed)
    out = [tuple(tf.constant(rng.normal(size=t.shape), t.dtype) for t in pair) for pair in synapses]
    return out + [tf.constant(rng.normal(size=(S, R, B, SIZES[-1])), synapses[0][0].dtype)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_inner_step_gradient_equals_autodiff(name):
    """Every genome entry and every synapse, float64, S=2 species × R=3 replicas."""
    cfg = CONFIGS[name]
    params, synapses = _params(700), _synapses(701, cfg)
    x, t = _inputs(702, cfg)
    loss = _two_steps_loss(cfg, x, t, _weights(cfg, synapses, 703))
    (v_hand, g_hand), (v_plain, g_plain) = _hand_and_plain(
        lambda r: _gradients(loss, params, synapses, reverse=r))
    np.testing.assert_allclose(v_hand, v_plain, rtol=1e-12)
    _assert_same(g_hand, g_plain, name)
    assert sum(float(tf.reduce_max(tf.abs(g))) > 0 for g in g_hand[0].values()) >= 6


def test_the_comparisons_run_the_hand_derived_step(monkeypatch):
    """The hand side of every comparison above is ``step_gradient``'s backward, and a wrong
    backward fails them (a test of the tests)."""
    calls = []
    backward = step_gradient._Step.backward

    def spy(self, *args):
        calls.append(1)
        return backward(self, *args)

    monkeypatch.setattr(step_gradient._Step, "backward", spy)
    test_inner_step_gradient_equals_autodiff("stability")
    assert len(calls) == 2  # two inner steps
    _gradients(_two_steps_loss(CONFIGS["stability"], *_inputs(702, CONFIGS["stability"]),
                               _weights(None, _synapses(701, None), 703)),
               _params(700), _synapses(701, None), reverse="autodiff")
    assert len(calls) == 2  # reverse="autodiff" does not use it
    scalar_grad = step_gradient._scalar_grad
    monkeypatch.setattr(step_gradient, "_scalar_grad", lambda d, s: scalar_grad(d, s) * 1.001)
    with pytest.raises(AssertionError):
        test_inner_step_gradient_equals_autodiff("stability")


@pytest.mark.parametrize("name", ["default", "all"])
def test_hand_step_per_layer_genome_and_shared_data(name):
    """A genome with a layer axis, and x / targets without population axes (broadcast)."""
    cfg = CONFIGS[name]
    layers = len(SIZES) - 1
    params = {n: tf.constant(np.stack([v * (1.0 + 0.1 * l) for l in range(layers)], axis=1))
              for n, v in rand_genome(750).items()}
    synapses = _synapses(751, cfg)
    x, t = (a[0, 0] for a in _inputs(752, cfg))
    rng = np.random.default_rng(753)
    weights = [tf.constant(rng.normal(size=(S, R, B, n, K))) for n in SIZES[1:]]

    def loss(params, synapses, reverse):
        p = align_to_population(params, 2)
        total = 0.0
        for _ in range(2):
            synapses, states = inner_step(p, synapses, x, t, cfg, per_layer=True, reverse=reverse)
            # the hidden and last states the step returns carry gradients too
            total += sum(tf.reduce_sum(a * c) for a, c in zip(states[1:], weights))
        return total + sum(tf.reduce_sum(w) for w, _ in synapses)

    (_, g_hand), (_, g_plain) = _hand_and_plain(
        lambda r: _gradients(loss, params, synapses, reverse=r))
    _assert_same(g_hand, g_plain, name)


@pytest.mark.parametrize("name", ["default", "all"])
def test_inner_step_gradient_equals_autodiff_under_xla_float32(name):
    cfg = CONFIGS[name]
    params, synapses = _params(710, tf.float32), _synapses(711, cfg, tf.float32)
    x, t = _inputs(712, cfg, tf.float32)
    # one step: the float64 tests above chain two; here XLA compiles each op of it
    loss = _two_steps_loss(cfg, x, t, _weights(cfg, synapses, 713), steps=1)
    (_, g_hand), (_, g_plain) = _hand_and_plain(
        lambda r: _gradients(loss, params, synapses, jit=True, reverse=r))
    for h, p in zip(tf.nest.flatten(g_hand), tf.nest.flatten(g_plain)):
        scale = max(float(tf.reduce_max(tf.abs(p))), 1e-30)
        assert float(tf.reduce_max(tf.abs(h - p))) <= 1e-4 * scale  # float32 round-off


@pytest.mark.parametrize("recompute", [0, 2])
@pytest.mark.parametrize("name", ["default", "all", "mult_mean"])
def test_meta_gradient_equals_autodiff(name, recompute):
    """Through the whole meta-loss (while loop, recomputation, query loss), species and replicas."""
    cfg = CONFIGS[name]
    params = _params(720)
    rng = np.random.default_rng(721)
    T, C = 5, SIZES[-1]
    batch = {"train_x": rng.uniform(-1, 1, (T, S, R, B, SIZES[0])),
             "train_y": rng.integers(0, C, (T, S, R, B)),
             "query_x": rng.uniform(-1, 1, (S, R, 2 * B, SIZES[0])),
             "query_y": rng.integers(0, C, (S, R, 2 * B))}
    seed = tf.constant([3, 4], tf.int64)

    def run(reverse):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = tf.reduce_sum(meta_loss(params, seed, batch, cfg, SIZES, recompute=recompute,
                                           reverse=reverse)[0])
        return tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    g_hand, g_plain = _hand_and_plain(run)
    _assert_same(g_hand, g_plain, name)


def test_mix_states_vjp_broadcasts_population_axes():
    """``a`` with replica axes, ``m`` with a species axis only (as aligned genomes are);
    internal layout ``[*P, k, B, n]``."""
    a = tf.constant(rand(730, (S, R, K, B, 5)))
    m = tf.constant(rand(731, (S, 1, K, K)))
    dy = tf.constant(rand(732, (S, R, K, B, 5)))
    with tf.GradientTape() as tape:
        tape.watch([a, m])
        out = tf.einsum("...dbi,...dc->...cbi", a, m)
    expected = tape.gradient(out, [a, m], output_gradients=dy)
    _assert_same(mix_states_vjp(a, m, dy), expected)
    with tf.GradientTape() as tape:
        tape.watch([a, m])
        out = mix_states(a, m)
    _assert_same(tape.gradient(out, [a, m], output_gradients=dy), expected)


@pytest.mark.parametrize("x_lead", [(S, R), (R,), ()])
def test_input_layer_shortcut_equals_general_contraction(x_lead):
    """``input_matmul``/``input_outer`` = mixing ``[[x, 0, …] ; 1]`` and the general contraction
    (internal layout)."""
    x = tf.constant(rand(740, x_lead + (B, 5)))
    w = tf.constant(rand(741, (S, R, K, 6, 4)))
    m = tf.constant(rand(742, (S, 1, K, K)))
    q = tf.constant(rand(743, (S, R, K, B, 4)))
    a_bar = with_bias_neuron(input_states(x, K))
    _assert_same(input_matmul(x, w, m), per_state_matmul(mix_states(a_bar, m), w))
    for reduction in ("sum", "mean"):
        expected = per_state_outer(mix_states(a_bar, m), q, reduction)
        _assert_same(input_outer(x, q, m, reduction), tf.broadcast_to(expected, [S, R, K, 6, 4]))


def test_trainer_step_gradient_switch(monkeypatch):
    """``GradientTrainer(step_gradient="autodiff")`` traces TensorFlow's autodiff of the step (the
    recipes that must reproduce a genome file made with it); both agree; a typo is refused."""
    from blur_keras import Genome
    from blur_keras.meta.outer.gradient import GradientTrainer

    calls = []
    backward = step_gradient._Step.backward
    monkeypatch.setattr(step_gradient._Step, "backward",
                        lambda self, *a: calls.append(1) or backward(self, *a))
    genome = Genome.random(K, seed=0, species=S, transform_std=0.5, synapse_update=-0.01)
    rng = np.random.default_rng(760)
    T, C = 3, SIZES[-1]
    batch = {"train_x": rng.uniform(-1, 1, (T, S, R, B, SIZES[0])).astype("f4"),
             "train_y": rng.integers(0, C, (T, S, R, B)),
             "query_x": rng.uniform(-1, 1, (S, R, B, SIZES[0])).astype("f4"),
             "query_y": rng.integers(0, C, (S, R, B))}
    seeds = tf.constant([[1, 2]] * R, tf.int64)
    grads = {}
    for mode in ("hand", "autodiff"):
        trainer = GradientTrainer(genome, BlurConfig(activation_norm=True), SIZES,
                                  step_gradient=mode, jit_compile=False)
        before = len(calls)
        grads[mode] = trainer._grad_fn(dict(trainer.params), seeds, batch)[2]
        assert (len(calls) > before) == (mode == "hand")
        assert trainer.settings()["step_gradient"] == mode
    for name, g in grads["hand"].items():
        scale = max(float(tf.reduce_max(tf.abs(grads["autodiff"][name]))), 1e-30)
        assert float(tf.reduce_max(tf.abs(g - grads["autodiff"][name]))) <= 1e-4 * scale, name
    with pytest.raises(ValueError, match="step_gradient"):
        GradientTrainer(genome, BlurConfig(), SIZES, step_gradient="manual")


def _sum_to_reference(t, like_shape):
    """NumPy: sum out the leading axes ``like`` lacks, then the axes where it has size 1."""
    lead = t.ndim - len(like_shape)
    out = t.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(like_shape) if n == 1 and out.shape[i] != 1)
    return out.sum(axis=axes, keepdims=True).reshape(like_shape)


@pytest.mark.parametrize("shape, like", [((2, 3, 4), (3, 4)), ((2, 3, 4), (2, 1, 4)),
                                         ((2, 3, 4), (1, 1)), ((2, 3, 4), (2, 3, 4)),
                                         ((5, 1, 3), (1, 3)), ((2, 3), ())])
def test_sum_to_sums_the_broadcast_axes(shape, like):
    t = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = _sum_to_reference(t, like)
    static = sum_to(tf.constant(t), tf.zeros(like))
    unknown = tf.function(sum_to, input_signature=[tf.TensorSpec([None] * len(shape)),
                                                   tf.TensorSpec([None] * len(like))])
    dynamic = unknown(tf.constant(t), tf.zeros(like))
    for got in (static, dynamic):
        assert tuple(got.shape) == like
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 3])
def test_unit_axes_static_and_unknown_shapes(n):
    v = tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    expected = v.numpy()[(...,) + (None,) * n]
    unknown = tf.function(lambda t: unit_axes(t, n), input_signature=[tf.TensorSpec([None, 3])])
    for got in (unit_axes(v, n), unknown(v)):
        assert got.shape.rank == 2 + n
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("start, stop, sizes", [(1, 3, [-1]), (0, 1, [1, 2]), (2, 2, [1])])
def test_reshape_axes_static_and_unknown_shapes(start, stop, sizes):
    t = tf.constant(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    shape = [2, 3, 4]
    expected = t.numpy().reshape(shape[:start] + sizes + shape[stop:])
    unknown = tf.function(lambda u: reshape_axes(u, start, stop, sizes),
                          input_signature=[tf.TensorSpec([None, None, None])])
    for got in (reshape_axes(t, start, stop, sizes), unknown(t)):
        np.testing.assert_array_equal(got.numpy(), expected)
