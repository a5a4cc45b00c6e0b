"""The baseline engine (blur_keras.evaluation.baselines): its updates are Keras's optimizers'
(the ones the fit check builds) and ``sgd_accuracy`` is Keras's SGD from the same weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from blur_keras.evaluation import baselines as bl
from blur_keras.evaluation import stability as st

SIZES = (5, 4, 3)


def _batches(steps, replicas, batch, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps, replicas, batch, SIZES[0])).astype("f4")
    y = rng.integers(0, SIZES[-1], (steps, replicas, batch)).astype("i4")
    return x, y


def _keras_mlp(weights, optimizer):
    """A tanh MLP with linear logits holding ``weights`` (``[n+1, m]`` per layer)."""
    model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(SIZES[1], "tanh"),
                              keras.layers.Dense(SIZES[2])])
    for layer, w in zip(model.layers, weights):
        layer.set_weights([w[:-1], w[-1]])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    return model


@pytest.mark.parametrize("method", bl.BASELINES)
def test_a_sweep_takes_the_steps_of_the_fit_checks_keras_optimizers(method):
    steps, lrs = 4, (0.05, 0.3)
    x, y = _batches(steps, 1, 6, seed=0)
    start = [w.numpy()[0] for w in bl.init_weights(3, SIZES, 1, 1.0)]
    weights = [tf.constant(np.broadcast_to(w, (len(lrs), 1, *w.shape))) for w in start]
    slots = bl.optimizer_slots(method, weights)
    for t in range(steps):  # weights [rates, seeds, n+1, m]
        weights, slots = bl.train_step(method, weights, slots, x[t], y[t], tf.constant(lrs),
                                       t + 1, tf.tanh, tf.identity, "xent", "mean")
    for i, lr in enumerate(lrs):
        model = _keras_mlp(start, st.BASELINE_OPTIMIZERS[method](lr))
        for t in range(steps):
            model.train_on_batch(x[t, 0], y[t, 0])
        keras_weights = [np.concatenate([k, b[None]]) for k, b in
                         zip(model.get_weights()[::2], model.get_weights()[1::2])]
        for ours, theirs in zip(weights, keras_weights):
            np.testing.assert_allclose(ours[i, 0].numpy(), theirs, rtol=1e-5, atol=1e-6)
        # the rate moved the weights (a wrong update would not match)
        assert np.abs(keras_weights[0] - start[0]).max() > 1e-3


def test_sgd_accuracy_is_keras_sgd_from_the_same_weights():
    replicas, seed = 2, 4
    x, y = _batches(5, replicas, 8, seed=1)
    rng = np.random.default_rng(2)
    test_x = rng.normal(size=(200, SIZES[0])).astype("f4")
    test_y = rng.integers(0, SIZES[-1], 200).astype("i4")
    lrs = (0.05, 0.5, 3.0)
    acc = bl.sgd_accuracy(SIZES, x, y, test_x, test_y, learning_rates=lrs + (float("inf"),),
                          hidden_activation="tanh", seed=seed)
    assert list(acc) == [*lrs, float("inf")]
    start = bl.init_weights(seed, SIZES, replicas, 1.0)
    for lr in lrs:
        hits = []
        for r in range(replicas):
            model = _keras_mlp([w.numpy()[r] for w in start], keras.optimizers.SGD(lr))
            for t in range(len(x)):
                model.train_on_batch(x[t, r], y[t, r])
            hits.append(np.argmax(model.predict(test_x, verbose=0), -1) == test_y)
        assert acc[lr] == pytest.approx(np.mean(hits), abs=1.5 / (replicas * len(test_y)))
    assert len({acc[lr] for lr in lrs}) == len(lrs)  # the rates lead to different networks
    assert acc[float("inf")] == 0.0  # non-finite logits: the rate scores nothing


def test_unknown_baseline_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown baseline 'rmsprop'; expected one of"):
        bl.check_baseline("rmsprop")
