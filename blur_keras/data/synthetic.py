"""Synthetic tasks generated in-graph (no files): the 2-D tasks of docs/spec.md §5 and n-bit
Boolean functions.

2-D tasks: inputs ``x = (u, v)`` uniform in ``[-1, 1]²``; the label is a fixed function of ``x``:

==================  =======  =====================================================================
name                classes  label
==================  =======  =====================================================================
``and``             2        1 iff ``u > 0`` and ``v > 0``
``or``              2        1 iff ``u > 0`` or ``v > 0``
``xor``             2        1 iff exactly one of ``u > 0``, ``v > 0``
``nand``            2        1 iff not (``u > 0`` and ``v > 0``)
``two_moons``       2        1 iff ``x`` is nearer the lower moon's arc than the upper one's. Upper
                             arc: centre ``(-0.25, -0.15)``, radius 0.6, the half with
                             ``v >= -0.15``; lower arc: centre ``(0.25, 0.15)``, radius 0.6, the
                             half with ``v <= 0.15``. Distance to a half-circle arc:
                             ``| |x - c| - r |`` on the arc's side of the centre, else the distance
                             to the nearer end
                             point ``c ± (r, 0)``.
``circle``          2        1 iff ``u² + v² < 2/π`` (radius ≈ 0.798: half the square's area)
``small_circle``    2        1 iff ``u² + v² < 0.16`` (radius 0.4)
``pie_slice``       2        1 iff ``v > |u|`` (the 90° wedge around the positive v axis)
``blobs5``          5        index of the nearest of 5 centres ``0.6 (cos θ_k, sin θ_k)``,
                             ``θ_k = π/2 + 2πk/5`` (the Voronoi cells of 5 blob centres)
``cross``           2        1 iff ``|u| < w`` or ``|v| < w``, ``w = 1 - 1/√2`` (half the area)
``triangle``        2        1 iff ``v > -0.6`` and ``v < 0.8 - 1.75 |u|`` (vertices
                             ``(0, 0.8)``, ``(±0.8, -0.6)``)
==================  =======  =====================================================================

docs/spec.md §5: the paper meta-trains on and, xor, two-moons and holds out the rest.

n-bit Boolean functions (:class:`BooleanFunction`): an input is a code ``c`` in ``0..2ⁿ-1``; its
features are ``x_i = +1`` if bit ``i`` of ``c`` is set, else ``-1``. Functions: ``parity`` (1 iff an
odd number of bits is set), ``majority`` (1 iff more than ``n/2`` bits are set), ``and`` (all set),
``or`` (any set), ``random`` (a truth table drawn from ``numpy.random.default_rng(function_seed)``,
``n <= 20``).

Train/query disjointness within a meta-step: 2-D inputs are continuous, so a train and a query point
coincide with probability zero. Boolean inputs are finite, so each meta-step and each
(species, replica) stream draws a random partition of the ``2ⁿ`` codes: a ``query_fraction`` of them
(at least one) is reserved for the query batch, the train batches draw from the rest (with
replacement), so query inputs are never seen during the inner steps.
"""

import dataclasses
import math
from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "BooleanFunction",
    "SYNTHETIC_2D",
    "Synthetic2D",
    "boolean_function_names",
    "synthetic_names",
]



# ------------------------------------------------------------------------------ 2-D label functions

CIRCLE_R2 = 2.0 / math.pi
SMALL_CIRCLE_R2 = 0.16
CROSS_W = 1.0 - 1.0 / math.sqrt(2.0)
MOON_RADIUS = 0.6
MOON_UPPER_CENTRE = (-0.25, -0.15)
MOON_LOWER_CENTRE = (0.25, 0.15)
BLOB_RADIUS = 0.6


def blob_centres():
    k = np.arange(5)
    theta = np.pi / 2 + 2 * np.pi * k / 5
    return (BLOB_RADIUS * np.stack([np.cos(theta), np.sin(theta)], axis=-1)).astype(np.float32)


def _i32(b):
    return tf.cast(b, tf.int32)


def _and(u, v):
    return _i32((u > 0) & (v > 0))


def _or(u, v):
    return _i32((u > 0) | (v > 0))


def _xor(u, v):
    return _i32((u > 0) != (v > 0))


def _nand(u, v):
    return 1 - _and(u, v)


def _arc_distance(u, v, centre, radius, upper):
    cu, cv = centre
    du, dv = u - cu, v - cv
    to_circle = tf.abs(tf.sqrt(du * du + dv * dv) - radius)
    to_end = tf.minimum(tf.sqrt((du - radius) ** 2 + dv * dv),
                        tf.sqrt((du + radius) ** 2 + dv * dv))
    on_side = dv >= 0 if upper else dv <= 0
    return tf.where(on_side, to_circle, to_end)


