"""docs/spec.md §4: with ``feedback="softmax"`` the k=2 backprop genome is an exact SGD step on
the softmax cross-entropy (Keras ``CategoricalCrossentropy(from_logits=True)`` under ``SGD``)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core.feedback import apply_feedback, pm1_targets

try:
    from test_backprop import SIZES, BATCH, dense_layers, keras_network, stacked, synapses_from
except ImportError:  # run from the repository root
    from tests.test_backprop import (SIZES, BATCH, dense_layers, keras_network, stacked,
                                     synapses_from)

LR = 0.3


def _batches(seed, steps):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, SIZES[0])).astype("f4"),
             rng.integers(0, SIZES[-1], BATCH)) for _ in range(steps)]


def test_softmax_feedback_is_the_cross_entropy_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype("f4")
    labels = rng.integers(0, 4, 5)
    a_last = tf.constant(np.stack([logits, np.full_like(logits, 2.0)])[None])  # [1, k, B, n]
    state1 = apply_feedback(a_last, pm1_targets(labels, 4), "softmax")[0, 1]
    with tf.GradientTape() as tape:
        z = tf.constant(logits)
        tape.watch(z)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, z))
    np.testing.assert_allclose(state1, 2.0 * tape.gradient(loss, z), atol=1e-6)


@pytest.mark.parametrize("hidden,reduction", [("tanh", "mean"), ("relu", "sum")])
def test_inner_step_is_sgd_on_cross_entropy(hidden, reduction):
    model = keras_network(hidden, "linear", seed=4)
    keras_reduction = "sum" if reduction == "sum" else "sum_over_batch_size"
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=keras_reduction)
    model.compile(optimizer=keras.optimizers.SGD(LR if reduction == "mean" else LR / BATCH),
                  loss=loss)
    config = bk.BlurConfig.backprop(hidden, "linear", reduction, feedback="softmax")
    params = bk.Genome.backprop(LR if reduction == "mean" else LR / BATCH).params()
    step = tf.function(lambda s, x, y: bk.inner_step(params, s, x, y, config)[0],
                       jit_compile=True)
    synapses = synapses_from(model)
    for t, (x, labels) in enumerate(_batches(seed=8, steps=15)):
        model.train_on_batch(x, np.eye(SIZES[-1], dtype="f4")[labels])
        synapses = step(synapses, x, pm1_targets(labels, SIZES[-1]))
        for d, (w, _) in zip(dense_layers(model), synapses):
            np.testing.assert_allclose(w.numpy()[..., 0], stacked(d), atol=1e-5, rtol=1e-5,
                                       err_msg=f"step {t}, layer {d.name}")


def test_blur_model_reports_the_cross_entropy_it_follows():
    """Under softmax feedback, evaluate's feedback_loss is the cross-entropy of the logits."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(64, 12)).astype("f4"), rng.integers(0, 4, 64)
    net = keras.Sequential([keras.Input((12,)), bk.BlurDense(8, k=2), bk.BlurDense(4, k=2)])
    model = bk.BlurModel(net, bk.Genome.backprop(0.1), bk.BlurConfig.backprop(
        "tanh", "linear", "mean", feedback="softmax"))
    model.compile(metrics=[], jit_compile=False)
    got = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)["feedback_loss"]
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    want = xent(y, model.predict(x, verbose=0))
    np.testing.assert_allclose(got, float(want), rtol=1e-5)
