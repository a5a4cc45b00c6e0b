"""Samplers: one meta-step's train and query examples of one task, drawn from a seed.

A sampler is built for a task and the shape of a meta-step (``T`` inner steps of ``B`` examples for
each of ``S`` species × ``R`` replicas, and a query batch of ``Bq``). The stream
(:mod:`~blur_keras.data.stream`) calls ``sampler.permutation(seed)`` once per reshuffle block and
``sampler(seed, perm)`` once per meta-step, which returns
``(train_x, train_y, query_x, query_y, train_index, query_index)``.

Sampling (image tasks): the task's training pool (N examples) is put in a random order ``P``
(``tf.random.experimental.index_shuffle``), drawn afresh every ``reshuffle_every`` meta-steps. In
each meta-step every (species, replica) stream takes its own random start ``o`` and random stride
``a`` coprime with N, and reads the examples ``P[(o + a j) mod N]`` for ``j = 0, 1, 2, …``: these
are distinct for ``j < N``, and since ``P`` is a uniformly random order they are a uniformly random
sample without replacement. The first ``Bq`` (``j < Bq``) form the query batch; the train batches
take the next ``T * B``, so query examples never appear in that meta-step's inner steps, and no
train example repeats within the meta-step. If ``T * B`` exceeds the ``N - Bq`` examples left, the
train batches walk those again, each further pass in a new random order (an affine walk of its
own). Cost per example: a few integer operations and two gathers (a fresh ``index_shuffle`` per
stream and meta-step would cost several times more). A task with ``label_noise`` gives the train
batches its noisy labels (:func:`~blur_keras.data.arrays.noisy_labels`, fixed per example) and the
query batch the true ones.

Synthetic tasks draw fresh examples from their generator (``train_index``/``query_index``: -1).
A sampler's ``keep = (s0, s1, r0, r1)`` restricts its output to a block of species and replicas.
"""

import numpy as np
import tensorflow as tf

from blur_keras.data import synthetic as _syn
from blur_keras.data.arrays import noisy_labels, pool

__all__ = ["ImageSampler", "SyntheticSampler", "make_sampler"]

_fold = tf.random.experimental.stateless_fold_in


def _units(n):
    """The strides that walk all of ``0..n-1``: the integers in ``1..n-1`` coprime with ``n``."""
    if n <= 2:
        return np.ones(1, np.int64)
    r = np.arange(1, n, dtype=np.int64)
    return r[np.gcd(r, n) == 1]


def _affine_walk(seed, shape, n, units):
    """Random start ``o`` in ``0..n-1`` and stride ``a`` coprime with ``n``, each of ``shape``:
    ``(o + a * j) mod n`` visits every position once as ``j`` runs over ``0..n-1``."""
    o = tf.random.stateless_uniform(shape, _fold(seed, 0), 0, n, dtype=tf.int64)
    k = tf.random.stateless_uniform(shape, _fold(seed, 1), 0, len(units), dtype=tf.int64)
    return o, tf.gather(tf.constant(units), k)


