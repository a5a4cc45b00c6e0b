"""The SavedModel of a rule on a network given at export time (conv → pool → conv → flatten →
dense, or dense → reshape → conv → flatten → dense): it trains and predicts as the library's
conv ``BlurModel``, with one-line errors; under activation_norm its state carries the tracked
statistics ``BlurModel(inference="moving")`` predicts with."""

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
    model.assign_synapses(pair_up(state[:6]))  # then the tracked statistics
    for t in range(4):
        x, y = data(seed=t)
        model.train_on_batch(x, y)
        state = conv_rule.train_step(*state, x, y)
        for mine, theirs in zip(state, [s for pair in model.synapses() for s in pair]):
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"step {t}")
    assert not np.allclose(state[0].numpy(), want[0][0].numpy())  # it trained
    x, _ = data(n=20, seed=9)
    np.testing.assert_allclose(conv_rule.predict_batch(*state[:6], x).numpy(),
                               model.predict(x, batch_size=20, verbose=0), rtol=1e-6, atol=1e-6)
    meta = json.loads(conv_rule.metadata_json.numpy().decode())
    assert meta["input_shape"] == list(IMAGE) and meta["specs"][1]["layer"] == "Pool2D"


@pytest.mark.parametrize("case,pattern", [
    ("count", "train_step: expected 13 state tensors (the synapses W^0, V^0, W^1, V^1, W^2, V^2, "
              "then the tracked statistics mean^1, var^1, mean^2, var^2, mean^3, var^3, steps) "
              "then x, y; got 5 tensors before x, y (this network has 3 layer pairs)."),
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
    if case in ("label", "count"):
        return
    for name in ("predict", "predict_batch"):
        args = state[:6] if name == "predict_batch" else state
        if case == "one" and name == "predict":  # tracked statistics: a batch of one is fine
            assert conv_rule.predict(*args, x).shape == (1, CLASSES)
            continue
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            getattr(conv_rule, name)(*args, x)
        assert pattern.replace("train_step", name) in str(info.value)


def test_a_reshape_chain_exports_and_trains_as_the_core(tmp_path):
    specs = (ls.Dense(24), ls.Reshape((4, 3, 2)), ls.Conv2D(3, 2), ls.Flatten(), ls.Dense(2))
    config = bk.BlurConfig()
    rule = tf.saved_model.load(export_saved_model(str(tmp_path / "rule"), GENOME.numpy(), config,
                                                  (7,), specs=specs))
    state = rule.init(tf.constant(4, tf.int64))
    assert len(state) == 6 and not hasattr(rule, "predict_batch")  # no tracked statistics
    assert json.loads(rule.metadata_json.numpy().decode())["inference"] == "batch"
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


# -- tracked statistics (activation_norm): a k=3 conv chain, a momentum other than the default --
SMALL, MOMENTUM = (6, 6, 1), 0.8
SMALL_SPECS = (ls.Conv2D(3, 3, padding="same"), ls.Pool2D("max"), ls.Flatten(), ls.Dense(CLASSES))
GENOME3 = bk.Genome.random(3, seed=2)


@pytest.fixture(scope="module")
def moving_rule(tmp_path_factory):
    path = export_saved_model(str(tmp_path_factory.mktemp("moving") / "rule"), GENOME3.numpy(),
                              CONFIG, SMALL, specs=SMALL_SPECS, inference_momentum=MOMENTUM)
    return tf.saved_model.load(path)


def small_model():
    net = keras.Sequential([keras.Input(SMALL), bk.BlurConv2D(3, 3, padding="same", k=3),
                            bk.BlurMaxPooling2D(), bk.BlurFlatten(), bk.BlurDense(CLASSES, k=3)])
    model = bk.BlurModel(net, GENOME3, CONFIG, inference_momentum=MOMENTUM)
    model.build((None,) + SMALL)
    return model


def numpy_fold(tracked, batch, count):
    """``normalization.track_moments`` in NumPy: ``m + a (b − m)``, ``a = max(1 − momentum,
    1 / (count + 1))``."""
    a = max(1.0 - MOMENTUM, 1.0 / (count + 1.0))
    return [m + a * (b - m) for m, b in zip(tracked, batch)]


def test_the_conv_saved_model_tracks_statistics_as_blur_model(moving_rule):
    """Step for step: synapses, tracked statistics and steps as ``BlurModel.step`` (momentum
    0.8, passed through the export) and as ``network.inner_step`` + a NumPy fold of
    ``network.step_moments``."""
    rule, model = moving_rule, small_model()
    assert set(rule.signatures) == {"train_step", "predict", "predict_batch", "init_moments"}
    meta = json.loads(rule.metadata_json.numpy().decode())
    assert meta["inference"] == "moving" and meta["inference_momentum"] == MOMENTUM
    state = rule.init(tf.constant(5, tf.int64))
    assert [tuple(t.shape) for t in state[4:]] == [(3, 3)] * 4 + [()]
    model.assign_synapses(pair_up(state[:4]))
    synapses, tracked = pair_up(state[:4]), [t.numpy() for t in state[4:8]]
    params = GENOME3.params()
    for t in range(4):
        x, y = data(n=8, seed=20 + t, shape=SMALL)
        batch = [m.numpy() for pair in network.step_moments(params, synapses, x, SMALL_SPECS,
                                                            CONFIG) for m in pair]
        tracked = numpy_fold(tracked, batch, t)
        synapses, _ = network.inner_step(params, synapses, x, 2.0 * tf.one_hot(y, CLASSES) - 1,
                                         SMALL_SPECS, CONFIG)
        model.step(x, y)
        state = rule.train_step(*state, x, y)
        theirs = [v for l in model.blur_layers for v in (l.moving_mean, l.moving_variance)]
        for mine, core, keras_ in zip(state, [s for p in synapses for s in p] + tracked,
                                      [s for p in model.synapses() for s in p] + theirs):
            np.testing.assert_allclose(mine.numpy(), np.asarray(core), rtol=1e-5, atol=1e-5,
                                       err_msg=f"step {t}")
            np.testing.assert_allclose(mine.numpy(), np.asarray(keras_), rtol=1e-5, atol=1e-5,
                                       err_msg=f"step {t}")
        assert float(state[-1]) == t + 1 == int(model.moments_count)
    assert not np.allclose(tracked[0], 0.0)  # the statistics moved off their start
    x, _ = data(n=8, seed=40, shape=SMALL)
    np.testing.assert_allclose(rule.predict(*state, x).numpy(),
                               model.predict(x, batch_size=8, verbose=0), rtol=1e-5, atol=1e-5)


def test_predict_uses_the_tracked_statistics_and_predict_batch_the_batch(moving_rule):
    rule = moving_rule
    state = rule.init(tf.constant(6, tf.int64))
    for t in range(3):
        state = rule.train_step(*state, *data(n=8, seed=30 + t, shape=SMALL))
    synapses, tracked = pair_up(state[:4]), pair_up(state[4:8])
    x, _ = data(n=8, seed=41, shape=SMALL)
    params = GENOME3.params()
    full = rule.predict(*state, x).numpy()
    np.testing.assert_allclose(full, network.predict(params, synapses, x, SMALL_SPECS, CONFIG,
                                                     moments=tracked), rtol=1e-5, atol=1e-5)
    for i in (0, 5, 7):  # a batch of one predicts its row of the batch
        one = rule.predict(*state, x[i:i + 1]).numpy()
        np.testing.assert_allclose(one[0], full[i], rtol=1e-5, atol=1e-5)
    batch = rule.predict_batch(*state[:4], x).numpy()
    np.testing.assert_allclose(batch, network.predict(params, synapses, x, SMALL_SPECS, CONFIG),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(batch, full, atol=1e-3)  # the batch's statistics are not the tracked
    with pytest.raises(tf.errors.InvalidArgumentError, match="predict_batch: a batch of 1"):
        rule.predict_batch(*state[:4], x[:1])


def test_init_moments_are_the_start_statistics_of_given_synapses(moving_rule):
    """Zeros and ones ``[channels or units, k]`` and ``steps`` 0, as ``init`` makes them and as
    a fresh ``BlurModel`` holds them (the first step replaces them)."""
    rule = moving_rule
    start = rule.init(tf.constant(7, tf.int64))
    trained = rule.train_step(*start, *data(n=8, seed=50, shape=SMALL))
    got = rule.init_moments(*trained[:4])
    for mine, want in zip(got, start[4:]):
        np.testing.assert_array_equal(mine.numpy(), want.numpy())
    fresh = [v.numpy() for l in small_model().blur_layers for v in (l.moving_mean,
                                                                     l.moving_variance)]
    for mine, want in zip(got[:4], fresh):
        np.testing.assert_array_equal(mine.numpy(), want)
    assert len(got) == 5 and float(got[-1]) == 0.0
    served = rule.signatures["init_moments"](**{f"args_{i}": t for i, t in enumerate(trained[:4])})
    assert len(served) == 5


def one_line_error(fn, *args):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(*args)
    msg = str(info.value)
    assert "numpy=" not in msg
    return msg


@pytest.mark.parametrize("count", [4, 8, 10])
def test_a_wrong_number_of_state_tensors_is_one_line(moving_rule, count):
    rule = moving_rule
    state = list(rule.init(tf.constant(1, tf.int64)))
    x, y = data(n=8, shape=SMALL)
    want = ("expected 9 state tensors (the synapses W^0, V^0, W^1, V^1, then the tracked "
            "statistics mean^1, var^1, mean^2, var^2, steps)")
    msg = one_line_error(rule.train_step, *(state * 2)[:count], x, y)
    assert (f"train_step: {want} then x, y; got {count} tensors before x, y (this network has 2 "
            "layer pairs).") in msg
    assert f"predict: {want} then x; got {count}" in one_line_error(rule.predict,
                                                                    *(state * 2)[:count], x)
    msg = one_line_error(rule.predict_batch, *(state * 2)[:count + 1], x)  # 9: the whole state
    assert "predict_batch: expected 4 synapse tensors (W^0, V^0, W^1, V^1) then x; got" in msg
    msg = one_line_error(rule.init_moments, *state[:3])
    assert "init_moments: expected 4 synapse tensors (W^0, V^0, W^1, V^1); got 3 tensors" in msg


@pytest.mark.parametrize("case,pattern", [
    ("mean_shape", "tracked statistic mean^1 must have shape [3, 3] (channels of layer 1, k); "
                   "got [4,3]."),
    ("var_rank", "tracked statistic var^2 must have shape [3, 3] (units of layer 2, k); got [3]."),
    ("var_k", "tracked statistic var^1 must have shape [3, 3] (channels of layer 1, k); got [3,2]."),
    ("steps", "steps (the last state tensor) must be a scalar; got shape [1]."),
    ("init_moments", "init_moments: synapse V^1 must have shape [3, 27, 3]; got [3,27,2]."),
])
def test_bad_tracked_statistics_are_one_line_errors(moving_rule, case, pattern):
    rule = moving_rule
    state = list(rule.init(tf.constant(1, tf.int64)))
    x, y = data(n=8, shape=SMALL)
    if case == "init_moments":
        assert pattern in one_line_error(rule.init_moments, *state[:3], tf.zeros([3, 27, 2]))
        return
    index, bad = {"mean_shape": (4, tf.zeros([4, 3])), "var_rank": (7, tf.zeros([3])),
                  "var_k": (5, tf.zeros([3, 2])), "steps": (8, tf.zeros([1]))}[case]
    state[index] = bad
    assert f"train_step: {pattern}" in one_line_error(rule.train_step, *state, x, y)
    assert f"predict: {pattern}" in one_line_error(rule.predict, *state, x[:1])
