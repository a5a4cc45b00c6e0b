"""The synthetic tasks against NumPy references written from their documented definitions."""

import math

import numpy as np
import pytest
import tensorflow as tf

from blur_keras.data import SYNTHETIC_2D, BooleanFunction, Task, make_eval_arrays, make_task_stream

# ------------------------------------------------------------------------- NumPy references (2-D)


def _arc_dist(u, v, cu, cv, r, upper):
    du, dv = u - cu, v - cv
    to_circle = np.abs(np.hypot(du, dv) - r)
    to_end = np.minimum(np.hypot(du - r, dv), np.hypot(du + r, dv))
    side = dv >= 0 if upper else dv <= 0
    return np.where(side, to_circle, to_end)


def _blob_ref(u, v):
    theta = np.pi / 2 + 2 * np.pi * np.arange(5) / 5
    cx, cy = 0.6 * np.cos(theta), 0.6 * np.sin(theta)
    return np.argmin((u[:, None] - cx) ** 2 + (v[:, None] - cy) ** 2, axis=1)


W_CROSS = 1 - 1 / math.sqrt(2)
REFERENCE = {
    "and": lambda u, v: (u > 0) & (v > 0),
    "or": lambda u, v: (u > 0) | (v > 0),
    "xor": lambda u, v: (u > 0) ^ (v > 0),
    "nand": lambda u, v: ~((u > 0) & (v > 0)),
    "two_moons": lambda u, v: _arc_dist(u, v, 0.25, 0.15, 0.6, False) < _arc_dist(u, v, -0.25, -0.15, 0.6, True),
    "circle": lambda u, v: u ** 2 + v ** 2 < 2 / np.pi,
    "small_circle": lambda u, v: u ** 2 + v ** 2 < 0.4 ** 2,
    "pie_slice": lambda u, v: v > np.abs(u),
    "blobs5": _blob_ref,
    "cross": lambda u, v: (np.abs(u) < W_CROSS) | (np.abs(v) < W_CROSS),
    "triangle": lambda u, v: (v > -0.6) & (v < 0.8 - 1.75 * np.abs(u)),
}

# Hand-checked points: (u, v) -> label.
HAND = {
    "and": [((0.5, 0.5), 1), ((-0.5, 0.5), 0), ((0.5, -0.5), 0), ((-0.5, -0.5), 0), ((0.0, 0.5), 0)],
    "or": [((0.5, 0.5), 1), ((-0.5, 0.5), 1), ((0.5, -0.5), 1), ((-0.5, -0.5), 0)],
    "xor": [((0.5, 0.5), 0), ((-0.5, 0.5), 1), ((0.5, -0.5), 1), ((-0.5, -0.5), 0)],
    "nand": [((0.5, 0.5), 0), ((-0.5, 0.5), 1), ((0.5, -0.5), 1), ((-0.5, -0.5), 1)],
    "two_moons": [((-0.25, 0.45), 0), ((0.25, -0.45), 1), ((-0.85, -0.15), 0), ((0.85, 0.15), 1)],
    "circle": [((0.0, 0.0), 1), ((0.7, 0.0), 1), ((0.9, 0.0), 0), ((0.6, 0.6), 0)],
    "small_circle": [((0.0, 0.0), 1), ((0.3, 0.0), 1), ((0.5, 0.0), 0), ((0.3, 0.3), 0)],
    "pie_slice": [((0.0, 0.5), 1), ((0.3, 0.5), 1), ((0.5, 0.2), 0), ((0.0, -0.5), 0)],
    "blobs5": [((0.0, 0.6), 0), ((-0.57, 0.19), 1), ((-0.35, -0.49), 2), ((0.35, -0.49), 3), ((0.57, 0.19), 4)],
    "cross": [((0.0, 0.9), 1), ((0.9, 0.1), 1), ((0.5, 0.5), 0), ((-0.8, -0.8), 0)],
    "triangle": [((0.0, 0.0), 1), ((0.0, 0.9), 0), ((0.7, -0.5), 1), ((0.75, 0.0), 0), ((0.0, -0.7), 0)],
}


def _points():
    g = np.linspace(-1, 1, 40, dtype=np.float32)  # no exact 0: ties on symmetry lines are measure zero
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    rand = np.random.default_rng(0).uniform(-1, 1, (2000, 2)).astype(np.float32)
    return np.concatenate([grid, rand])


def test_every_2d_task_has_a_reference_and_hand_points():
    assert set(SYNTHETIC_2D) == set(REFERENCE) == set(HAND)
    assert {"and", "or", "xor", "nand", "two_moons", "circle", "small_circle", "pie_slice", "blobs5", "cross",
            "triangle"} <= set(SYNTHETIC_2D)


