"""The evaluation suite on a CNN: the baseline engine's chain is Keras's Conv2D / pooling /
Flatten / Dense under Keras's optimizers, the backprop genome on the chain is its SGD curve,
and ``evaluate_suite`` with ``specs`` writes its table."""

import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import network
from blur_keras.core.layer_specs import Conv2D, Dense, Flatten, Pool2D, Reshape
from blur_keras.evaluation import baselines as bl
from blur_keras.evaluation import stability as st
from blur_keras.evaluation import suite as ev

SIDE, CLASSES, BATCH = 8, 4, 6
# 8x8 -> conv 3 valid (6x6x3) -> max 2 (3x3x3) -> conv 2 same (3x3x4) -> avg 2 same (2x2x4)
CHAIN = (Reshape((SIDE, SIDE, 1)), Conv2D(3, 3), Pool2D("max"), Conv2D(4, 2, padding="same"),
         Pool2D("avg", 2, padding="same"), Flatten(), Dense(CLASSES))


def _keras_cnn(weights, optimizer):
    """The same CNN in Keras (tanh hidden, linear logits) holding the chain's ``weights``."""
    model = keras.Sequential([
        keras.Input((SIDE, SIDE, 1)), keras.layers.Conv2D(3, 3, activation="tanh"),
        keras.layers.MaxPooling2D(2), keras.layers.Conv2D(4, 2, padding="same", activation="tanh"),
        keras.layers.AveragePooling2D(2, padding="same"), keras.layers.Flatten(),
        keras.layers.Dense(CLASSES)])
    layers = [layer for layer in model.layers if layer.get_weights()]
    for layer, w in zip(layers, weights):
        kernel = layer.get_weights()[0]
        layer.set_weights([w[:-1].reshape(kernel.shape), w[-1]])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    return model


def _keras_weights(model):
    return [np.concatenate([k.reshape(-1, k.shape[-1]), b[None]])
            for k, b in (layer.get_weights() for layer in model.layers if layer.get_weights())]


def _start(seed=3):
    """Channel 0 of a BLUR draw of the chain: the baseline's weights ``[rows, m]`` per pair."""
    synapses = network.init_synapses(seed, (SIDE * SIDE,), CHAIN, 2)
    return [w.numpy()[..., 0] for w, _ in synapses]


@pytest.mark.parametrize("method", bl.BASELINES)
def test_the_cnn_baseline_takes_keras_optimizers_steps(method):
    steps, lrs = 4, (0.05, 0.3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, 1, BATCH, SIDE * SIDE)).astype("f4")
    y = rng.integers(0, CLASSES, (steps, 1, BATCH)).astype("i4")
    start = _start()
    weights = [tf.constant(np.broadcast_to(w, (len(lrs), 1, *w.shape))) for w in start]
    slots = bl.optimizer_slots(method, weights)
    for t in range(steps):  # weights [rates, seeds, rows, m]
        weights, slots = bl.train_step(method, weights, slots, x[t], y[t], tf.constant(lrs),
                                       t + 1, tf.tanh, tf.identity, "xent", "mean", CHAIN)
    for i, lr in enumerate(lrs):
        model = _keras_cnn(start, st.BASELINE_OPTIMIZERS[method](lr))
        np.testing.assert_allclose(  # the same function before training
            bl.forward([tf.constant(w) for w in start], x[0, 0], tf.tanh, tf.identity, CHAIN),
            model(x[0, 0].reshape(-1, SIDE, SIDE, 1)), atol=1e-5)
        for t in range(steps):
            model.train_on_batch(x[t, 0].reshape(-1, SIDE, SIDE, 1), y[t, 0])
        theirs = _keras_weights(model)
        for ours, want in zip(weights, theirs):
            np.testing.assert_allclose(ours[i, 0].numpy(), want, rtol=1e-5, atol=1e-5)
        assert np.abs(theirs[0] - start[0]).max() > 1e-3  # the rate moved the kernel


@pytest.fixture(scope="module")
def data():
    return ev.synthetic_data("blobs8x8", SIDE * SIDE, CLASSES, pool=200, val=60, test=80, seed=5)


# the two runs below share their shapes, so the suite reuses the identity's compiled loops
LR, STEPS, SEEDS = 0.1, 10, 2
RULE = ev.Rule("backprop", bk.Genome.backprop(LR).numpy(),
               bk.BlurConfig.backprop("tanh", "linear", "mean", feedback="softmax"))


