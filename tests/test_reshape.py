"""A reshape between BLUR layers passes all k states forward and backward, like a flatten:
with the backprop genome a dense → reshape → conv → flatten → dense network trains exactly
like the same Keras network under SGD, and ``bk.BlurReshape`` runs it in a ``BlurModel``."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import layer_specs as ls
from blur_keras.core import network

from test_conv_backprop import (HalfSquaredError, float64, stacked,  # noqa: F401
                                synapses_from, weighted)

LR, STEPS, BATCH, INPUTS, OUTPUTS = 0.05, 4, 5, 7, 3
SPECS = (ls.Dense(24), ls.Reshape((4, 3, 2)), ls.Conv2D(3, 2, 1, "same"), ls.Flatten(),
         ls.Dense(OUTPUTS))


def keras_network(hidden, seed=1):
    keras.utils.set_random_seed(seed)
    random_bias = keras.initializers.RandomNormal(stddev=0.3)
    return keras.Sequential([
        keras.Input((INPUTS,)),
        keras.layers.Dense(24, activation=hidden, bias_initializer=random_bias),
        keras.layers.Reshape((4, 3, 2)),
        keras.layers.Conv2D(3, 2, 1, "same", activation=hidden, bias_initializer=random_bias),
        keras.layers.Flatten(),
        keras.layers.Dense(OUTPUTS, bias_initializer=random_bias),
    ])


@pytest.mark.slow
@pytest.mark.parametrize("hidden,reduction", [("tanh", "sum"), ("relu", "mean")])
def test_dense_reshape_conv_chain_is_sgd(hidden, reduction, float64):
    model = keras_network(hidden)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=HalfSquaredError(
        reduction="sum" if reduction == "sum" else "sum_over_batch_size"))
    config = bk.BlurConfig.backprop(hidden, "linear", batch_reduction=reduction)
    params = bk.Genome.backprop(LR).params(tf.float64)
    step = tf.function(lambda s, x, y: network.inner_step(params, s, x, y, SPECS, config)[0])
    synapses, rng = synapses_from(model), np.random.default_rng(2)
    for t in range(STEPS):
        x, y = rng.normal(size=(BATCH, INPUTS)), rng.normal(size=(BATCH, OUTPUTS))
        model.train_on_batch(x, y)
        synapses = step(synapses, x, y)
        for layer, (w, _) in zip(weighted(model), synapses):
            np.testing.assert_allclose(w.numpy()[..., 0], stacked(layer), rtol=1e-5, atol=1e-9,
                                       err_msg=f"step {t}, layer {layer.name}")
    assert not np.allclose(synapses[1][0].numpy()[..., 0], stacked(weighted(keras_network(
        hidden))[1]))  # it trained


def test_a_wrong_reshape_order_is_caught(float64):
    """The comparison sees the neuron order: the same chain reshaped to (3, 4, 2) differs."""
    model = keras_network("tanh")
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=HalfSquaredError(reduction="sum"))
    specs = (SPECS[0], ls.Reshape((3, 4, 2))) + SPECS[2:]
    x = np.random.default_rng(0).normal(size=(BATCH, INPUTS))
    y = np.random.default_rng(1).normal(size=(BATCH, OUTPUTS))
    synapses = synapses_from(model)
    model.train_on_batch(x, y)
    new, _ = network.inner_step(bk.Genome.backprop(LR).params(tf.float64), synapses, x, y, specs,
                                bk.BlurConfig.backprop("tanh", "linear"))
    assert not np.allclose(new[0][0].numpy()[..., 0], stacked(weighted(model)[0]), rtol=1e-3)


def test_blur_reshape_in_a_blur_model_steps_as_the_core():
    net = keras.Sequential([keras.Input((INPUTS,)), bk.BlurDense(24, k=2),
                            bk.BlurReshape((4, 3, 2)), bk.BlurConv2D(3, 2, padding="same", k=2),
                            bk.BlurFlatten(), bk.BlurDense(OUTPUTS, k=2)])
    assert net.layers[1].compute_output_shape((None, 24, 2)) == (None, 4, 3, 2, 2)
    genome = bk.Genome.random(2, seed=3)
    model = bk.BlurModel(net, genome=genome, config=bk.BlurConfig())
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, INPUTS)).astype("f4"), rng.integers(0, OUTPUTS, 6)
    model.build((None, INPUTS))
    before = model.synapses()
    model.step(x, y)
    want, _ = network.inner_step(genome.params(), before, x, model.encode_targets(y), SPECS,
                                 bk.BlurConfig())
    for (w, v), (mw, mv) in zip(want, model.synapses()):
        np.testing.assert_allclose(mw.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mv.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               network.predict(genome.params(), model.synapses(), x, SPECS),
                               rtol=1e-5, atol=1e-6)


def test_reshape_errors_name_the_layer():
    with pytest.raises(ValueError, match="'odd'.*cannot be reshaped to \\(5, 5\\)"):
        keras.Sequential([keras.Input((INPUTS,)), bk.BlurDense(24, k=2),
                          bk.BlurReshape((5, 5), name="odd"), bk.BlurFlatten(), bk.BlurDense(2)])
    with pytest.raises(ValueError, match="target_shape"):
        bk.BlurReshape((0, 3))
    with pytest.raises(ValueError, match="cannot be reshaped"):
        network.init_synapses(0, (INPUTS,), (ls.Dense(24), ls.Reshape((5, 5)), ls.Flatten(),
                                             ls.Dense(2)), 2)
    net = keras.Sequential([keras.Input((4, 3, 2)), bk.BlurReshape((12,), name="first"),
                            bk.BlurDense(2, k=2)])
    with pytest.raises(ValueError, match="BlurReshape 'first' is the first BLUR layer"):
        bk.BlurModel(net, genome=bk.Genome.random(2)).build((None, 4, 3, 2))


def test_a_blur_model_with_a_reshape_saves_and_loads(tmp_path):
    net = keras.Sequential([keras.Input((INPUTS,)), bk.BlurDense(24, k=2),
                            bk.BlurReshape((4, 3, 2)), bk.BlurConv2D(3, 2, k=2), bk.BlurFlatten(),
                            bk.BlurDense(2, k=2)])
    model = bk.BlurModel(net, genome=bk.Genome.random(2, seed=3), config=bk.BlurConfig())
    model.compile(metrics=None, jit_compile=False)
    x = np.random.default_rng(0).normal(size=(4, INPUTS)).astype("f4")
    model.step(x, np.array([0, 1, 1, 0]))
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert loaded.network.layers[1].spec == ls.Reshape((4, 3, 2))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
