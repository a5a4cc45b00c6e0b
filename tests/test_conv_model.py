"""Convolutional BLUR layers in Keras (docs/conv.md): BlurModel fit/evaluate/predict/step,
.keras round trip, XLA, and bad input named before anything trains."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import layer_specs as ls
from blur_keras.core import network
from blur_keras.keras import chain

from test_conv_backprop import HalfSquaredError, float64, stacked  # noqa: F401

IMAGE = (8, 8, 1)


def conv_net(k=2, pool=bk.BlurMaxPooling2D, **conv):
    return keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(4, 3, k=k, **conv), pool(),
                             bk.BlurConv2D(5, 2, k=k, padding="same"), bk.BlurFlatten(),
                             bk.BlurDense(3, k=k)])


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n,) + IMAGE).astype("f4"), rng.integers(0, 3, n)


def test_fit_evaluate_predict_step():
    model = bk.BlurModel(conv_net(k=3), bk.Genome.random(3, seed=1))
    model.compile(jit_compile=False)
    x, y = data()
    before = [w.numpy() for w, _ in model.synapses()]
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert set(history.history) >= {"accuracy", "feedback_loss"}
    assert all(not np.allclose(b, w.numpy()) for b, (w, _) in zip(before, model.synapses()))
    assert len(model.evaluate(x, y, verbose=0)) == 2
    specs = chain.chain_specs(model._stack.chain)
    want = network.predict(model.genome.params(), model.synapses(), x, specs, model.config)
    np.testing.assert_allclose(model.predict(x, verbose=0), want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    synapses = model.synapses()
    prediction = model.step(x[:8], y[:8])
    new, states = network.inner_step(model.genome.params(), synapses, x[:8],
                                     model.encode_targets(y[:8]), specs, model.config)
    np.testing.assert_allclose(prediction.numpy(), states[-1][..., 0].numpy(), rtol=1e-6)
    for (w, v), (nw, nv) in zip(model.synapses(), new):
        np.testing.assert_allclose(w.numpy(), nw.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_blur_model_conv_chain_is_keras_sgd(float64):  # noqa: F811
    lr = 0.05
    keras.utils.set_random_seed(4)
    reference = keras.Sequential([
        keras.Input(IMAGE), keras.layers.Conv2D(4, 3, activation="tanh"),
        keras.layers.AveragePooling2D(2), keras.layers.Conv2D(5, 2, padding="same",
                                                             activation="tanh"),
        keras.layers.Flatten(), keras.layers.Dense(3)])
    reference.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=HalfSquaredError(reduction="sum_over_batch_size"))
    model = bk.BlurModel(conv_net(pool=bk.BlurAveragePooling2D), bk.Genome.backprop(lr),
                         bk.BlurConfig.backprop("tanh", "linear", "mean"), targets="raw")
    for layer, keras_layer in zip(model.blur_layers, [l for l in reference.layers
                                                      if l.get_weights()]):
        w = np.repeat(stacked(keras_layer)[..., None], 2, -1)
        layer.forward_synapses.assign(w)
    model.sync_synapses()
    model.compile(metrics=[], jit_compile=True)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(24,) + IMAGE), rng.normal(size=(24, 3))
    for t in range(3):
        reference.train_on_batch(x[8 * t:8 * t + 8], y[8 * t:8 * t + 8])
        model.train_on_batch(x[8 * t:8 * t + 8], y[8 * t:8 * t + 8])
    reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for layer, keras_layer in zip(model.blur_layers, [l for l in reference.layers
                                                      if l.get_weights()]):
        np.testing.assert_allclose(layer.forward_synapses.numpy()[..., 0], stacked(keras_layer),
                                   rtol=1e-5, atol=1e-9)


def test_keras_round_trip(tmp_path):
    config = bk.BlurConfig(symmetric=True, oja=True, activation_norm=True)
    model = bk.BlurModel(conv_net(pool=bk.BlurAveragePooling2D, strides=2, padding="same"),
                         bk.Genome.random(2, seed=2), config, inference="batch")
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "conv.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(l).__name__ for l in loaded.network.layers] == \
        [type(l).__name__ for l in model.network.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.step(x[:8], y[:8])
    model.step(x[:8], y[:8])
    for (w, v), (lw, lv) in zip(model.synapses(), loaded.synapses()):
        np.testing.assert_array_equal(w.numpy(), lw.numpy())
        np.testing.assert_array_equal(v.numpy(), lv.numpy())
    assert loaded.blur_layers[0].spec == ls.Conv2D(4, 3, 2, "same")


@pytest.mark.slow
def test_pure_step_compiles_with_xla():
    cfg = bk.BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                        batch_reduction="mean")
    specs = (ls.Conv2D(3, 3, 1, "same"), ls.Pool2D("max"), ls.Conv2D(4, 2, 2), ls.Flatten(),
             ls.Dense(3))
    params = bk.Genome.random(3, seed=0, transform_std=0.5).params(tf.float32)
    synapses = network.init_synapses(0, IMAGE, specs, 3, cfg)
    x, labels = data(8)
    y = 2.0 * tf.one_hot(labels, 3) - 1.0
    eager = network.inner_step(params, synapses, x, y, specs, cfg)[0]
    compiled = tf.function(lambda s: network.inner_step(params, s, x, y, specs, cfg)[0],
                           jit_compile=True)(synapses)
    for a, b in zip(tf.nest.flatten(eager), tf.nest.flatten(compiled)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


# -- bad input: a clear error naming the layer, before anything trains ---------------------------
def test_kernel_larger_than_input_names_the_layer():
    with pytest.raises(ValueError, match="big_kernel.*larger than its input"):
        keras.Sequential([keras.Input((4, 4, 1)), bk.BlurConv2D(2, 5, name="big_kernel"),
                          bk.BlurFlatten(), bk.BlurDense(2)])
    with pytest.raises(ValueError, match="larger than its input"):
        network.init_synapses(0, (4, 4, 1), (ls.Conv2D(2, 5), ls.Flatten(), ls.Dense(2)), 2)


def test_channel_count_mismatch():
    model = bk.BlurModel(conv_net(), bk.Genome.random(2))
    x, y = data()
    with pytest.raises(ValueError, match="expects"):
        model.fit(np.repeat(x, 3, axis=-1), y, verbose=0)
    specs = (ls.Conv2D(4, 3), ls.Flatten(), ls.Dense(2))
    synapses = network.init_synapses(0, (8, 8, 2), specs, 2)
    with pytest.raises(ValueError, match=r"Layer pair 0 \(Conv2D\) has W of shape \(19, 4, 2\)"):
        network.inner_step(bk.Genome.random(2).params(), synapses, x, np.zeros((48, 2), "f4"),
                           specs)


def test_k_mismatch_names_the_layer():
    with pytest.raises(ValueError, match="conv_k3.*k=3"):
        bk.BlurModel(keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(2, 3, k=3, name="conv_k3"),
                                       bk.BlurFlatten(), bk.BlurDense(2, k=3)]),
                     bk.Genome.random(2))
    with pytest.raises(ValueError, match="second.*k=3.*2 states|second.*k=3"):
        keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(2, 3, k=2), bk.BlurMaxPooling2D(),
                          bk.BlurConv2D(2, 2, k=3, name="second")])


def test_non_blur_layer_between_blur_layers_names_it():
    net = keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(2, 3),
                            keras.layers.Flatten(name="plain_flatten"), bk.BlurDense(2)])
    with pytest.raises(ValueError, match="plain_flatten"):
        bk.BlurModel(net, bk.Genome.random(2))
    lazy = keras.Sequential([bk.BlurConv2D(2, 3), keras.layers.MaxPooling2D(name="plain_pool"),
                             bk.BlurConv2D(2, 2), bk.BlurFlatten(), bk.BlurDense(2)])
    with pytest.raises(ValueError, match="plain_pool"):
        bk.BlurModel(lazy, bk.Genome.random(2))


def test_dense_after_a_feature_map_needs_a_flatten():
    with pytest.raises(ValueError, match="dense_on_map.*Flatten"):
        keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(2, 3),
                          bk.BlurDense(2, name="dense_on_map")])


def test_activation_norm_conv_chain_predicts_a_batch_of_one():
    """Tracked statistics (tests/test_conv_inference.py): a batch of one is fine by default,
    refused under ``inference="batch"``."""
    x, y = data(16)
    for inference in ("moving", "batch"):
        model = bk.BlurModel(conv_net(), bk.Genome.random(2), bk.BlurConfig(activation_norm=True),
                             inference=inference)
        model.step(x, y)
        if inference == "moving":
            assert model.predict(x[:1], verbose=0).shape == (1, 3)
        else:
            with pytest.raises(ValueError, match="batch of 1"):
                model.predict(x[:1], verbose=0)
