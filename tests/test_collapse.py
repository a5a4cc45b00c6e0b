"""A step that drives the network's output to a constant is reported like a non-finite one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core.checks import VARIED_SPREAD, collapsed_output, is_constant, output_spread

K = 2


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), bk.BlurDense(8, k=K), bk.BlurDense(3, k=K)])


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("f4"), rng.integers(0, 3, n)


def _zeroing_genome(layers=(1,)):
    """A per-layer genome whose synapse update keeps nothing of (f_syn = 0) and adds nothing
    to (eta_syn = 0) the synapses of ``layers`` (0-based): one step sets them to zero, so
    every example then gets the same output; the synapses stay finite and small."""
    genome = bk.Genome.random(K, seed=0, num_layers=2)
    f_syn, eta_syn = np.ones(2), np.full(2, -1e-3)
    f_syn[list(layers)] = 0.0
    eta_syn[list(layers)] = 0.0
    genome.assign({"f_syn": f_syn, "eta_syn": eta_syn})
    return genome


def _synapses(model):
    return [(layer.forward_synapses.numpy(), layer.backward_synapses.numpy())
            for layer in model.blur_layers]


def _assert_same(model, before):
    for (w, v), (w0, v0) in zip(_synapses(model), before):
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(v, v0)


# -- the pure test ---------------------------------------------------------------------------------
def test_spread_is_the_largest_column_range_relative_to_the_largest_magnitude():
    out = tf.constant([[1.0, -4.0], [3.0, -4.0], [2.0, -4.0]])
    assert float(output_spread(out)) == pytest.approx(2.0 / 4.0)
    assert float(output_spread(tf.zeros([5, 3]))) == 0.0
    assert bool(is_constant(tf.zeros([5, 3])))
    assert bool(is_constant(tf.fill([4, 3], 0.7)))
    assert not bool(is_constant(out))


def test_collapse_needs_a_varied_output_before_and_a_constant_one_after():
    varied = tf.constant([[0.1, -0.5], [0.9, 0.2], [-0.3, 0.4]])
    constant = tf.fill([3, 2], 0.25)
    assert bool(collapsed_output(varied, constant))
    assert bool(collapsed_output(varied, tf.zeros([3, 2])))
    assert not bool(collapsed_output(varied, varied))
    assert not bool(collapsed_output(constant, constant))  # e.g. a batch of identical examples
    nearly = tf.constant([[1.0, -1.0], [1.0 - 1e-6, -1.0]])  # saturated before the step
    assert float(output_spread(nearly)) < VARIED_SPREAD
    assert not bool(collapsed_output(nearly, tf.constant([[1.0, -1.0], [1.0, -1.0]])))
    nan = tf.constant([[np.nan, 0.0], [np.nan, 0.0]])
    assert not bool(collapsed_output(varied[:2], nan))  # the non-finite check reports that


def test_constant_means_to_the_rounding_of_the_dtype():
    base = np.array([[0.5, -0.2]] * 4)
    wobble = base + np.array([[0.0, 0.0], [1e-9, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert bool(is_constant(tf.constant(wobble, tf.float32)))  # below float32's resolution
    assert not bool(is_constant(tf.constant(wobble, tf.float64)))


def test_population_axes_are_judged_member_by_member():
    varied = tf.constant([[[0.1], [0.9]], [[0.3], [0.3]]])  # [2 members, B=2, C=1]
    after = tf.constant([[[0.2], [0.2]], [[0.3], [0.3]]])
    np.testing.assert_array_equal(collapsed_output(varied, after).numpy(), [True, False])


# -- BlurModel -------------------------------------------------------------------------------------
def test_step_that_zeroes_the_last_layer_is_refused_naming_it():
    model = bk.BlurModel(_net(), _zeroing_genome())
    x, y = _data()
    model.build((None, 6))
    before = _synapses(model)
    with pytest.raises(bk.NonFiniteError, match=r"BLUR layer 'blur_dense(_\d+)?' \(layer 2 of 2\)"
                       r" gave the same output for every example of the batch after this step.*"
                       r"left unchanged"):
        model.step(x, y)
    _assert_same(model, before)
    assert np.all(np.abs(before[1][0]) < 1e8)  # not a runaway: only the collapse check fires


def test_collapse_names_the_first_constant_layer():
    model = bk.BlurModel(_net(), _zeroing_genome(layers=(0, 1)))
    x, y = _data()
    with pytest.raises(bk.NonFiniteError, match=r"\(layer 1 of 2\) gave the same output"):
        model.step(x, y)


@pytest.mark.parametrize("jit", [True, False])
def test_fit_stops_at_the_collapsing_batch_and_keeps_the_synapses_before_it(jit):
    model = bk.BlurModel(_net(), _zeroing_genome())
    model.compile(jit_compile=jit)
    x, y = _data(n=64)
    model.build((None, 6))
    before = _synapses(model)
    with pytest.raises(bk.NonFiniteError, match=r"\(layer 2 of 2\) gave the same output .* after "
                       r"training batch 0.*the synapses before that step were kept"):
        model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    _assert_same(model, before)


def test_a_conv_chain_names_its_last_layer():
    net = keras.Sequential([keras.Input((6, 6, 1)), bk.BlurConv2D(3, 3, k=K), bk.BlurFlatten(),
                            bk.BlurDense(3, k=K)])
    genome = bk.Genome.random(K, seed=0, num_layers=2)
    genome.assign({"f_syn": np.array([1.0, 0.0]), "eta_syn": np.array([-1e-3, 0.0])})
    model = bk.BlurModel(net, genome, inference="batch")
    rng = np.random.default_rng(1)
    x, y = rng.uniform(size=(16, 6, 6, 1)).astype("f4"), rng.integers(0, 3, 16)
    with pytest.raises(bk.NonFiniteError, match=r"\(layer 2 of 2\) gave the same output"):
        model.step(x, y)


def test_without_check_finite_the_collapse_is_applied():
    model = bk.BlurModel(_net(), _zeroing_genome(), check_finite=False)
    x, y = _data()
    model.step(x, y)
    np.testing.assert_array_equal(model.blur_layers[1].forward_synapses.numpy(), 0.0)
    assert bool(is_constant(model(x)))


def test_healthy_training_and_identical_examples_do_not_fire():
    model = bk.BlurModel(_net(), bk.Genome.random(K, seed=0, synapse_update=-1e-2),
                         bk.BlurConfig(oja=True))
    model.compile(jit_compile=False)
    x, y = _data(n=96)
    x[:16] = x[0]  # a first batch of identical examples: constant before, never a collapse
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert not bool(is_constant(model(x[16:])))
