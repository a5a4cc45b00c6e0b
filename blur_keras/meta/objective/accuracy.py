"""A genome's test accuracy after T inner steps, through the meta-loss.

``genome_accuracy`` trains networks with a genome for T inner steps and measures accuracy on
held-out arrays, averaged over replicas (different initialisations). Plain SGD on the same
arrays is ``blur_keras.evaluation.baselines.sgd_accuracy``.
"""

import tensorflow as tf

from blur_keras.meta.objective.unroll import meta_loss

__all__ = ["genome_accuracy"]


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
