"""The exported SavedModel: sizes at export time or dynamic, one-line errors, and under
activation_norm the tracked statistics ``BlurModel(inference="moving")`` predicts with."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core.normalization import INFERENCE_MOMENTUM
from blur_keras.core.step import inner_step, predict
from blur_keras.core.synapses import pair_up
from blur_keras.rules.export import export_saved_model
from blur_keras.meta.objective.unroll import pm1_targets

CONFIG = bk.BlurConfig(activation_norm=True)
GENOME = bk.Genome.random(2, seed=1)


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    dyn = export_saved_model(str(d / "dynamic"), GENOME.numpy(), CONFIG, (3, 5, 2),
                             metadata={"logit_scale": 2.0})
    fixed = export_saved_model(str(d / "fixed"), GENOME.numpy(), bk.BlurConfig(), (3, 5, 2),
                               dynamic=False)  # its state: the synapses alone
    return tf.saved_model.load(dyn), tf.saved_model.load(fixed), dyn


def batch(n=6, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def test_dynamic_export_trains_another_size(rules):
    dyn, _, _ = rules
    sizes = (4, 7, 3)
    flat = dyn.init_sized(tf.constant(5, tf.int64), tf.constant(sizes, tf.int32))
    assert [tuple(t.shape) for t in flat] == [(5, 7, 2), (7, 4, 2), (8, 3, 2), (3, 7, 2),
                                              (7, 2), (7, 2), (3, 2), (3, 2), ()]
    x, y = batch()
    synapses = tuple((flat[i], flat[i + 1]) for i in (0, 2))
    ref = synapses
    for _ in range(3):
        flat = dyn.train_step(*flat, x, y)
        ref, _ = inner_step(GENOME.params(), ref, x, pm1_targets(y, 3), CONFIG)
    out = dyn.predict_batch(*flat[:4], x).numpy()
    np.testing.assert_allclose(out, predict(GENOME.params(), ref, x, CONFIG).numpy(),
                               rtol=1e-5, atol=1e-6)
    # the serving signature too, and float64 x / int64 y are accepted
    sig = dyn.signatures["train_step"]
    assert len(sig(**{f"args_{i}": t for i, t in enumerate(flat)}, x=x, y=y)) == 9
    assert len(dyn.train_step(*flat, x.astype(np.float64), y.astype(np.int64))) == 9


def one_line_error(fn, *args):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(*args)
    message = str(info.value)
    assert "numpy=" not in message and "array(" not in message  # no dumped synapses
    assert len(message) < 600, message
    return message


def test_fixed_export_rejects_another_size_clearly(rules):
    dyn, fixed, _ = rules
    flat = dyn.init_sized(tf.constant(5, tf.int64), tf.constant((4, 7, 3), tf.int32))
    x, y = batch()
    msg = one_line_error(fixed.train_step, *flat[:4], x, y)
    assert "exported for the layer sizes [3, 5, 2] only (dynamic=False); the synapses have sizes [4,7,3]" in msg
    msg = one_line_error(fixed.init_sized, tf.constant(1, tf.int64), tf.constant((4, 7, 3), tf.int32))
    assert "exported for the sizes [3, 5, 2] only" in msg


@pytest.mark.parametrize("case,pattern", [
    ("x_width", "train_step: x has 5 features per example but the synapses expect 3."),
    ("x_rank", "train_step: x must have shape [batch, features]; got rank 3."),
    ("y_len", "train_step: x has 6 examples but y has 4 labels."),
    ("y_high", "train_step: labels must be integers in [0, 2); got values from 0 to 10."),
    ("y_negative", "train_step: labels must be integers in [0, 2); got values from -1 to 1."),
    ("y_huge", "labels must be integers in [0, 2); got values from 0 to 1000."),
    ("w_shape", "train_step: V^0 must have shape [5, 3, 2]"),
    ("w_rank", "train_step: synapse W^1 must have rank 3"),
])
def test_bad_inputs_are_one_line_errors(rules, case, pattern):
    _, fixed, _ = rules
    flat = list(fixed.init(tf.constant(1, tf.int64)))
    x, y = batch(features=3, classes=2)
    if case == "x_width":
        x = np.zeros((6, 5), np.float32)
    elif case == "x_rank":
        x = x[None]
    elif case == "y_len":
        y = y[:4]
    elif case == "y_high":
        y = y * 0 + np.array([0, 0, 0, 0, 0, 10], np.int32)
    elif case == "y_negative":
        y = np.array([0, 1, -1, 0, 1, 0], np.int32)
    elif case == "y_huge":
        y = np.array([0, 1, 1000, 0, 1, 0], np.int32)
    elif case == "w_shape":
        flat[1] = tf.zeros([5, 4, 2])
    elif case == "w_rank":
        flat[2] = tf.zeros([6, 2])
    msg = one_line_error(fixed.train_step, *flat, x, y)
    assert pattern in msg


def test_saved_model_carries_its_metadata_and_loads_as_a_rule(rules):
    from blur_keras.evaluation.suite import load_rule

    _, _, path = rules
    rule = load_rule(path)
    assert rule.config == CONFIG and rule.k == 2
    np.testing.assert_array_equal(rule.values["nu"], GENOME.numpy()["nu"])


@pytest.mark.parametrize("case,pattern", [
    ("empty", "train_step: x holds no examples (an empty batch)"),
    ("nan", "train_step: x contains NaN or Inf"),
    ("inf", "train_step: x contains NaN or Inf"),
    ("beyond_float32", "train_step: x contains NaN or Inf (or values beyond float32)"),
    ("one", "train_step: a batch of 1 example: this rule normalises activations over the batch"),
])
def test_what_blur_model_step_refuses_train_step_refuses(rules, case, pattern):
    """And ``predict_batch``, which normalises over the batch; ``predict`` (tracked
    statistics) takes a batch of one."""
    dyn, _, _ = rules
    flat = list(dyn.init(tf.constant(1, tf.int64)))
    x, y = batch(features=3, classes=2)
    if case == "empty":
        x, y = x[:0], y[:0]
    elif case == "nan":
        x[2, 1] = np.nan
    elif case == "inf":
        x[0, 0] = -np.inf
    elif case == "beyond_float32":
        x = x.astype(np.float64) * 1e300
    elif case == "one":
        x, y = x[:1], y[:1]
    msg = one_line_error(dyn.train_step, *flat, x, y)
    assert pattern in msg
    assert pattern.replace("train_step", "predict_batch") in one_line_error(dyn.predict_batch,
                                                                          *flat[:4], x)
    if case == "one":
        assert dyn.predict(*flat, x).shape == (1, 2)
    else:
        assert pattern.replace("train_step", "predict") in one_line_error(dyn.predict, *flat, x)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A rule without activation_norm: its state is the synapses alone."""
    return tf.saved_model.load(export_saved_model(str(tmp_path_factory.mktemp("plain") / "rule"),
                                                  GENOME.numpy(), bk.BlurConfig(), (3, 5, 2)))