@pytest.mark.parametrize("name", sorted(SYNTHETIC_2D))
def test_2d_labels_match_numpy_reference(name):
    task = SYNTHETIC_2D[name]
    pts = _points()
    labels = tf.function(task.labels)(tf.constant(pts)).numpy()  # in-graph
    ref = REFERENCE[name](pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)).astype(np.int64)
    # float32 vs float64 can only disagree within round-off of a class boundary
    mismatch = np.flatnonzero(labels != ref)
    assert len(mismatch) <= 2, (name, pts[mismatch])
    hand_pts = np.array([p for p, _ in HAND[name]], np.float32)
    hand_labels = np.array([lab for _, lab in HAND[name]])
    np.testing.assert_array_equal(task.labels(hand_pts).numpy(), hand_labels, err_msg=name)
    assert set(np.unique(labels)) == set(range(task.num_classes)), name


@pytest.mark.parametrize("name,fraction", [("circle", 0.5), ("cross", 0.5), ("small_circle", math.pi * 0.16 / 4),
                                           ("pie_slice", 0.25), ("and", 0.25), ("triangle", 0.28)])
def test_2d_class_areas(name, fraction):
    g = (np.arange(400, dtype=np.float32) + 0.5) / 200 - 1
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    share = SYNTHETIC_2D[name].labels(grid).numpy().mean()
    assert abs(share - fraction) < 0.01, (name, share)


def test_2d_sampling_uniform_in_square_and_labelled():
    task = SYNTHETIC_2D["two_moons"]
    tx, ty, qx, qy = task.sample(tf.constant([3, 4], tf.int64), [5, 2, 3, 64], [2, 3, 32])
    assert tx.shape == (5, 2, 3, 64, 2) and ty.shape == (5, 2, 3, 64) and qx.shape == (2, 3, 32, 2)
    for x, y in ((tx, ty), (qx, qy)):
        x = x.numpy().reshape(-1, 2)
        assert x.min() >= -1 and x.max() <= 1
        np.testing.assert_array_equal(y.numpy().reshape(-1), REFERENCE["two_moons"](x[:, 0], x[:, 1]).astype(int))
    x = tx.numpy().reshape(-1, 2)
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1 / math.sqrt(3)) < 0.02
    again = task.sample(tf.constant([3, 4], tf.int64), [5, 2, 3, 64], [2, 3, 32])
    np.testing.assert_array_equal(again[0].numpy(), tx.numpy())


# ------------------------------------------------------------------------------------- Boolean


def _bool_ref(function, n, codes):
    bits = (codes[:, None] >> np.arange(n)) & 1
    count = bits.sum(1)
    return {"parity": count % 2, "majority": (2 * count > n).astype(int), "and": (count == n).astype(int),
            "or": (count > 0).astype(int)}[function]


@pytest.mark.parametrize("function", ["parity", "majority", "and", "or"])
def test_boolean_functions_match_numpy(function):
    n = 5
    f = BooleanFunction(n_bits=n, function=function)
    codes = np.arange(2 ** n)
    np.testing.assert_array_equal(f.truth_table(), _bool_ref(function, n, codes))
    x = f.features(codes).numpy()
    np.testing.assert_array_equal(x, 2 * ((codes[:, None] >> np.arange(n)) & 1) - 1)
    ex, ey = make_eval_arrays(Task(dataset=f"bool_{function}", n_bits=n))
    np.testing.assert_array_equal(ex, x)
    np.testing.assert_array_equal(ey, _bool_ref(function, n, codes))


def test_boolean_random_table_is_seeded():
    a = BooleanFunction(6, "random", function_seed=1).truth_table()
    b = BooleanFunction(6, "random", function_seed=1).truth_table()
    c = BooleanFunction(6, "random", function_seed=2).truth_table()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and set(np.unique(a)) == {0, 1}
    np.testing.assert_array_equal(a, np.random.default_rng(1).integers(0, 2, 64))


@pytest.mark.parametrize("n_bits", [3, 10, 40])
def test_boolean_stream_query_inputs_never_in_train(n_bits):
    task = Task(dataset="bool_parity", n_bits=n_bits)
    assert task.num_features == n_bits and task.num_classes == 2
    ds = make_task_stream(task, species=2, replicas=2, batch_size=32, unroll_steps=4, seed=5)
    for e in ds.take(2):
        tx, ty, qx, qy = (e[k].numpy() for k in ("train_x", "train_y", "query_x", "query_y"))
        assert tx.shape == (4, 2, 2, 32, n_bits) and set(np.unique(tx)) <= {-1.0, 1.0}
        weights = 2 ** np.arange(n_bits, dtype=np.int64)
        tcodes = ((tx > 0) * weights).sum(-1)
        qcodes = ((qx > 0) * weights).sum(-1)
        np.testing.assert_array_equal(ty, (np.sum(tx > 0, -1) % 2))
        np.testing.assert_array_equal(qy, (np.sum(qx > 0, -1) % 2))
        for s in range(2):
            for r in range(2):
                assert not set(tcodes[:, s, r].ravel()) & set(qcodes[s, r].ravel())


def test_boolean_validation():
    with pytest.raises(ValueError, match="Unknown Boolean function 'nor'"):
        BooleanFunction(3, "nor")
    with pytest.raises(ValueError, match="n_bits"):
        BooleanFunction(0)
