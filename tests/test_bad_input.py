"""Bad input at the edges of BlurModel, BlurDense, BlurConfig and the pure API.

Every case ends in a clear error naming the argument, the value received and
what is expected, raised before any synapse changes, or in correct behaviour.
"""

import glob
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
import helpers

K = 3


def toy_data(seed=0, n=64, width=6):
    return helpers.toy_data(seed, n, width)


def make_model(seed=0, config=None, with_input=True, prefix=(), jit=False, **model_kwargs):
    keras.utils.set_random_seed(seed)
    layers = ([keras.Input((6,))] if with_input else []) + list(prefix)
    layers += [bk.BlurDense(8, k=K), bk.BlurDense(3, k=K)]
    model = bk.BlurModel(keras.Sequential(layers),
                         bk.Genome.random(K, seed=seed, synapse_update=-1e-2),
                         config or bk.BlurConfig(oja=True), **model_kwargs)
    model.compile(jit_compile=jit)
    return model


def synapse_arrays(model):
    return [w.numpy() for w in model.network.weights]


def assert_unchanged(model, before):
    for a, b in zip(synapse_arrays(model), before):
        np.testing.assert_array_equal(a, b)


# -- a Sequential network built without keras.Input -----------------------------------------------
def test_fit_on_network_without_input_layer():
    x, y = toy_data()
    model = make_model(with_input=False)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    reference = make_model(with_input=True)
    reference.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(synapse_arrays(model), synapse_arrays(reference)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fit_on_dataset_without_input_layer():
    x, y = toy_data()
    model = make_model(with_input=False)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), verbose=0)
    assert model.built and model.blur_layers[0].input_width == 6


# -- labels checked whatever the input pipeline ---------------------------------------------------
@pytest.mark.parametrize("bad", [7, -1, 0.5], ids=["too_large", "negative", "fraction"])
def test_bad_labels_through_tf_data(bad):
    x, y = toy_data()
    y = y.astype("f4") if bad == 0.5 else y
    y[5] = bad
    model = make_model()
    model.fit(*toy_data(seed=1, n=16), batch_size=16, verbose=0)  # compiled on clean labels
    before = synapse_arrays(model)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(ValueError, match=r"Labels.*\[0, 3\).*got label .* at training batch 0"):
        model.fit(ds, verbose=0)
    assert_unchanged(model, before)


def test_bad_labels_in_evaluate_dataset():
    x, y = toy_data()
    y[3] = 9
    model = make_model()
    with pytest.raises(ValueError, match=r"label"):
        model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), verbose=0)


# -- sample and class weights are refused, never dropped ------------------------------------------
def test_sample_weight_and_class_weight_are_refused():
    x, y = toy_data()
    model = make_model()
    before = synapse_arrays(model)
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(x, y, sample_weight=np.zeros(len(y)), verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(y), "f4"))).batch(16)
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(ds, verbose=0)
    assert_unchanged(model, before)


# -- float64 end to end ---------------------------------------------------------------------------
@pytest.fixture
def float64():
    with _floatx("float64"):
        yield


def test_float64_backprop_matches_keras_sgd(float64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20 * 8, 5))
    y = rng.normal(size=(20 * 8, 3))
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((5,)), bk.BlurDense(4, k=2), bk.BlurDense(3, k=2)])
    genome = bk.Genome.backprop(0.05)
    assert genome.numpy()["eta_syn"].dtype == np.float64
    assert genome.numpy()["eta_syn"] == -0.05  # not rounded to float32
    model = bk.BlurModel(net, genome, bk.BlurConfig.backprop(), targets="raw")
    ref = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                            keras.layers.Dense(3)])
    for layer, dense in zip(model.blur_layers, ref.layers):
        w = layer.forward_synapses.numpy()
        dense.set_weights([w[:-1, :, 0], w[-1, :, 0]])
    ref.compile(optimizer=keras.optimizers.SGD(0.05),
                loss=lambda t, p: 0.5 * tf.reduce_sum(tf.square(p - t)))
    model.compile(metrics=None)
    for i in range(20):
        xb, yb = x[8 * i:8 * i + 8], y[8 * i:8 * i + 8]
        model.train_on_batch(xb, yb)
        ref.train_on_batch(xb, yb)
    for layer, dense in zip(model.blur_layers, ref.layers):
        w, b = dense.get_weights()
        got = layer.forward_synapses.numpy()
        assert got.dtype == np.float64
        np.testing.assert_allclose(got[:-1, :, 0], w, atol=1e-12, rtol=0)
        np.testing.assert_allclose(got[-1, :, 0], b, atol=1e-12, rtol=0)


