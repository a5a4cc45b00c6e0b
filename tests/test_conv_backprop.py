"""docs/conv.md: with the k=2 backprop genome, a BLUR conv → pool → conv → flatten → dense
network trains exactly like the same Keras network under SGD, step for step (float64)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import layer_specs as ls
from blur_keras.core import network

LR = 0.05
STEPS = 4
BATCH = 5
OUTPUTS = 3


try:  # the loss the backprop genome descends, as the dense test defines it
    from test_backprop import HalfSquaredError
except ImportError:  # pragma: no cover
    from tests.test_backprop import HalfSquaredError


@pytest.fixture
def float64():
    """Keras in float64; afterwards floatx and the (possibly unset) global dtype policy as
    they were (reading the policy while float64 would otherwise pin it)."""
    from keras.src.backend.common import global_state
    previous, policy = keras.config.floatx(), global_state.get_global_attribute("dtype_policy")
    keras.config.set_floatx("float64")
    global_state.set_global_attribute("dtype_policy", None)
    yield
    keras.config.set_floatx(previous)
    global_state.set_global_attribute("dtype_policy", policy)


# image, conv1 (filters, kernel, strides, padding), pool (kind, size, strides, padding),
# conv2, hidden σ, batch reduction
CASES = {
    "valid_s1_max_sum": ((8, 8, 2), (3, 3, 1, "valid"), ("max", 2, None, "valid"),
                         (4, 2, 1, "valid"), "tanh", "sum"),
    "same_s2_avg_mean": ((9, 9, 1), (2, (3, 2), 2, "same"), ("avg", 2, None, "valid"),
                         (3, 3, 1, "same"), "tanh", "mean"),
    "same_s1_max_mean": ((6, 6, 3), (4, 2, 1, "same"), ("max", 2, None, "same"),
                         (2, 3, 2, "same"), "tanh", "mean"),
    "valid_s2_avg_sum": ((10, 10, 2), (3, 3, 2, "valid"), ("avg", 2, 1, "same"),
                         (3, 2, 2, "valid"), "relu", "sum"),
    "overlapping_max_pool": ((8, 8, 1), (2, 3, 1, "same"), ("max", 3, 2, "same"),
                             (3, 3, 1, "valid"), "relu", "sum"),
    "patches_input_s2_same": ((8, 8, 1), (8, 2, 2, "same"), ("max", 2, None, "valid"),
                              (3, 2, 1, "valid"), "tanh", "sum"),
    "same_s2_odd_avg_pool": ((7, 7, 2), (3, 3, 1, "valid"), ("avg", 3, 2, "same"),
                             (2, 3, 2, "same"), "tanh", "mean"),
}


def specs_of(case):
    _, (f1, k1, s1, p1), (kind, size, strides, pad), (f2, k2, s2, p2), _, _ = case
    return (ls.Conv2D(f1, k1, s1, p1), ls.Pool2D(kind, size, strides, pad),
            ls.Conv2D(f2, k2, s2, p2), ls.Flatten(), ls.Dense(OUTPUTS))


def keras_network(case, seed):
    image, (f1, k1, s1, p1), (kind, size, strides, pad), (f2, k2, s2, p2), hidden, _ = case
    keras.utils.set_random_seed(seed)
    pool = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    random_bias = keras.initializers.RandomNormal(stddev=0.3)
    return keras.Sequential([
        keras.Input(image),
        keras.layers.Conv2D(f1, k1, s1, p1, activation=hidden, bias_initializer=random_bias),
        pool(size, strides, pad),
        keras.layers.Conv2D(f2, k2, s2, p2, activation=hidden, bias_initializer=random_bias),
        keras.layers.Flatten(),
        keras.layers.Dense(OUTPUTS, bias_initializer=random_bias),
    ])


def weighted(model):
    return [l for l in model.layers if l.get_weights()]


def stacked(layer):
    """Keras kernel and bias as the BLUR W channel: ``[kh·kw·c_in + 1, c_out]`` (bias last)."""
    kernel, bias = layer.get_weights()
    return np.concatenate([kernel.reshape(-1, kernel.shape[-1]), bias[None]], axis=0)


def synapses_from(model):
    """W from Keras in both channels; V the symmetric tie ``V[(t, o), i] = W[(t, i), o]``."""
    pairs = []
    for layer in weighted(model):
        kernel = layer.get_weights()[0]
        if kernel.ndim == 4:
            v = np.transpose(kernel, (0, 1, 3, 2)).reshape(-1, kernel.shape[2])
        else:
            v = kernel.T
        pairs.append((np.repeat(stacked(layer)[..., None], 2, -1), np.repeat(v[..., None], 2, -1)))
    return tuple((tf.constant(w), tf.constant(v)) for w, v in pairs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_inner_step_is_sgd(name, float64):
    case = CASES[name]
    image, hidden, reduction = case[0], case[4], case[5]
    model = keras_network(case, seed=1)
    keras_reduction = "sum" if reduction == "sum" else "sum_over_batch_size"
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=HalfSquaredError(reduction=keras_reduction))
    config = bk.BlurConfig.backprop(hidden, "linear", batch_reduction=reduction)
    params = bk.Genome.backprop(LR).params(tf.float64)
    specs = specs_of(case)
    step = tf.function(lambda s, x, y: network.inner_step(params, s, x, y, specs, config)[0],
                       jit_compile=True)
    synapses = synapses_from(model)
    rng = np.random.default_rng(2)
    for t in range(STEPS):
        x = rng.normal(size=(BATCH,) + image)
        y = rng.normal(size=(BATCH, OUTPUTS))
        model.train_on_batch(x, y)
        synapses = step(synapses, x, y)
        for layer, (w, v) in zip(weighted(model), synapses):
            w = w.numpy()
            np.testing.assert_allclose(w[..., 0], stacked(layer), rtol=1e-5, atol=1e-9,
                                       err_msg=f"step {t}, layer {layer.name}")
            np.testing.assert_array_equal(w[..., 1], w[..., 0])
    start = stacked(keras_network(case, 1).layers[0])
    assert not np.allclose(synapses[0][0].numpy()[..., 0], start)  # it trained


def test_the_comparison_catches_a_wrong_routing(float64):
    """Average pooling's genome step differs from max pooling's Keras SGD step."""
    case = CASES["valid_s1_max_sum"]
    model = keras_network(case, seed=1)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=HalfSquaredError(reduction="sum"))
    config = bk.BlurConfig.backprop("tanh", "linear")
    specs = list(specs_of(case))
    specs[1] = ls.Pool2D("avg")
    synapses = synapses_from(model)
    x = np.random.default_rng(0).normal(size=(BATCH,) + case[0])
    y = np.random.default_rng(1).normal(size=(BATCH, OUTPUTS))
    model.train_on_batch(x, y)
    new, _ = network.inner_step(bk.Genome.backprop(LR).params(tf.float64), synapses, x, y,
                                tuple(specs), config)
    assert not np.allclose(new[0][0].numpy()[..., 0], stacked(weighted(model)[0]), rtol=1e-3)
