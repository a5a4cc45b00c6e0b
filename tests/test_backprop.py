"""docs/spec.md §4: the k=2 backprop genome reproduces Keras SGD step for step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk

SIZES = (20, 16, 8, 3)
BATCH = 32
STEPS = 20
LR = 0.01


class HalfSquaredError(keras.losses.Loss):
    """Per-sample ½ Σ_out (ŷ − y)²; the reduction pairs with BLUR's batch sum or mean."""

    def call(self, y_true, y_pred):
        return 0.5 * tf.reduce_sum(tf.square(y_pred - y_true), axis=-1)


def keras_network(hidden, last, seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZES[0],))
    h = inp
    for i, n in enumerate(SIZES[1:]):
        act = hidden if i < len(SIZES) - 2 else last
        h = keras.layers.Dense(n, activation=act, bias_initializer="random_normal")(h)
    return keras.Model(inp, h)


def dense_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Dense)]


def stacked(dense):
    """Keras kernel and bias as one [n+1, m] matrix (bias last)."""
    kernel, bias = dense.get_weights()
    return np.concatenate([kernel, bias[None]], axis=0)


def synapses_from(model):
    pairs = []
    for d in dense_layers(model):
        w = np.repeat(stacked(d)[..., None], 2, axis=-1)
        pairs.append((tf.constant(w), tf.constant(np.transpose(w[:-1], (1, 0, 2)))))
    return tuple(pairs)


def batches(seed, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, SIZES[0])).astype("f4"),
             rng.normal(size=(BATCH, SIZES[-1])).astype("f4")) for _ in range(steps)]


@pytest.mark.parametrize("hidden,last,reduction", [
    ("tanh", "linear", "sum"),
    ("relu", "tanh", "sum"),
    ("tanh", "linear", "mean"),
])
def test_inner_step_is_sgd(hidden, last, reduction):
    model = keras_network(hidden, last, seed=3)
    keras_reduction = "sum" if reduction == "sum" else "sum_over_batch_size"
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=HalfSquaredError(reduction=keras_reduction))
    config = bk.BlurConfig.backprop(hidden, last, batch_reduction=reduction)
    params = bk.Genome.backprop(LR).params()
    step = tf.function(lambda s, x, y: bk.inner_step(params, s, x, y, config)[0], jit_compile=True)
    synapses = synapses_from(model)
    for t, (x, y) in enumerate(batches(seed=7)):
        model.train_on_batch(x, y)
        synapses = step(synapses, x, y)
        for l, (d, (w, v)) in enumerate(zip(dense_layers(model), synapses)):
            w = w.numpy()
            np.testing.assert_allclose(w[..., 0], stacked(d), atol=1e-5, rtol=0,
                                       err_msg=f"step {t}, layer {d.name}")
            np.testing.assert_array_equal(w[..., 1], w[..., 0])  # single-state tie
            if l > 0:  # V⁰ is never read, so it is not updated
                np.testing.assert_array_equal(v.numpy(), np.transpose(w[:-1], (1, 0, 2)))


def test_blur_model_train_on_batch_and_fit_are_sgd():
    """The Keras path (BlurModel.train_on_batch and fit) gives the same SGD trajectory."""
    hidden, last = "tanh", "linear"
    reference = keras_network(hidden, last, seed=5)
    reference.compile(optimizer=keras.optimizers.SGD(LR), loss=HalfSquaredError(reduction="sum"))
    net = keras.Sequential([keras.Input((SIZES[0],))] + [bk.BlurDense(n, k=2) for n in SIZES[1:]])
    model = bk.BlurModel(net, bk.Genome.backprop(LR), bk.BlurConfig.backprop(hidden, last),
                         targets="raw")
    model.assign_synapses(synapses_from(reference))
    model.compile(metrics=[], jit_compile=True)
    data = batches(seed=11, steps=10)
    for t, (x, y) in enumerate(data):
        reference.train_on_batch(x, y)
        model.train_on_batch(x, y)
        for d, layer in zip(dense_layers(reference), model.blur_layers):
            np.testing.assert_allclose(layer.forward_synapses.numpy()[..., 0], stacked(d),
                                       atol=1e-5, rtol=0, err_msg=f"train_on_batch step {t}")
    x = np.concatenate([b[0] for b in data])
    y = np.concatenate([b[1] for b in data])
    reference.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for d, layer in zip(dense_layers(reference), model.blur_layers):
        np.testing.assert_allclose(layer.forward_synapses.numpy()[..., 0], stacked(d),
                                   atol=1e-5, rtol=0, err_msg="after fit")