def test_float32_genome_trains_a_float64_network(float64):
    with _floatx("float32"):
        genome32 = bk.Genome.random(K, seed=0)
    assert genome32.numpy()["nu"].dtype == np.float32
    model = bk.BlurModel(keras.Sequential([keras.Input((6,)), bk.BlurDense(3, k=K)]), genome32)
    x, y = toy_data(n=8)
    model.step(x, y)
    assert model.blur_layers[0].forward_synapses.dtype == "float64"
    assert np.isfinite(model.predict(x, verbose=0)).all()


class _floatx:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.old = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx(self.dtype)
        keras.config.set_dtype_policy(self.dtype)

    def __exit__(self, *exc):
        keras.config.set_floatx(self.old[0])
        keras.config.set_dtype_policy(self.old[1])


# -- empty and non-finite batches -----------------------------------------------------------------
def _nan_at(x):
    x = x.copy()
    x[2, 3] = np.nan
    return x


@pytest.mark.parametrize("case,error,match", [
    ("empty_sum", ValueError, "empty batch"),
    ("empty_mean", ValueError, "empty batch"),
    ("nan_input", ValueError, "NaN or Inf"),
    ("overflow", bk.NonFiniteError, "non-finite.*left unchanged"),
])
def test_step_refuses_batches_that_would_poison_the_synapses(case, error, match):
    reduction = "mean" if case == "empty_mean" else "sum"
    model = make_model(config=bk.BlurConfig(batch_reduction=reduction, oja=True))
    model.build((None, 6))
    before = synapse_arrays(model)
    x, y = toy_data(n=8)
    if case == "overflow":  # a synapse update so large that the new synapses overflow
        model.genome.assign({"eta_syn": -1e38})
    x = {"nan_input": _nan_at(x), "overflow": x * 1e3}.get(case, x[:0] if "empty" in case else x)
    with pytest.raises(error, match=match):
        model.step(x, y[:len(x)])
    assert_unchanged(model, before)


def test_predict_on_empty_batch():
    model = make_model()
    with pytest.raises(ValueError, match="empty"):
        model.predict(np.zeros((0, 6), "f4"), verbose=0)


# -- steps_per_execution and the non-finite guard -------------------------------------------------
def test_nonfinite_guard_with_steps_per_execution():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((6,)), bk.BlurDense(8, k=K), bk.BlurDense(3, k=K)])
    model = bk.BlurModel(net, bk.Genome.random(K, seed=0, synapse_update=-1e-2),
                         bk.BlurConfig(oja=True))
    model.compile(steps_per_execution=4)
    x, y = toy_data(n=64)
    model.build((None, 6))
    before = synapse_arrays(model)
    x[1] = np.nan  # in batch 0 (batch size 8)
    with pytest.raises(bk.NonFiniteError, match=r"training batch 0\b"):
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    assert_unchanged(model, before)  # batches 1-3 of the same execution did not train


# -- layers in front of the chain see training=True in fit ----------------------------------------
def test_prefix_layers_run_in_training_mode_during_fit():
    x, y = toy_data()
    plain = make_model(seed=4)
    dropped = make_model(seed=4, prefix=[keras.layers.Dropout(0.9, seed=1)])
    for m in (plain, dropped):
        m.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    diffs = [np.abs(a - b).max() for a, b in zip(synapse_arrays(plain), synapse_arrays(dropped))]
    assert max(diffs) > 1e-3
    # inference is unaffected by dropout
    np.testing.assert_allclose(dropped.predict(x, verbose=0),
                               dropped(x, training=False).numpy(), atol=1e-6)


# -- BlurConfig and BlurDense types ---------------------------------------------------------------
@pytest.mark.parametrize("field,value,expected", [
    ("symmetric", "False", "bool"),
    ("oja", 1, "bool"),
    ("norm_epsilon", -1.0, "positive"),
    ("norm_epsilon", "1e-3", "number"),
    ("synapse_norm_epsilon", math.inf, "positive"),
    ("feedback", 3, "one of"),
    ("hidden_activation", None, "activation"),
])
def test_blur_config_type_checks(field, value, expected):
    with pytest.raises((TypeError, ValueError), match=f"BlurConfig.{field}=.*{expected}"):
        bk.BlurConfig(**{field: value})


def test_blur_config_accepts_numpy_and_int_values():
    config = bk.BlurConfig(symmetric=np.bool_(True), norm_epsilon=1)
    assert config.symmetric is True and config.norm_epsilon == 1.0