def test_batch_of_one_is_fine_without_batch_statistics(plain):
    rule = plain
    flat = rule.init(tf.constant(1, tf.int64))
    x, y = batch(features=3, classes=2)
    assert len(rule.train_step(*flat, x[:1], y[:1])) == 4
    assert rule.predict(*flat, x[:1]).shape == (1, 2)


@pytest.mark.parametrize("count", [0, 1, 3, 6, 8])
def test_a_wrong_number_of_synapse_tensors_is_one_line(plain, count):
    dyn = plain
    flat = list(dyn.init(tf.constant(1, tf.int64)))
    assert len(flat) == 4 and not hasattr(dyn, "predict_batch")  # no tracked statistics
    extra = (flat * 2)[:count]
    x, y = batch(features=3, classes=2)
    msg = one_line_error(dyn.train_step, *extra, x, y)
    assert (f"train_step: expected 4 synapse tensors (W^0, V^0, W^1, V^1) then x, y; got {count} "
            "tensors before x, y (this rule has 2 layer pairs).") in msg
    msg = one_line_error(dyn.predict, *extra, x.astype(np.float64))
    assert f"predict: expected 4 synapse tensors (W^0, V^0, W^1, V^1) then x; got {count}" in msg


@pytest.mark.parametrize("count", [4, 8, 10])
def test_a_wrong_number_of_state_tensors_is_one_line(rules, count):
    dyn, _, _ = rules
    state = list(dyn.init(tf.constant(1, tf.int64)))
    x, y = batch(features=3, classes=2)
    msg = one_line_error(dyn.train_step, *(state * 2)[:count], x, y)
    assert ("train_step: expected 9 state tensors (the synapses W^0, V^0, W^1, V^1, then the "
            "tracked statistics mean^1, var^1, mean^2, var^2, steps) then x, y; got "
            f"{count} tensors before x, y") in msg
    assert "expected 9 state tensors" in one_line_error(dyn.predict, *(state * 2)[:count], x)
    msg = one_line_error(dyn.init_moments, *state[:3])
    assert "init_moments: expected 4 synapse tensors (W^0, V^0, W^1, V^1); got 3 tensors" in msg


