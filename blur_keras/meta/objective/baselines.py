"""Judging a learned rule: a genome vs a plain SGD network on the same data.

``genome_accuracy`` trains networks with a genome for T inner steps and
measures accuracy on held-out arrays; ``sgd_accuracy`` trains the same
network (same sizes, hidden σ, initial weight distribution) with plain SGD on
softmax cross-entropy for the same T batches, for each learning rate of a
sweep.  Both average over replicas (different initialisations).
"""

import numpy as np
import tensorflow as tf

from blur_keras.core import activations
from blur_keras.meta.objective.unroll import meta_loss

__all__ = ["genome_accuracy", "sgd_accuracy", "DEFAULT_SGD_LEARNING_RATES"]

DEFAULT_SGD_LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def genome_accuracy(params, config, sizes, train_x, train_y, test_x, test_y, seed=0,
                    init_scale=1.0, per_layer=False, jit_compile=True):
    """Test accuracy ``[S]`` of each species after ``T`` inner steps.

    ``train_x``: ``[T, R, B, F]``; ``train_y``: ``[T, R, B]``; ``test_x``:
    ``[N, F]``; ``test_y``: ``[N]``; ``params``: genome dict with species axis.
    """
    batch = {"train_x": tf.convert_to_tensor(train_x, tf.float32)[:, None],
             "train_y": tf.convert_to_tensor(train_y, tf.int32)[:, None],
             "query_x": tf.convert_to_tensor(test_x, tf.float32)[None, None],
             "query_y": tf.convert_to_tensor(test_y, tf.int32)[None, None]}
    seeds = tf.stack([tf.constant([int(seed), r], tf.int64) for r in range(train_x.shape[1])])

    def run(p, s, b):
        return meta_loss(p, s, b, config, sizes, init_scale=init_scale, per_layer=per_layer,
                         shared_synapses=True)[1]["accuracy"]

    fn = tf.function(run, jit_compile=jit_compile, autograph=False)
    return fn({n: tf.convert_to_tensor(v) for n, v in params.items()}, seeds, batch).numpy()


def _init_weights(seed, sizes, replicas, scale):
    weights = []
    seeds = tf.random.experimental.stateless_split(tf.constant([int(seed), 17], tf.int64),
                                                   len(sizes) - 1)
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = tf.random.stateless_normal([replicas, n, m], seeds[l]) * (scale / n ** 0.5)
        weights.append(tf.concat([w, tf.zeros([replicas, 1, m])], axis=1))
    return weights


def _forward(weights, x, hidden):
    h = x
    for l, w in enumerate(weights):
        h = tf.matmul(tf.concat([h, tf.ones_like(h[..., :1])], axis=-1), w)
        if l < len(weights) - 1:
            h = hidden(h)
    return h


def sgd_accuracy(sizes, train_x, train_y, test_x, test_y, learning_rates=DEFAULT_SGD_LEARNING_RATES,
                 hidden_activation="relu_tanh", seed=0, init_scale=1.0):
    """Test accuracy after ``T`` SGD steps (batch-mean softmax cross-entropy), per learning rate.

    Returns a dict ``learning_rate -> accuracy`` (mean over replicas).
    """
    hidden = activations.get(hidden_activation)
    train_x = tf.convert_to_tensor(train_x, tf.float32)
    train_y = tf.convert_to_tensor(train_y, tf.int32)
    test_x = tf.convert_to_tensor(test_x, tf.float32)
    test_y = tf.convert_to_tensor(test_y, tf.int32)
    replicas = int(train_x.shape[1])

    @tf.function(autograph=False)
    def run(lr):
        weights = _init_weights(seed, sizes, replicas, init_scale)
        for t in range(int(train_x.shape[0])):
            with tf.GradientTape() as tape:
                tape.watch(weights)
                logits = _forward(weights, train_x[t], hidden)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=train_y[t], logits=logits), axis=-1)
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, weights)
            weights = [w - lr * g for w, g in zip(weights, grads)]
        logits = _forward(weights, test_x[None], hidden)
        hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), test_y[None])
        acc = tf.reduce_mean(tf.cast(hit, tf.float32))
        return tf.where(tf.math.is_finite(tf.reduce_sum(logits)), acc, 0.0)

    return {float(lr): float(run(tf.constant(lr, tf.float32))) for lr in learning_rates}
