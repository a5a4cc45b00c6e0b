"""The SavedModel of a rule on a network given at export time (conv → pool → conv → flatten →
dense, or dense → reshape → conv → flatten → dense): it trains and predicts as the library's
conv ``BlurModel``, with one-line errors."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import layer_specs as ls
from blur_keras.core import network
from blur_keras.core.synapses import pair_up
from blur_keras.rules.export import export_saved_model

pytestmark = pytest.mark.slow  # each export traces and saves the whole chain (~40 s here)
IMAGE, CLASSES = (8, 8, 1), 3
SPECS = (ls.Conv2D(4, 3), ls.Pool2D("max"), ls.Conv2D(5, 2, padding="same"), ls.Flatten(),
         ls.Dense(CLASSES))
CONFIG = bk.BlurConfig(activation_norm=True)
GENOME = bk.Genome.random(2, seed=1)


@pytest.fixture(scope="module")
def conv_rule(tmp_path_factory):
    path = export_saved_model(str(tmp_path_factory.mktemp("conv") / "rule"), GENOME.numpy(),
                              CONFIG, IMAGE, specs=SPECS)
    return tf.saved_model.load(path)


def data(n=12, seed=0, shape=IMAGE):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n,) + shape).astype("f4"), rng.integers(0, CLASSES, n).astype("i4")


def test_the_conv_saved_model_trains_and_predicts_as_blur_model(conv_rule):
    net = keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(4, 3, k=2), bk.BlurMaxPooling2D(),
                            bk.BlurConv2D(5, 2, padding="same", k=2), bk.BlurFlatten(),
                            bk.BlurDense(CLASSES, k=2)])
    model = bk.BlurModel(net, GENOME, CONFIG, inference="batch")
    model.compile(metrics=None, jit_compile=False)
    model.build((None,) + IMAGE)
    state = conv_rule.init(tf.constant(2, tf.int64))
    want = network.init_synapses(tf.constant(2, tf.int64), IMAGE, SPECS, 2, CONFIG)
    for mine, theirs in zip(state, [t for pair in want for t in pair]):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    model.assign_synapses(pair_up(state))
    for t in range(4):
        x, y = data(seed=t)
        model.train_on_batch(x, y)
        state = conv_rule.train_step(*state, x, y)
        for mine, theirs in zip(state, [s for pair in model.synapses() for s in pair]):
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"step {t}")
    assert not np.allclose(state[0].numpy(), want[0][0].numpy())  # it trained
    x, _ = data(n=20, seed=9)
    np.testing.assert_allclose(conv_rule.predict(*state, x).numpy(),
                               model.predict(x, batch_size=20, verbose=0), rtol=1e-6, atol=1e-6)
    meta = json.loads(conv_rule.metadata_json.numpy().decode())
    assert meta["input_shape"] == list(IMAGE) and meta["specs"][1]["layer"] == "Pool2D"


@pytest.mark.parametrize("case,pattern", [
    ("count", "train_step: expected 6 synapse tensors (W^0, V^0, W^1, V^1, W^2, V^2) then x, y; "
              "got 5 tensors before x, y (this network has 3 layer pairs)."),
    ("w_shape", "train_step: synapse V^1 must have shape [20, 4, 2]; got [20,3,2]."),
    ("x_shape", "train_step: x must have shape [batch, 8, 8, 1]; got [12,8,7,1]."),
    ("x_rank", "train_step: x must have shape [batch, 8, 8, 1]; got [12,64]."),
    ("empty", "train_step: x holds no examples (an empty batch)"),
    ("nan", "train_step: x contains NaN or Inf"),
    ("one", "train_step: a batch of 1 example: this rule normalises activations over the batch"),
    ("label", "train_step: labels must be integers in [0, 3); got values from 0 to 7."),
])
def test_bad_inputs_are_one_line_errors(conv_rule, case, pattern):
    state = list(conv_rule.init(tf.constant(1, tf.int64)))
    x, y = data()
    if case == "count":
        state = state[:5]
    elif case == "w_shape":
        state[3] = tf.zeros([20, 3, 2])
    elif case == "x_shape":
        x = x[:, :, :7]
    elif case == "x_rank":
        x = x.reshape(12, 64)
    elif case in ("empty", "one"):
        x, y = x[:0 if case == "empty" else 1], y[:0 if case == "empty" else 1]
    elif case == "nan":
        x[3, 2, 2, 0] = np.nan
    elif case == "label":
        y[4] = 7
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        conv_rule.train_step(*state, x, y)
    assert pattern in str(info.value) and "numpy=" not in str(info.value)
    if case not in ("label", "count"):
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            conv_rule.predict(*state, x)
        assert pattern.replace("train_step", "predict") in str(info.value)


def test_a_reshape_chain_exports_and_trains_as_the_core(tmp_path):
    specs = (ls.Dense(24), ls.Reshape((4, 3, 2)), ls.Conv2D(3, 2), ls.Flatten(), ls.Dense(2))
    config = bk.BlurConfig()
    rule = tf.saved_model.load(export_saved_model(str(tmp_path / "rule"), GENOME.numpy(), config,
                                                  (7,), specs=specs))
    state = rule.init(tf.constant(4, tf.int64))
    synapses = pair_up(state)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x, y = rng.normal(size=(6, 7)).astype("f4"), rng.integers(0, 2, 6).astype("i4")
        state = rule.train_step(*state, x, y)
        synapses, _ = network.inner_step(GENOME.params(), synapses, x, 2.0 * tf.one_hot(y, 2) - 1,
                                         specs, config)
    for mine, theirs in zip(state, [t for pair in synapses for t in pair]):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rule.predict(*state, x[:1]).numpy()[0],
                               rule.predict(*state, x).numpy()[0], rtol=1e-6, atol=1e-6)


def test_export_time_errors():
    with pytest.raises(ValueError, match="needs a Dense last layer"):
        export_saved_model("/tmp/unused", GENOME.numpy(), CONFIG, IMAGE,
                           specs=(ls.Conv2D(2, 3),))
    with pytest.raises(ValueError, match="Dense layer .* needs a flat input"):
        export_saved_model("/tmp/unused", GENOME.numpy(), CONFIG, IMAGE, specs=(ls.Dense(2),))
