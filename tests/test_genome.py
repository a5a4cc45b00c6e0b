"""The Genome layer and its JSON form (blur_keras.rules.genome).
"""

import json

import numpy as np
import pytest

from blur_keras import Genome
from blur_keras.rules.genome import NAMES, num_core_numbers

from helpers import S, K, TRANSFORMS, rand_genome


# ---------------------------------------------------------------------------
# Genome
# ---------------------------------------------------------------------------

def _random_values(seed, lead):
    g = rand_genome(seed, lead=lead)
    return {n: v.astype(np.float32) for n, v in g.items()}


@pytest.mark.parametrize("num_layers,species", [(None, None), (3, None), (None, 2), (3, 2)])
def test_genome_config_and_json_round_trip(num_layers, species):
    lead = tuple(d for d in (species, num_layers) if d is not None)
    values = _random_values(400, lead)
    genome = Genome(K, num_layers=num_layers, species=species, values=values)
    for name in NAMES:
        np.testing.assert_array_equal(genome.numpy()[name], values[name])
    for clone in (Genome.from_config(genome.get_config()), Genome.from_json(genome.to_json()),
                  Genome.from_config(json.loads(json.dumps(genome.get_config())))):
        assert (clone.k, clone.num_layers, clone.species) == (K, num_layers, species)
        for name in NAMES:
            np.testing.assert_array_equal(clone.numpy()[name], genome.numpy()[name])
            assert clone.numpy()[name].dtype == np.float32


def test_genome_save_load_json(tmp_path):
    genome = Genome(K, species=S, values=_random_values(401, (S,)))
    path = tmp_path / "g.json"
    genome.save_json(str(path))
    clone = Genome.load_json(str(path))
    for name in NAMES:
        np.testing.assert_array_equal(clone.numpy()[name], genome.numpy()[name])


def test_genome_defaults_and_size():
    g = Genome(4).numpy()
    np.testing.assert_array_equal(g["nu"], np.eye(4))
    assert g["f"] == 1 and g["eta"] == 1 and g["f_syn"] == 1
    assert g["eta_syn"] == np.float32(-1e-3)
    assert num_core_numbers(2) == 20 and num_core_numbers(4) == 68
    core = sum(g[n].size for n in ("nu", "mu", "pre", "post", "f", "eta", "f_syn", "eta_syn"))
    assert core == num_core_numbers(4)


@pytest.mark.parametrize("species", [None, 3])
def test_genome_backprop(species):
    lr = 0.037
    genome = Genome.backprop(lr, species=species)
    g = genome.numpy()
    lead = () if species is None else (species,)
    expected = {"nu": [[1, 1], [0, 0]], "mu": np.eye(2), "pre": np.eye(2),
                "post": [[0, 1], [1, 0]], "f": 1.0, "eta": 1.0, "f_syn": 1.0,
                "eta_syn": -lr}
    for name, val in expected.items():
        assert g[name].shape == lead + np.shape(val)
        np.testing.assert_array_equal(g[name], np.broadcast_to(np.float32(val), lead + np.shape(val)))
    with pytest.raises(ValueError, match="k=2"):
        Genome.backprop(lr, k=3)


def test_genome_random_statistics():
    k, L = 8, 2
    g = Genome.random(k, seed=5, num_layers=L, species=3, transform_std=0.5, same_start=False)
    vals = g.numpy()
    pooled = []
    for name in TRANSFORMS:
        assert vals[name].shape == (3, L, k, k)
        pooled.append(vals[name].ravel())
    pooled = np.concatenate(pooled)            # 1536 draws of N(0, 0.25)
    assert abs(pooled.mean()) < 0.05
    assert abs(pooled.std() - 0.5) < 0.05
    assert np.abs(vals["nu"][0] - vals["nu"][1]).max() > 0      # independent species
    assert np.abs(vals["nu"] - vals["mu"]).max() > 0
    for name, val in (("f", 1.0), ("eta", 1.0), ("f_syn", 1.0), ("eta_syn", -1e-3)):
        assert vals[name].shape == (3, L)
        np.testing.assert_array_equal(vals[name], np.float32(val))
    same = Genome.random(k, seed=5, num_layers=L, species=3, transform_std=0.5).numpy()
    for name in TRANSFORMS:                    # same_start: one draw for every species
        assert same[name].shape == (3, L, k, k)
        np.testing.assert_array_equal(same[name][0], same[name][2])
    again = Genome.random(k, seed=5, num_layers=L, species=3, transform_std=0.5, same_start=False)
    np.testing.assert_array_equal(again.numpy()["post"], vals["post"])
    other = Genome.random(k, seed=6, num_layers=L, species=3, transform_std=0.5, same_start=False)
    assert np.abs(other.numpy()["post"] - vals["post"]).max() > 0


@pytest.mark.parametrize("name,bad", [("nu", np.nan), ("eta_syn", np.inf), ("gamma", -np.inf),
                                      ("oja", np.nan)])
def test_genome_rejects_non_finite(name, bad):
    shape = (K,) * {"nu": 2, "gamma": 1}.get(name, 0)
    arr = np.zeros(shape, np.float32)
    arr.flat[0] = bad
    with pytest.raises(ValueError, match=f"'{name}'"):
        Genome(K, values={name: arr})
    genome = Genome(K)
    with pytest.raises(ValueError, match=f"'{name}'"):
        genome.assign({name: arr})


@pytest.mark.parametrize("name,shape", [("mu", (2, 2)), ("gamma", (K + 2,)), ("f", (4,)),
                                        ("post", (K, K, K))])
def test_genome_rejects_wrong_shape(name, shape):
    with pytest.raises(ValueError, match=f"'{name}'"):
        Genome(K, values={name: np.zeros(shape, np.float32)})


@pytest.mark.parametrize("k", [1, 0, -2, 2.0, True])
def test_genome_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k"):
        Genome(k)


def test_genome_rejects_unknown_entry():
    with pytest.raises(ValueError, match="bogus"):
        Genome(K, values={"bogus": 1.0})
