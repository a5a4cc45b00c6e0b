"""100 steps of fit on real Fashion-MNIST (Debian's dataset-fashion-mnist)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.data.images import load_images

STEPS, BATCH, HIDDEN, LR = 100, 32, 32, 0.002


class HalfSquaredError(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return 0.5 * tf.reduce_sum(tf.square(y_pred - y_true), axis=-1)


@pytest.fixture(scope="module")
def fashion():
    x, y = load_images("fashion_mnist", "train", download=False)
    xt, yt = load_images("fashion_mnist", "test", download=False)
    prep = lambda a: (a.reshape(len(a), -1) / 255.0).astype("f4")  # noqa: E731
    return prep(x[:STEPS * BATCH]), y[:STEPS * BATCH], prep(xt[:2000]), yt[:2000]


def test_backprop_genome_matches_keras_sgd_on_fashion_mnist(fashion):
    x, y, xt, yt = fashion
    keras.utils.set_random_seed(0)
    reference = keras.Sequential([keras.Input((784,)), keras.layers.Dense(HIDDEN, activation="tanh"),
                                  keras.layers.Dense(10)])
    reference.compile(optimizer=keras.optimizers.SGD(LR), loss=HalfSquaredError(reduction="sum"),
                      metrics=["accuracy"])
    net = keras.Sequential([keras.Input((784,)), bk.BlurDense(HIDDEN, k=2), bk.BlurDense(10, k=2)])
    model = bk.BlurModel(net, bk.Genome.backprop(LR), bk.BlurConfig.backprop("tanh", "linear"),
                         targets="one_hot")
    pairs = []
    for d in reference.layers:
        kernel, bias = d.get_weights()
        w = np.repeat(np.concatenate([kernel, bias[None]])[..., None], 2, -1)
        pairs.append((w, np.transpose(w[:-1], (1, 0, 2))))
    model.assign_synapses(pairs)
    model.compile(jit_compile=True)
    onehot = keras.utils.to_categorical(y, 10)
    reference.fit(x, onehot, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert len(history.history["accuracy"]) == 1
    sgd_acc = reference.evaluate(xt, keras.utils.to_categorical(yt, 10), verbose=0)[1]
    blur_acc = model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    print(f"Fashion-MNIST after {STEPS} steps: Keras SGD {sgd_acc:.4f}, backprop genome {blur_acc:.4f}")
    assert sgd_acc > 0.5  # the network really learned (chance: 0.1)
    assert blur_acc >= sgd_acc - 1e-6
    for d, layer in zip(reference.layers, model.blur_layers):
        kernel, bias = d.get_weights()
        np.testing.assert_allclose(layer.forward_synapses.numpy()[..., 0],
                                   np.concatenate([kernel, bias[None]]), atol=1e-4)


def test_random_genome_runs_100_steps_on_fashion_mnist(fashion):
    x, y, xt, yt = fashion
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((784,)), bk.BlurDense(HIDDEN, k=4), bk.BlurDense(10, k=4)])
    model = bk.BlurModel(net, bk.Genome.random(4, seed=1),
                         bk.BlurConfig(oja=True, synapse_norm=True))
    before = [t.numpy() for pair in model.synapses() for t in pair]
    model.compile(jit_compile=True)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    acc = model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    print(f"random genome k=4 after {STEPS} steps: accuracy {acc:.4f}")
    assert np.isfinite(history.history["feedback_loss"][0]) and 0.0 <= acc <= 1.0
    after = [t.numpy() for pair in model.synapses() for t in pair]
    assert all(np.all(np.isfinite(w)) for w in after)
    # the synapses are [W⁰, V⁰, W¹, V¹]; V⁰ is never read, so the rule leaves it unchanged
    assert all(np.abs(w - b).max() > 0 for i, (w, b) in enumerate(zip(after, before)) if i != 1)