@pytest.mark.slow
def test_the_backprop_genome_on_the_cnn_is_its_sgd_curve(data):
    idx = ev.batch_indices(len(data.pool_y), STEPS, SEEDS, BATCH, seed=0)
    record = ev.record_steps((STEPS,))
    synapses = ev.chain_synapses(RULE, data, CHAIN, SEEDS, seed=0)
    blur = ev.chain_curves(RULE, CHAIN, synapses, data, idx, record)
    hidden, last = bl.baseline_activations(RULE.config, "xent")
    assert (hidden, last) == ("tanh", "linear")
    sgd = bl.baseline_curves("sgd", [LR], ev.chain_weights(synapses), data, idx, record, hidden,
                             last, "xent", "mean", CHAIN)[:, :, 0]
    assert blur.shape == sgd.shape == (2, STEPS + 1, SEEDS)
    np.testing.assert_allclose(blur, sgd, atol=1.5 / len(data.test_y))  # ≤ 1 example flips
    assert sgd[1, -1].mean() > sgd[1, 0].mean()  # it learned


@pytest.mark.slow
def test_evaluate_suite_on_a_cnn_writes_its_table(data, tmp_path):
    lrs = {"sgd": (LR,), "momentum": (0.01, 0.1), "adam": (1e-3, 1e-2)}
    summary = ev.evaluate_suite(RULE, str(tmp_path), tasks=[data], specs=[CHAIN],
                                horizons=(5, STEPS), seeds=SEEDS, batch_size=BATCH,
                                learning_rates=lrs, record_every=1, dense_until=0,
                                log=lambda *_: None)
    entry = summary["results"][0]
    assert entry["label"] == "blobs8x8 64-8x8x1-conv3x3x3-maxpool2x2-conv4x2x2same-avgpool2x2-" \
                             "flatten-4"
    assert entry["steps"] == list(range(STEPS + 1))
    assert set(entry["methods"]) == {"blur", "sgd", "momentum", "adam"}
    # the rule is exact SGD at the sweep's one rate: the same test accuracy
    np.testing.assert_allclose(entry["methods"]["blur"]["test_mean"],
                               entry["methods"]["sgd"]["test_mean"], atol=1.5 / len(data.test_y))
    table = open(os.path.join(tmp_path, "table.md")).read()
    assert "| BLUR |" in table and "| Adam |" in table and "10 steps" in table


def test_cnn_specs_bind_in_gin_and_bad_chains_are_clear_errors(data, tmp_path):
    with gin.unlock_config():
        gin.parse_config(["c1/Conv2D.filters = 3", "Reshape.target_shape = (8, 8, 1)",
                          "Dense.units = 4"])
    try:
        with gin.config_scope("c1"):
            conv = gin.get_configurable("blur_keras.layer_specs.Conv2D")()
        assert conv == Conv2D(3) and gin.get_configurable("Reshape")() == CHAIN[0]
    finally:
        gin.clear_config()
    run = dict(tasks=[data], horizons=(2,), seeds=1, log=lambda *_: None)
    with pytest.raises(ValueError, match=r"chain ends in \(5,\) neurons; task 'blobs8x8' has 4"):
        ev.evaluate_suite("backprop", str(tmp_path), specs=[CHAIN[:-1] + (Dense(5),)], **run)
    with pytest.raises(ValueError, match="hidden_sizes or specs, not both"):
        ev.evaluate_suite("backprop", str(tmp_path), specs=[CHAIN], hidden_sizes=[(8,)], **run)
    norm = ev.Rule("norm", bk.Genome.backprop(0.1).numpy(),
                   bk.BlurConfig(activation_norm=True), inference="moving")
    with pytest.raises(ValueError, match="batch statistics only"):
        ev.evaluate_suite(norm, str(tmp_path), specs=[CHAIN], **run)


def test_the_cnn_gin_file_binds_the_documented_chain():
    import blur_keras.data  # noqa: F401  (registers Task)

    gin.clear_config()
    try:
        gin.parse_config_file(os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "gin", "eval", "cnn.gin"))
        (chain,) = gin.query_parameter("evaluate_suite.specs")
        specs = tuple(ref.scoped_configurable_fn() for ref in chain)
        assert gin.query_parameter("evaluate_suite.horizons") == (10, 20, 50, 100, 1000)
    finally:
        gin.clear_config()
    assert specs == (Reshape((28, 28, 1)), Conv2D(8, 3), Pool2D("max", 2), Conv2D(16, 3),
                     Pool2D("max", 2), Flatten(), Dense(10))
