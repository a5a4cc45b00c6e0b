"""The stateless seeds of the synapse initialisations of a meta-step.

Seeds come from ``(seed, step, global replica index)``, so a step's result
does not depend on the number of devices, and a resumed run repeats an
uninterrupted one exactly.
"""

import tensorflow as tf

__all__ = ["step_seeds"]


def step_seeds(seed, step, replica_ids):
    """``[len(replica_ids), 2]`` stateless seeds of the synapse initialisations of a step."""
    base = tf.random.experimental.stateless_fold_in(
        tf.constant([int(seed), 0x5E5], tf.int64), tf.cast(step, tf.int64))
    return tf.stack([tf.random.experimental.stateless_fold_in(base, tf.cast(r, tf.int64))
                     for r in replica_ids])