@pytest.mark.parametrize("case,pattern", [
    ("mean_shape", "train_step: tracked statistic mean^1 must have shape [5, 2] (units of "
                   "layer 1, k); got [4,2]."),
    ("var_rank", "train_step: tracked statistic var^2 must have shape [2, 2]"),
    ("steps", "train_step: steps (the last state tensor) must be a scalar; got shape [1]."),
])
def test_bad_tracked_statistics_are_one_line_errors(rules, case, pattern):
    dyn, _, _ = rules
    state = list(dyn.init(tf.constant(1, tf.int64)))
    index, bad = {"mean_shape": (4, tf.zeros([4, 2])), "var_rank": (7, tf.zeros([2])),
                  "steps": (8, tf.zeros([1]))}[case]
    state[index] = bad
    x, y = batch(features=3, classes=2)
    assert pattern in one_line_error(dyn.train_step, *state, x, y)


def blur_model(genome, config, sizes):
    net = keras.Sequential([keras.Input((sizes[0],))] +
                           [bk.BlurDense(n, k=genome.k) for n in sizes[1:]])
    model = bk.BlurModel(net, genome=genome, config=config)
    model.build((None, sizes[0]))
    return model


@pytest.mark.slow
def test_the_saved_model_trains_and_predicts_as_blur_model_moving(tmp_path):
    """Step for step: synapses, tracked statistics and predictions as ``BlurModel`` in
    ``inference="moving"`` (its default momentum is the export's)."""
    assert inspect.signature(bk.BlurModel).parameters["inference_momentum"].default == \
        INFERENCE_MOMENTUM
    genome = bk.Genome.pretrained("sgd_residual_robust").with_metadata(schedule=[])  # as saved
    sizes = (6, 8, 7, 3)
    config = genome.config
    assert config.activation_norm
    rule = tf.saved_model.load(export_saved_model(str(tmp_path / "rule"), genome.numpy(), config,
                                                  sizes))
    assert set(rule.signatures) == {"train_step", "predict", "predict_batch", "init_moments"}
    state = rule.init(tf.constant(3, tf.int64))
    model = blur_model(genome, config, sizes)
    model.compile(metrics=None, jit_compile=False)  # train_on_batch: a compiled graph as well
    model.assign_synapses(pair_up(state[:6]))
    rng = np.random.default_rng(4)
    x_test = rng.normal(size=(40, 6)).astype("f4")
    for t in range(6):
        x = rng.normal(size=(16, 6)).astype("f4")
        y = rng.integers(0, 3, 16).astype("i4")
        model.train_on_batch(x, y)
        state = rule.train_step(*state, x, y)
        for mine, theirs in zip(state[:6], [s for pair in model.synapses() for s in pair]):
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"step {t}")
        tracked = [v for l in model.blur_layers for v in (l.moving_mean, l.moving_variance)]
        for mine, theirs in zip(state[6:12], tracked):
            np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)
        assert float(state[-1]) == t + 1 == int(model.moments_count)
        np.testing.assert_allclose(rule.predict(*state, x_test).numpy(),
                                   model.predict(x_test, batch_size=40, verbose=0),
                                   rtol=1e-6, atol=1e-6)
    # a batch of one predicts the row it predicts in a batch of 100
    x100 = rng.normal(size=(100, 6)).astype("f4")
    full = rule.predict(*state, x100).numpy()
    for i in (0, 57, 99):
        np.testing.assert_allclose(rule.predict(*state, x100[i:i + 1]).numpy()[0], full[i],
                                   rtol=1e-6, atol=1e-6)
    assert not np.allclose(rule.predict_batch(*state[:6], x100[:2]).numpy(), full[:2], atol=1e-3)
    # init_moments: the start statistics of given synapses, as init made them
    for mine, start in zip(rule.init_moments(*state[:6]), rule.init(tf.constant(3, tf.int64))[6:]):
        np.testing.assert_array_equal(mine.numpy(), start.numpy())