def _two_moons(u, v):
    upper = _arc_distance(u, v, MOON_UPPER_CENTRE, MOON_RADIUS, upper=True)
    lower = _arc_distance(u, v, MOON_LOWER_CENTRE, MOON_RADIUS, upper=False)
    return _i32(lower < upper)


def _circle(u, v):
    return _i32(u * u + v * v < CIRCLE_R2)


def _small_circle(u, v):
    return _i32(u * u + v * v < SMALL_CIRCLE_R2)


def _pie_slice(u, v):
    return _i32(v > tf.abs(u))


def _blobs5(u, v):
    c = tf.constant(blob_centres())
    d2 = (u[..., None] - c[:, 0]) ** 2 + (v[..., None] - c[:, 1]) ** 2
    return tf.argmin(d2, axis=-1, output_type=tf.int32)


def _cross(u, v):
    return _i32((tf.abs(u) < CROSS_W) | (tf.abs(v) < CROSS_W))


def _triangle(u, v):
    return _i32((v > -0.6) & (v < 0.8 - 1.75 * tf.abs(u)))


@dataclasses.dataclass(frozen=True)
class Synthetic2D:
    """A 2-D task: inputs uniform in ``[-1, 1]²``, labels from a fixed function (module
    docstring)."""

    name: str
    num_classes: int
    label_fn: Callable = dataclasses.field(compare=False, repr=False)

    num_features = 2

    def labels(self, x):
        """int32 labels of float ``x [..., 2]`` (in-graph)."""
        x = tf.convert_to_tensor(x, tf.float32)
        return self.label_fn(x[..., 0], x[..., 1])

    def sample(self, seed, train_shape, query_shape):
        """``(train_x [*train_shape, 2], train_y, query_x [*query_shape, 2], query_y)``,
        stateless."""
        seed = tf.convert_to_tensor(seed)
        s_train = tf.random.experimental.stateless_fold_in(seed, 0)
        s_query = tf.random.experimental.stateless_fold_in(seed, 1)
        tx = tf.random.stateless_uniform(list(train_shape) + [2], s_train, -1.0, 1.0)
        qx = tf.random.stateless_uniform(list(query_shape) + [2], s_query, -1.0, 1.0)
        return tx, self.labels(tx), qx, self.labels(qx)

    def eval_arrays(self, num_examples=10000, seed=1234):
        """A fixed evaluation set: ``num_examples`` uniform points (their own seed stream)."""
        x = tf.random.stateless_uniform([num_examples, 2], [seed, 0x5E7], -1.0, 1.0)
        return x.numpy(), self.labels(x).numpy().astype(np.int64)


SYNTHETIC_2D = {
    t.name: t
    for t in (
        Synthetic2D("and", 2, _and),
        Synthetic2D("or", 2, _or),
        Synthetic2D("xor", 2, _xor),
        Synthetic2D("nand", 2, _nand),
        Synthetic2D("two_moons", 2, _two_moons),
        Synthetic2D("circle", 2, _circle),
        Synthetic2D("small_circle", 2, _small_circle),
        Synthetic2D("pie_slice", 2, _pie_slice),
        Synthetic2D("blobs5", 5, _blobs5),
        Synthetic2D("cross", 2, _cross),
        Synthetic2D("triangle", 2, _triangle),
    )
}


# ---------------------------------------------------------------------------- Boolean functions

BOOLEAN_FUNCTIONS = ("parity", "majority", "and", "or", "random")


def boolean_function_names():
    return [f"bool_{f}" for f in BOOLEAN_FUNCTIONS]


def synthetic_names():
    return list(SYNTHETIC_2D) + boolean_function_names()


def _index_shuffle(index, seeds, max_index):
    """Position of ``index`` in the random permutation of ``0..max_index`` named by
    ``seeds [..., 3]`` (one permutation per seed row; ``seeds`` broadcasts against ``index``)."""
    index = tf.cast(index, tf.int64)
    seeds = tf.broadcast_to(tf.cast(seeds, tf.int64), tf.concat([tf.shape(index), [3]], 0))
    out = tf.raw_ops.RandomIndexShuffle(
        index=tf.reshape(index, [-1]), seed=tf.reshape(seeds, [-1, 3]),
        max_index=tf.cast(max_index, tf.int64))
    return tf.reshape(out, tf.shape(index))


def stream_seeds(seed, shape):
    """int64 ``[*shape, 3]`` seeds for ``RandomIndexShuffle``, one per stream."""
    return tf.random.stateless_uniform(
        list(shape) + [3], seed, minval=None, maxval=None, dtype=tf.int64)


