"""Genome schedules (blur_keras.rules.schedule): ramps of synapse-update entries over the inner steps,
run by BlurModel (its rule_step counter) and by the evaluation suite (its loop counter)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
import helpers
from blur_keras.evaluation import suite as ev
from blur_keras.rules.schedule import at_step, check_schedule

K = 3
RAMPS = [{"entry": "pre", "index": [1, 0], "to": 0.25, "steps": 4},
         {"entry": "eta_syn", "to": 0.0, "steps": 3},
         {"entry": "post", "to": -0.5, "steps": 2, "start": 3},
         {"entry": "mu", "index": [0, 2], "to": 1.5, "steps": 5, "start": 1}]


def _numpy_at_step(values, ramps, t):
    """The ramp formula, written out: v + (to − v) · clip((t − start) / steps, 0, 1)."""
    out = {n: np.array(v, np.float64) for n, v in values.items()}
    for r in ramps:
        v = out[r["entry"]]
        frac = min(max((t - r.get("start", 0)) / r["steps"], 0.0), 1.0)
        if r.get("index") is None:
            out[r["entry"]] = v + (r["to"] - v) * frac
        else:
            i, j = r["index"]
            v[..., i, j] += (r["to"] - v[..., i, j]) * frac
    return out


@pytest.mark.parametrize("num_layers", [None, 2])
def test_at_step_matches_the_formula(num_layers):
    genome = bk.Genome.random(K, seed=4, num_layers=num_layers)
    ramps = check_schedule(RAMPS, K)
    for t in (0, 1, 2, 3, 4, 5, 9):
        got = {n: v.numpy() for n, v in at_step(genome.params(), ramps, tf.constant(t)).items()}
        want = _numpy_at_step(genome.numpy(), RAMPS, t)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    jitted = tf.function(lambda p, t: at_step(p, ramps, t), jit_compile=True)
    np.testing.assert_allclose(jitted(genome.params(), tf.constant(2))["pre"].numpy(),
                               _numpy_at_step(genome.numpy(), RAMPS, 2)["pre"], rtol=1e-6)


def test_the_schedulable_entries_never_reach_a_prediction():
    """A ramp may move only what a prediction does not read: the same synapses predict the same
    output whatever values the schedulable entries take."""
    genome = bk.Genome.random(K, seed=3)
    config = bk.BlurConfig(activation_norm=True)
    synapses = bk.init_synapses(1, (6, 5, 4), K)
    x = tf.constant(np.random.default_rng(0).normal(size=(7, 6)), tf.float32)
    moved = {n: (v * 3.0 - 1.0 if n in ("mu", "pre", "post", "f_syn", "eta_syn") else v)
             for n, v in genome.params().items()}
    np.testing.assert_array_equal(bk.predict(genome.params(), synapses, x, config).numpy(),
                                  bk.predict(moved, synapses, x, config).numpy())


@pytest.mark.parametrize("bad, words", [
    ({"entry": "pre"}, "a list of ramps"),
    ([{"entry": "nu", "to": 0.0, "steps": 2}], "'nu' cannot be scheduled"),
    ([{"entry": "pre", "index": [3, 0], "to": 0.0, "steps": 2}], r"two ints in \[0, 3\)"),
    ([{"entry": "eta_syn", "index": [0, 0], "to": 0.0, "steps": 2}], "must be None"),
    ([{"entry": "pre", "to": float("nan"), "steps": 2}], "finite number"),
    ([{"entry": "pre", "to": 0.0, "steps": 0}], "int >= 1"),
    ([{"entry": "pre", "to": 0.0, "steps": 2, "start": -1}], "'start' must be an int >= 0"),
    ([{"entry": "pre", "to": 0.0, "steps": 2, "start": 1.5}], "'start' must be an int >= 0"),
    ([{"entry": "pre", "to": 0.0, "steps": 2, "every": 3}], "expected a dict with keys"),
])
def test_bad_schedules_are_clear_errors(bad, words):
    with pytest.raises(ValueError, match=words):
        check_schedule(bad, K)
    with pytest.raises(ValueError, match=words):  # and where a genome file meets them
        data = bk.Genome.random(K).to_dict()
        bk.Genome.from_dict(dict(data, schedule=bad))


def test_a_schedule_travels_with_the_genome(tmp_path):
    genome = bk.Genome.random(K, seed=1).with_metadata(schedule=RAMPS)
    path = str(tmp_path / "g.json")
    genome.save_json(path)
    assert json.load(open(path))["schedule"] == [dict(r, index=r.get("index")) for r in RAMPS]
    # a ramp from step 0 is written without 'start', as files were before it existed
    assert [sorted(r) for r in json.load(open(path))["schedule"][:2]] == \
        [sorted(["entry", "index", "to", "steps"])] * 2
    loaded = bk.Genome.load_json(path)
    assert loaded.schedule == check_schedule(RAMPS, K)
    assert bk.Genome.from_config(genome.get_config()).schedule == loaded.schedule
    assert "schedule" not in bk.Genome.random(K).to_dict()  # none: the file is unchanged


def test_species_member_keeps_its_species_values_and_the_schedule():
    population = bk.Genome.random(K, seed=2, species=3, same_start=False).with_metadata(
        schedule=RAMPS)
    one = population.species_member(1)
    assert one.species is None and one.schedule == population.schedule
    for name, value in population.numpy().items():
        np.testing.assert_array_equal(one.numpy()[name], value[1], err_msg=name)


def _model(genome, seed=0):
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input((12,)), bk.BlurDense(10, k=K), bk.BlurDense(3, k=K)])
    model = bk.BlurModel(net, genome, bk.BlurConfig(oja=True))
    model.compile(jit_compile=True)
    return model


def test_fit_steps_by_the_schedule_and_counts_its_steps(tmp_path):
    """fit (XLA) = inner_step with the ramped entries of each step, in order."""
    genome = bk.Genome.random(K, seed=2, synapse_update=-1e-2).with_metadata(schedule=RAMPS)
    model = _model(genome)
    x, y = helpers.toy_data(5, 96, 12, 3)
    synapses = helpers.manual_fit(model, x, y, 16, lambda t: {
        n: tf.constant(v, tf.float32) for n, v in _numpy_at_step(genome.numpy(), RAMPS, t).items()})
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for (w, v), layer in zip(synapses, model.blur_layers):
        np.testing.assert_allclose(layer.forward_synapses.numpy(), w.numpy(), atol=1e-5)
        np.testing.assert_allclose(layer.backward_synapses.numpy(), v.numpy(), atol=1e-5)
    assert int(model.rule_step.numpy()) == 6
    for name, value in genome.numpy().items():  # the genome's own numbers are not moved
        np.testing.assert_array_equal(model.genome.numpy()[name], value)
    model.step(x[:16], y[:16])
    assert int(model.rule_step.numpy()) == 7
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.rule_step.numpy()) == 7 and loaded.genome.schedule == genome.schedule
    from blur_keras.evaluation.stability import reset_synapses
    assert int(reset_synapses(loaded, 3).rule_step.numpy()) == 0
    assert _model(bk.Genome.random(K)).rule_step is None  # no schedule, no counter


def test_evaluation_runs_the_schedule():
    """eta_syn ramped to 0 in one step: the curve is frozen after the first step, at the
    unscheduled rule's first-step accuracy."""
    data = ev.synthetic_data("blobs", 6, 3, pool=200, val=60, test=80, seed=1)
    genome = bk.Genome.random(2, seed=3, synapse_update=-0.05)
    plain = ev.Rule("plain", genome.numpy(), bk.BlurConfig(activation_norm=True))
    ramp = check_schedule([{"entry": "eta_syn", "to": 0.0, "steps": 1}], 2)
    scheduled = ev.Rule("scheduled", genome.numpy(), plain.config, schedule=ramp)
    idx = ev.batch_indices(200, 5, 2, 8, seed=0)
    steps = ev.record_steps((5,))
    synapses = ev.initial_synapses(plain, (6, 8, 3), 2, seed=0)
    a = ev.blur_curves(plain, synapses, data, idx, steps)
    b = ev.blur_curves(scheduled, synapses, data, idx, steps)
    np.testing.assert_array_equal(b[:, :2], a[:, :2])  # steps 0 and 1: the same rule
    np.testing.assert_array_equal(b[:, 2:], np.repeat(b[:, 1:2], b.shape[1] - 2, axis=1))
    assert np.any(a[:, 2:] != a[:, 1:2])  # while the unscheduled rule goes on learning