class ImageSampler:
    """Samples meta-steps of an image task (module docstring: *Sampling*)."""

    def __init__(self, task, T, S, R, B, Bq):
        x_np, y_np = pool(task, task.split, keep_uint8=True)
        self.n = n = len(y_np)
        if Bq >= n:
            raise ValueError(
                f"{task.describe()}: the query batch ({Bq}) must be smaller than the training "
                f"pool ({n} examples)")
        self.T, self.S, self.R, self.B, self.Bq = T, S, R, B, Bq
        self.keep = (0, S, 0, R)  # species and replica ranges drawn (a block: see make_task_stream)
        self.rest = n - Bq
        self.passes = -(-T * B // self.rest)
        self.units_n, self.units_rest = _units(n), _units(self.rest)
        with tf.device("/CPU:0"):
            self.x = tf.constant(x_np)
            self.y = tf.constant(y_np)  # the query's labels
            self.train_y = tf.constant(noisy_labels(task, y_np))
        self.raw = x_np.dtype == np.uint8

    def permutation(self, seed):
        """A random permutation of the pool (``index_shuffle``: O(n), stateless)."""
        return tf.raw_ops.RandomIndexShuffle(
            index=tf.range(self.n, dtype=tf.int64), seed=_syn.stream_seeds(seed, []),
            max_index=tf.constant(self.n - 1, tf.int64))

    def _features(self, idx):
        x = tf.gather(self.x, idx)
        return tf.cast(x, tf.float32) / 255.0 if self.raw else x

    def _train_positions(self, seed, jj):
        """Walk positions ``j`` of the train examples: past the query, and again in new orders."""
        S, R, Bq, rest = self.S, self.R, self.Bq, self.rest
        if self.passes == 1:
            return Bq + jj
        # more train examples than the rest of the pool: walk it again, in a new order each pass
        s0, s1, r0, r1 = self.keep
        o2, a2 = _affine_walk(_fold(seed, 1), [self.passes * S * R], rest, self.units_rest)
        s_idx = tf.reshape(tf.range(s0, s1, dtype=tf.int64), [1, s1 - s0, 1, 1])
        r_idx = tf.reshape(tf.range(r0, r1, dtype=tf.int64), [1, 1, r1 - r0, 1])
        which = tf.broadcast_to(((jj // rest) * S + s_idx) * R + r_idx,
                                [self.T, s1 - s0, r1 - r0, self.B])
        return Bq + (tf.gather(o2, which) + tf.gather(a2, which) * (jj % rest)) % rest

    def __call__(self, seed, perm):
        T, S, R, B, Bq, n = self.T, self.S, self.R, self.B, self.Bq, self.n
        s0, s1, r0, r1 = self.keep
        o, a = _affine_walk(_fold(seed, 0), [1, S, R, 1], n, self.units_n)
        o, a = o[:, s0:s1, r0:r1], a[:, s0:s1, r0:r1]  # drawn for all, kept for the block
        jj = tf.reshape(tf.range(T * B, dtype=tf.int64), [T, 1, 1, B])
        j = self._train_positions(seed, jj)
        tidx = tf.gather(perm, (o + a * j) % n)  # [T, S, R, B]
        jq = tf.reshape(tf.range(Bq, dtype=tf.int64), [1, 1, Bq])
        qidx = tf.gather(perm, (o[0] + a[0] * jq) % n)  # [S, R, Bq]
        return (self._features(tidx), tf.gather(self.train_y, tidx),
                self._features(qidx), tf.gather(self.y, qidx), tidx, qidx)


class SyntheticSampler:
    """Samples meta-steps of a synthetic task from its generator."""

    def __init__(self, task, T, S, R, B, Bq):
        self.task, self.shapes = task, ([T, S, R, B], [S, R, Bq])
        self.keep = (0, S, 0, R)

    def permutation(self, seed):
        return tf.zeros([0], tf.int64)

    def __call__(self, seed, perm):
        (tshape, qshape) = self.shapes
        tx, ty, qx, qy = self.task.generator.sample(seed, tshape, qshape)
        s0, s1, r0, r1 = self.keep
        tx, ty = tx[:, s0:s1, r0:r1], ty[:, s0:s1, r0:r1]
        qx, qy = qx[s0:s1, r0:r1], qy[s0:s1, r0:r1]
        no_index = tf.constant(-1, tf.int64)
        return (tx, tf.cast(ty, tf.int32), qx, tf.cast(qy, tf.int32),
                tf.fill(tf.shape(ty), no_index), tf.fill(tf.shape(qy), no_index))


def make_sampler(task, T, S, R, B, Bq):
    """The sampler of ``task`` for meta-steps of ``T`` × ``[S, R, B]`` train and ``[S, R, Bq]``
    query examples."""
    cls = SyntheticSampler if task.is_synthetic else ImageSampler
    return cls(task, T, S, R, B, Bq)
