"""The "is it a gradient?" analysis."""

import numpy as np
import pytest

import blur_keras as bk
from blur_keras.evaluation.analysis import (free_coordinates, from_free, plot_jacobian, relative_asymmetry,
                                 update_jacobian)

SIZES = (4, 5, 3)


def batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], n).astype(np.int32)


def test_backprop_genome_update_has_a_symmetric_jacobian():
    config = bk.BlurConfig.backprop("tanh", "linear")
    j = update_jacobian(bk.Genome.backprop(0.1).numpy(), config, SIZES, *batch())
    assert j.shape == (5 * 5 + 6 * 3,) * 2  # channel 0 of W only (V tied, channels tied)
    assert np.linalg.norm(j) > 1e-3
    assert relative_asymmetry(j) < 1e-5


def test_random_genome_update_is_not_a_gradient(tmp_path):
    config = bk.BlurConfig()
    j = update_jacobian(bk.Genome.random(2, seed=3).numpy(), config, SIZES, *batch())
    assert j.shape == (5 * 5 * 2 + 5 * 4 * 2 + 6 * 3 * 2 + 3 * 5 * 2,) * 2  # all of W and V
    assert relative_asymmetry(j) > 1e-2
    path = plot_jacobian(j, str(tmp_path / "j.png"), "random genome")
    assert path.endswith(".png")


def test_free_coordinates_round_trip():
    import tensorflow as tf

    for config in (bk.BlurConfig(), bk.BlurConfig.backprop()):
        syn = bk.init_synapses(tf.constant([1, 2], tf.int64), SIZES, 2, (), config)
        again = from_free(free_coordinates(syn, config), syn, config)
        for (w, v), (w2, v2) in zip(syn, again):
            np.testing.assert_array_equal(w.numpy(), w2.numpy())
            np.testing.assert_array_equal(v.numpy(), v2.numpy())


def test_asymmetry_of_known_matrices():
    assert relative_asymmetry(np.eye(3)) == 0.0
    assert relative_asymmetry([[0.0, 1.0], [-1.0, 0.0]]) == pytest.approx(2.0)
