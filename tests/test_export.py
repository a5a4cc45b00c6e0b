"""The exported SavedModel: sizes at export time or dynamic, one-line errors."""

import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core.step import inner_step, predict
from blur_keras.rules.export import export_saved_model
from blur_keras.meta.objective.unroll import pm1_targets

CONFIG = bk.BlurConfig(activation_norm=True)
GENOME = bk.Genome.random(2, seed=1)


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    dyn = export_saved_model(str(d / "dynamic"), GENOME.numpy(), CONFIG, (3, 5, 2),
                             metadata={"logit_scale": 2.0})
    fixed = export_saved_model(str(d / "fixed"), GENOME.numpy(), CONFIG, (3, 5, 2), dynamic=False)
    return tf.saved_model.load(dyn), tf.saved_model.load(fixed), dyn


def batch(n=6, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def test_dynamic_export_trains_another_size(rules):
    dyn, _, _ = rules
    sizes = (4, 7, 3)
    flat = dyn.init_sized(tf.constant(5, tf.int64), tf.constant(sizes, tf.int32))
    assert [tuple(t.shape) for t in flat] == [(5, 7, 2), (7, 4, 2), (8, 3, 2), (3, 7, 2)]
    x, y = batch()
    synapses = tuple((flat[i], flat[i + 1]) for i in (0, 2))
    ref = synapses
    for _ in range(3):
        flat = dyn.train_step(*flat, x, y)
        ref, _ = inner_step(GENOME.params(), ref, x, pm1_targets(y, 3), CONFIG)
    out = dyn.predict(*flat, x).numpy()
    np.testing.assert_allclose(out, predict(GENOME.params(), ref, x, CONFIG).numpy(),
                               rtol=1e-5, atol=1e-6)
    # the serving signature too, and float64 x / int64 y are accepted
    sig = dyn.signatures["train_step"]
    assert len(sig(**{f"args_{i}": t for i, t in enumerate(flat)}, x=x, y=y)) == 4
    assert len(dyn.train_step(*flat, x.astype(np.float64), y.astype(np.int64))) == 4


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
    msg = one_line_error(fixed.train_step, *flat, x, y)
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
    assert pattern.replace("train_step", "predict") in one_line_error(dyn.predict, *flat, x)


def test_batch_of_one_is_fine_without_batch_statistics(tmp_path):
    path = export_saved_model(str(tmp_path / "plain"), GENOME.numpy(), bk.BlurConfig(), (3, 5, 2))
    rule = tf.saved_model.load(path)
    flat = rule.init(tf.constant(1, tf.int64))
    x, y = batch(features=3, classes=2)
    assert len(rule.train_step(*flat, x[:1], y[:1])) == 4
    assert rule.predict(*flat, x[:1]).shape == (1, 2)


@pytest.mark.parametrize("count", [0, 1, 3, 6, 8])
def test_a_wrong_number_of_synapse_tensors_is_one_line(rules, count):
    dyn, _, _ = rules
    flat = list(dyn.init(tf.constant(1, tf.int64)))
    extra = (flat * 2)[:count]
    x, y = batch(features=3, classes=2)
    msg = one_line_error(dyn.train_step, *extra, x, y)
    assert (f"train_step: expected 4 synapse tensors (W^0, V^0, W^1, V^1) then x, y; got {count} "
            "tensors before x, y (this rule has 2 layer pairs).") in msg
    msg = one_line_error(dyn.predict, *extra, x.astype(np.float64))
    assert f"predict: expected 4 synapse tensors (W^0, V^0, W^1, V^1) then x; got {count}" in msg