def test_blur_dense_accepts_numpy_integers():
    layer = bk.BlurDense(np.int64(5), k=np.int32(3))
    assert layer.units == 5 and layer.k == 3 and type(layer.units) is int
    assert layer.get_config()["units"] == 5


# -- a sentence where a raw error was -------------------------------------------------------------
def test_step_with_mismatched_batches():
    model = make_model()
    x, y = toy_data(n=16)
    with pytest.raises(ValueError, match=r"x has 16 examples but y has 8"):
        model.step(x, y[:8])


@pytest.mark.parametrize("labels,match", [
    (np.array(["a", "b", "c", "a"]), "numbers"),
    (np.array([0, 1, 2, 0], "c8"), "complex"),
])
def test_step_with_non_numeric_labels(labels, match):
    model = make_model()
    x, _ = toy_data(n=4)
    with pytest.raises((TypeError, ValueError), match=match):
        model.step(x, labels)


@pytest.mark.parametrize("x,match", [
    (np.full((4, 6), "a"), "numbers"),
    (np.ones((4, 6), "c8"), "complex"),
])
def test_non_numeric_inputs(x, match):
    model = make_model()
    with pytest.raises(TypeError, match=match):
        model.step(x, np.zeros(4, "i8"))
    with pytest.raises(TypeError, match=match):
        model.predict(x, verbose=0)


def _pure_setup(k=3, sizes=(5, 4, 2), pop=()):
    genome = bk.Genome.random(k, seed=0)
    synapses = bk.init_synapses(0, sizes, k, pop)
    return genome.params(), synapses


@pytest.mark.parametrize("case,match", [
    ("x_width", r"x has 7 features.*5"),
    ("targets_width", r"targets has 3 columns.*2"),
    ("batch", r"x has batch 4 but targets have batch 3"),
    ("x_dtype", r"x has dtype float64.*float32"),
    ("genome_k", r"genome has k=2.*synapses have k=3"),
    ("chain", r"Layer pair 1.*5 inputs.*4"),
])
def test_inner_step_shape_and_dtype_errors(case, match):
    params, synapses = _pure_setup()
    x, t = tf.zeros([4, 5]), tf.zeros([4, 2])
    if case == "x_width":
        x = tf.zeros([4, 7])
    elif case == "targets_width":
        t = tf.zeros([4, 3])
    elif case == "batch":
        t = tf.zeros([3, 2])
    elif case == "x_dtype":
        x = tf.zeros([4, 5], tf.float64)
    elif case == "genome_k":
        params = bk.Genome.random(2, seed=0).params()
    elif case == "chain":
        synapses = (synapses[0], bk.init_synapses(0, (5, 2), 3)[0])
    with pytest.raises(ValueError, match=match):
        bk.inner_step(params, synapses, x, t)


@pytest.mark.parametrize("k", [0, 1])
def test_pure_api_refuses_fewer_than_two_states(k):
    with pytest.raises(ValueError, match=r"k=%d.*>= 2" % k):
        bk.init_synapses(0, (5, 2), k)
    params, _ = _pure_setup()
    w = tf.zeros([6, 2, k])
    v = tf.zeros([2, 5, k])
    with pytest.raises(ValueError, match=r"k=%d.*>= 2" % k):
        bk.predict(params, ((w, v),), tf.zeros([4, 5]))


# -- batch size 1 with activation normalisation ---------------------------------------------------
def test_batch_of_one_with_activation_norm_is_refused():
    model = make_model(config=bk.BlurConfig(activation_norm=True))
    x, y = toy_data(n=8)
    with pytest.raises(ValueError, match="activation_norm.*batch of 1"):
        model.step(x[:1], y[:1])
    with pytest.raises(ValueError, match="activation_norm.*batch_size=1"):
        model.fit(x, y, batch_size=1, verbose=0)
    with pytest.raises(ValueError, match="activation_norm.*batch of 1"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(1, drop_remainder=True),
                  verbose=0)


# -- Keras's own TensorBoard callback -------------------------------------------------------------
def test_keras_tensorboard_callback_writes_events(tmp_path):
    model = make_model()
    x, y = toy_data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x, y),
              callbacks=[keras.callbacks.TensorBoard(str(tmp_path), histogram_freq=1)])
    events = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    assert any("train" in e for e in events) and any("validation" in e for e in events)
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert {"epoch_accuracy", "epoch_feedback_loss"} <= set(acc.Tags()["tensors"])