@dataclasses.dataclass(frozen=True)
class BooleanFunction:
    """An n-bit Boolean function task (module docstring): features ``±1``, 2 classes."""

    n_bits: int = 4
    function: str = "parity"
    function_seed: int = 0
    query_fraction: float = 0.25

    num_classes = 2

    def __post_init__(self):
        if self.function not in BOOLEAN_FUNCTIONS:
            raise ValueError(f"Unknown Boolean function {self.function!r}; "
                             f"known: {', '.join(BOOLEAN_FUNCTIONS)}")
        if not 1 <= self.n_bits <= 62:
            raise ValueError(f"n_bits must be in 1..62, got {self.n_bits}")
        if self.function == "random" and self.n_bits > 20:
            raise ValueError("a random truth table needs n_bits <= 20")
        if not 0.0 < self.query_fraction < 1.0:
            raise ValueError(f"query_fraction must be in (0, 1), got {self.query_fraction}")

    @property
    def name(self):
        return f"bool_{self.function}"

    @property
    def num_features(self):
        return self.n_bits

    @property
    def num_codes(self):
        return 2 ** self.n_bits

    @property
    def num_query_codes(self):
        return int(min(max(1, round(self.query_fraction * self.num_codes)), self.num_codes - 1))

    def truth_table(self):
        """Labels of all codes (n_bits <= 20), as int64 ``[2ⁿ]``."""
        if self.n_bits > 20:
            raise ValueError("truth_table needs n_bits <= 20")
        if self.function == "random":
            rng = np.random.default_rng(self.function_seed)
            return rng.integers(0, 2, self.num_codes).astype(np.int64)
        return self.labels(np.arange(self.num_codes, dtype=np.int64)).numpy().astype(np.int64)

    def _bits(self, codes):
        """int64 bits ``[..., n_bits]`` of int64 codes (bit i at position i)."""
        shifts = tf.range(self.n_bits, dtype=tf.int64)
        return tf.bitwise.bitwise_and(tf.bitwise.right_shift(codes[..., None], shifts), 1)

    def features(self, codes):
        """±1 float32 features ``[..., n_bits]`` of int codes (bit i → feature i)."""
        codes = tf.cast(codes, tf.int64)
        bits = self._bits(codes)
        return tf.cast(2 * bits - 1, tf.float32)

    def labels(self, codes):
        """int32 labels of int codes (in-graph)."""
        codes = tf.cast(codes, tf.int64)
        if self.function == "random":
            return tf.gather(tf.constant(self.truth_table().astype(np.int32)), codes)
        bits = self._bits(codes)
        count = tf.reduce_sum(bits, axis=-1)
        if self.function == "parity":
            out = count % 2
        elif self.function == "majority":
            out = tf.cast(2 * count > self.n_bits, tf.int64)
        elif self.function == "and":
            out = tf.cast(count == self.n_bits, tf.int64)
        else:  # or
            out = tf.cast(count > 0, tf.int64)
        return tf.cast(out, tf.int32)

    def sample(self, seed, train_shape, query_shape):
        """Disjoint train/query inputs per stream (all axes but the batch axis name a stream).

        ``train_shape = [T, S, R, B]``, ``query_shape = [S, R, Bq]``.
        """
        seed = tf.convert_to_tensor(seed)
        streams = list(query_shape[:-1])
        perm_seeds = stream_seeds(tf.random.experimental.stateless_fold_in(seed, 0), streams)
        n, q = self.num_codes, self.num_query_codes
        tpos = q + tf.random.stateless_uniform(
            list(train_shape), tf.random.experimental.stateless_fold_in(seed, 1), 0, n - q,
            dtype=tf.int64)
        qpos = tf.random.stateless_uniform(
            list(query_shape), tf.random.experimental.stateless_fold_in(seed, 2), 0, q,
            dtype=tf.int64)
        tcodes = _index_shuffle(tpos, perm_seeds[None, ..., None, :], n - 1)
        qcodes = _index_shuffle(qpos, perm_seeds[..., None, :], n - 1)
        return (self.features(tcodes), self.labels(tcodes),
                self.features(qcodes), self.labels(qcodes))

    def eval_arrays(self, num_examples=None, seed=1234):
        """All ``2ⁿ`` inputs when ``n_bits <= 16`` and ``num_examples`` is None, else a seeded
        sample."""
        if num_examples is None and self.n_bits <= 16:
            codes = tf.range(self.num_codes, dtype=tf.int64)
        else:
            codes = tf.random.stateless_uniform(
                [num_examples or 10000], [seed, 0xB001], 0, self.num_codes, dtype=tf.int64)
        return self.features(codes).numpy(), self.labels(codes).numpy().astype(np.int64)
