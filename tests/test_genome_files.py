"""Genome files carry their rule and load strictly."""

import json

import keras
import numpy as np
import pytest

import blur_keras as bk
from blur_keras.rules.genome import NAMES

CONFIG = bk.BlurConfig(activation_norm=True, batch_reduction="mean")
PROVENANCE = {"task": "xor", "sizes": [2, 4, 2], "unroll": 5, "meta_steps": 3, "seed": 0}


def saved(tmp_path, genome, name="g.json"):
    path = str(tmp_path / name)
    genome.save_json(path)
    return path


def full_genome():
    return bk.Genome.random(2, seed=1).with_metadata(CONFIG, init_scale=0.5, logit_scale=2.0,
                                                      provenance=PROVENANCE)


def test_saved_genome_restores_its_config(tmp_path):
    genome = full_genome()
    loaded = bk.Genome.load_json(saved(tmp_path, genome))
    assert loaded.config == CONFIG
    assert loaded.init_scale == 0.5 and loaded.logit_scale == 2.0
    assert loaded.provenance == PROVENANCE
    for name, arr in genome.numpy().items():
        np.testing.assert_array_equal(loaded.numpy()[name], arr)


def network(k=2):
    return keras.Sequential([keras.Input((2,)), bk.BlurDense(4, k=k), bk.BlurDense(2, k=k)])


def test_blur_model_from_path_uses_the_files_config(tmp_path):
    path = saved(tmp_path, full_genome())
    model = bk.BlurModel(network(), genome=path)
    assert model.config == CONFIG
    assert bk.BlurModel(network(), genome=path, config=CONFIG).config == CONFIG  # agreeing: fine


def test_explicit_config_contradicting_the_file_is_an_error(tmp_path):
    path = saved(tmp_path, full_genome())
    with pytest.raises(ValueError, match="activation_norm: genome True, explicit False"):
        bk.BlurModel(network(), genome=path, config=bk.BlurConfig())


def old_file(tmp_path, drop=None, **changes):
    values = {n: a.tolist() for n, a in bk.Genome.random(2, seed=2).numpy().items()}
    if drop:
        del values[drop]
    data = {"k": 2, "num_layers": None, "species": None, "values": values, **changes}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_old_values_only_file_still_loads(tmp_path):
    loaded = bk.Genome.load_json(old_file(tmp_path))
    assert loaded.config is None and loaded.provenance is None
    np.testing.assert_array_equal(loaded.numpy()["nu"], bk.Genome.random(2, seed=2).numpy()["nu"])
    assert bk.BlurModel(network(), genome=old_file(tmp_path)).config == bk.BlurConfig()


@pytest.mark.parametrize("text,pattern", [
    ("[1,2,3]", r"JSON object .*got list \[1, 2, 3\]"),
    ("42", "JSON object .*got int 42"),
    ("{not json", "not valid JSON"),
])
def test_non_dict_json_is_a_clear_error(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        bk.Genome.from_json(text)


@pytest.mark.parametrize("drop", ["nu", "eta_syn", "gamma"])
def test_missing_entry_is_an_error(tmp_path, drop):
    with pytest.raises(ValueError, match=rf"'values' is missing the entries \['{drop}'\]"):
        bk.Genome.load_json(old_file(tmp_path, drop=drop))


@pytest.mark.parametrize("changes,pattern", [
    ({"num_layers": True}, r"'num_layers': expected an int >= 1 or null, got True"),
    ({"k": 2.0}, r"'k': expected an int >= 2, got 2.0"),
    ({"k": "2"}, r"'k': expected an int >= 2, got '2'"),
    ({"species": 0}, r"'species': expected an int >= 1 or null, got 0"),
    ({"learning_rate": 0.1}, r"unknown keys \['learning_rate'\] \(values \[0.1\]\)"),
    ({"config": {"activation_norm": True, "bogus": 1}}, r"'config': Unknown BlurConfig fields \['bogus'\]"),
    ({"logit_scale": "big"}, r"'logit_scale': expected a finite number, got 'big'"),
    ({"format": "other/1"}, r"'format': expected 'blur_keras.genome/2', got 'other/1'"),
])
def test_bad_keys_are_clear_errors(tmp_path, changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        bk.Genome.load_json(old_file(tmp_path, **changes))


def test_bad_values_are_clear_errors():
    data = full_genome().to_dict()
    data["values"]["extra"] = 1.0
    with pytest.raises(ValueError, match=r"unknown entries \['extra'\]"):
        bk.Genome.from_dict(data)
    data = full_genome().to_dict()
    data["values"]["f"] = "one"
    with pytest.raises(ValueError, match=r"'values.f' .*expected numbers .*got 'one'"):
        bk.Genome.from_dict(data)


def test_meta_train_genome_init_path_is_strict(tmp_path):
    from blur_keras.meta.run.experiment import make_start_genome

    with pytest.raises(ValueError, match=r"old.json: Genome file key 'values' is missing the entries \['nu'\]"):
        make_start_genome(2, 2, old_file(tmp_path, drop="nu"), 0, 1.0, -1e-3, None, 0.1)


def test_keras_serialisation_round_trip_keeps_metadata():
    genome = full_genome()
    again = bk.Genome.from_config(genome.get_config())
    assert again.config == CONFIG and again.logit_scale == 2.0
    assert set(genome.to_dict()["values"]) == set(NAMES)


@pytest.mark.parametrize("edit, pattern", [
    (lambda d: d["values"].update(nu=[[True, False], [False, True]]),
     r"'values.nu' \(forward neuron transform.*\): expected numbers \(not booleans"),
    (lambda d: d["values"].update(f=True), r"'values.f' .*expected numbers \(not booleans"),
    (lambda d: d["values"].update(eta=["1.5"]), r"'values.eta' .*expected numbers"),
    (lambda d: d["values"].update(eta_syn=-1e30),
     r"'values.eta_syn' \(synapse update\): 1e\+30 exceeds the sane bound 10000"),
    (lambda d: d["values"].update(pre=[[1.0, 2e5], [0.0, 1.0]]), r"'values.pre' .*200000 exceeds"),
    (lambda d: d["values"].update(alpha=0.0), r"'values.alpha' \(saturation scale\): must be > 0"),
    (lambda d: d["values"].update(alpha=-2.0), r"'values.alpha' .*must be > 0, got -2.0"),
    (lambda d: d.update(init_scale=-1), r"key 'init_scale': expected a positive scale between "
                                        r"0.001 and 1000, got -1.0"),
    (lambda d: d.update(init_scale=1e30), r"key 'init_scale': expected a positive scale"),
    (lambda d: d.update(logit_scale=0), r"key 'logit_scale': expected a positive scale"),
    (lambda d: d.update(logit_scale=True), r"key 'logit_scale': expected a finite number"),
])
def test_absurd_or_mistyped_values_are_one_line_errors(tmp_path, edit, pattern):
    data = full_genome().to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=pattern) as info:
        bk.Genome.load_json(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_every_shipped_genome_loads_under_the_checks():
    for name in bk.pretrained_genomes():
        genome = bk.Genome.pretrained(name)
        assert genome.init_scale > 0 and genome.logit_scale > 0


def test_with_metadata_refuses_a_scale_a_file_could_not_hold():
    with pytest.raises(ValueError, match=r"'logit_scale': expected a positive scale"):
        bk.Genome.random(2).with_metadata(logit_scale=-2.0)
