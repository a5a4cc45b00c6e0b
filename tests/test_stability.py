"""The fit check (blur_keras.evaluation.stability): curves per epoch, non-finite runs reported, PASS/FAIL."""

import json
import math

import numpy as np
import pytest

from blur_keras import BlurConfig, Genome
from blur_keras.evaluation import stability as st
from blur_keras.evaluation.suite import synthetic_data

EPOCHS = 2


@pytest.fixture(scope="module")
def toy():
    # 8 features, 3 classes; 96 training examples = 3 batches of 32 per epoch
    return synthetic_data("toy", 8, 3, pool=96, val=64, test=8, seed=0)


def _backprop():
    return st.load_genome(Genome.backprop(0.01).with_metadata(
        config=BlurConfig.backprop("tanh", "linear")))


def _exploding():
    # a huge synapse keep: the synapses grow 1e4-fold a step and run away (beyond ±1e8) at the
    # second step, while the output still varies after the first (a huge synapse update too
    # would collapse the output to a constant at the first step, which is reported there)
    return st.load_genome(Genome.random(2, seed=0, synapse_keep=1e4, synapse_update=1.0))


def test_curves_are_recorded_per_epoch(toy, tmp_path):
    report = st.run_check(_backprop(), [toy], hidden_sizes=((4,),), seeds=2, epochs=EPOCHS,
                          early_steps=(1, 2, 50), jit_compile=False,
                          log=lambda line: None)
    (entry,) = report["results"]
    assert entry["sizes"] == [8, 4, 3]
    assert [c["seed"] for c in entry["curves"]] == [0, 1]
    for curve in entry["curves"]:
        assert curve["nonfinite"] is None
        assert len(curve["val_accuracy"]) == EPOCHS
        assert all(0.0 <= a <= 1.0 for a in curve["val_accuracy"])
        assert sorted(curve["early"]) == ["1", "2"]  # 50 is past the 9 steps run
        assert curve["train_examples"] == 96
        assert len(curve["peak_synapse"]) == EPOCHS and all(p > 0 for p in curve["peak_synapse"])
    st.write_report(report, str(tmp_path), plot=False)
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["results"][0]["curves"][0]["val_accuracy"] == entry["curves"][0]["val_accuracy"]
    assert "| toy 8-4-3 |" in (tmp_path / "table.md").read_text()


def test_peak_synapse_is_the_largest_weight_after_each_epoch(toy):
    model = st.build_model(_backprop(), (8, 4, 3), jit_compile=False)
    curve = st.fit_curve(model, (toy.pool_x, toy.pool_y), (toy.val_x, toy.val_y), EPOCHS,
                         early_steps=())
    weights = [w.numpy() for layer in model.blur_layers
               for w in (layer.forward_synapses, layer.backward_synapses)]
    assert len(weights) == 4  # W and V of each layer
    assert curve["peak_synapse"][-1] == max(float(np.abs(w).max()) for w in weights)
    table = st.format_table({"epochs": EPOCHS, "batch_size": 32, "seeds": 1, "results": [
        {"label": "toy 8-4-3", "curves": [curve]}]})
    assert "peak \\|synapse\\|" in table
    row = next(line for line in table.splitlines() if line.startswith("| toy 8-4-3 |"))
    assert row.split(" | ")[-2] == f"{curve['peak_synapse'][-1]:.3g}"  # the column before PASS


def test_a_genome_that_goes_nonfinite_fails_without_stopping_the_check(toy, tmp_path):
    lines = []
    report = st.run_check(_exploding(), [toy], hidden_sizes=((4,), (5,)), seeds=2,
                          epochs=EPOCHS, early_steps=(), jit_compile=False, log=lines.append)
    assert len(report["results"]) == 2  # the second architecture still ran
    assert [line.split()[0] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    for entry in report["results"]:
        for curve in entry["curves"]:  # the second seed reuses the model the first broke
            fail = curve["nonfinite"]
            assert fail is not None and fail["epoch"] == 1 and fail["step"] == 2
            assert "non-finite" in fail["message"]
            assert curve["val_accuracy"][fail["epoch"] - 1:] == \
                [None] * (EPOCHS - fail["epoch"] + 1)
        summary = st.summarise(entry)
        assert summary["nonfinite"] == 2 and not summary["pass"]
    st.write_report(report, str(tmp_path), plot=True)
    table = (tmp_path / "table.md").read_text()
    assert table.count("| FAIL |") == 2 and "2/2 (" in table
    assert (tmp_path / "fit_curves.png").stat().st_size > 0


def test_the_nonfinite_step_is_exact_with_several_steps_per_call(toy):
    model = st.build_model(_exploding(), (8, 4, 3), jit_compile=False, steps_per_execution=5)
    curve = st.fit_curve(model, (toy.pool_x, toy.pool_y), (toy.val_x, toy.val_y), EPOCHS,
                         early_steps=(1,))
    # step 1 is finite (the synapses only get huge), step 2 overflows
    assert curve["nonfinite"]["epoch"] == 1 and curve["nonfinite"]["step"] == 2
    assert curve["val_accuracy"] == [None] * EPOCHS
    assert curve["early"] == {}  # step 1 is measured after the call (steps 1-5) that failed


def test_nonfinite_validation_logs_end_the_curve(toy):
    model = st.build_model(_backprop(), (8, 4, 3), jit_compile=False)
    recorder = st._Recorder(toy.val_x, toy.val_y, ())
    recorder.set_model(model)
    recorder.step = 7
    recorder.on_epoch_end(0, {"val_accuracy": 0.5, "val_feedback_loss": 0.3})
    recorder.on_epoch_end(1, {"val_accuracy": 0.1, "val_feedback_loss": float("nan")})
    assert recorder.epochs == [0.5]
    assert recorder.nonfinite["epoch"] == 2 and recorder.nonfinite["step"] == 7
    assert "val_feedback_loss" in recorder.nonfinite["message"] and model.stop_training


def _curve(acc, fail=None):
    return {"val_accuracy": acc, "nonfinite": fail}


@pytest.mark.parametrize("curves, expected", [
    ([_curve([0.5, 0.8, 0.8]), _curve([0.6, 0.7, 0.75])], True),     # final is the best
    ([_curve([0.5, 0.8, 0.795])], True),                              # within 0.01 of best
    ([_curve([0.5, 0.8, 0.79])], True),     # exactly 0.01 (0.8 - 0.79 > 0.01 in floats)
    ([_curve([0.5, 0.803, 0.793])], True),  # 10 of 1000 validation examples
    ([_curve([0.5, 0.7570000290870667, 0.746999979019165])], True),   # the same in float32
    ([_curve([0.5, 0.8, 0.789])], False),                             # 0.011
    ([_curve([0.5, 0.8, 0.78])], False),                              # dropped by 0.02
    ([_curve([0.5, 0.8, 0.8]), _curve([0.7, 0.9, 0.85])], False),     # one seed dropped
    ([_curve([0.5, None, None], {"epoch": 2, "step": 9})], False),    # went non-finite
])
def test_pass_fail(curves, expected):
    assert st.passes(curves, tolerance=0.01) is expected


def test_summary_statistics():
    entry = {"label": "t", "curves": [_curve([0.5, 0.8, 0.7]), _curve([0.6, 0.9, 0.9]),
                                      _curve([0.4, None, None], {"epoch": 2, "step": 5})]}
    s = st.summarise(entry)
    assert s["best"][0] == pytest.approx(np.mean([0.8, 0.9, 0.4]))
    assert s["final"] == pytest.approx((0.8, 0.1)) and s["n_final"] == 2
    assert s["drop"][0] == pytest.approx(-0.05)
    assert s["nonfinite"] == 1 and s["nonfinite_epochs"] == [2] and s["pass"] is False
    best, final = st.curve_stats(_curve([None, None], {"epoch": 1, "step": 1}))
    assert math.isnan(best) and math.isnan(final)


def test_early_accuracy_matches_fits_validation(toy):
    # the same batches of 32 as fit's validation (activation_norm: predictions depend on the batch)
    genome = st.load_genome(Genome.random(2, seed=3))
    model = st.build_model(genome, (8, 4, 3), jit_compile=False)
    keras_acc = model.evaluate(toy.val_x[:40], toy.val_y[:40], batch_size=32, verbose=0,
                               return_dict=True)["accuracy"]
    assert st.val_accuracy(model, toy.val_x[:40], toy.val_y[:40], 32) == pytest.approx(keras_acc)


def test_baselines_run_the_same_check_and_report_the_best_learning_rate(toy, tmp_path):
    lines = []
    lrs = (1e-4, 0.1)
    report = st.run_check(_backprop(), [toy], hidden_sizes=((4,),), seeds=2, epochs=EPOCHS,
                          early_steps=(2,), jit_compile=False,
                          baselines={"adam": lrs, "sgd": (0.1,)}, log=lines.append)
    assert len(lines) == 2 * (1 + 2 + 1) and lines[-1].startswith("[8/8]")
    rule, adam, sgd = report["results"]
    assert "method" not in rule and [adam["method"], sgd["method"]] == ["adam", "sgd"]
    # the chosen learning rate is the one with the best mean final accuracy over the seeds
    assert set(adam["sweep"]) == {"0.0001", "0.1"}
    assert adam["learning_rate"] == 0.1  # 1e-4 barely moves from the start (asserted below)
    finals = [c["val_accuracy"][-1] for c in adam["curves"]]
    assert np.mean(finals) == pytest.approx(adam["sweep"][f"{adam['learning_rate']:g}"])
    assert adam["label"] == f"toy 8-4-3 Adam (lr {adam['learning_rate']:g})"
    assert [c["seed"] for c in adam["curves"]] == [0, 1]
    for curve in adam["curves"] + sgd["curves"]:
        assert curve["nonfinite"] is None and sorted(curve["early"]) == ["2"]
        assert len(curve["peak_synapse"]) == EPOCHS and curve["peak_synapse"][-1] > 0
    # a learning rate of 0.1 learns the toy task; 1e-4 barely moves from the start
    assert adam["sweep"]["0.1"] > adam["sweep"]["0.0001"]
    st.write_report(report, str(tmp_path), plot=True)
    table = (tmp_path / "table.md").read_text()
    assert "| toy 8-4-3 Adam (lr 0.1) |" in table and "Baselines: the learning rate" in table
    assert (tmp_path / "fit_curves.png").exists()


def test_baseline_models_and_their_peak_weight():
    model = st.build_baseline("momentum", 0.01, (8, 5, 3), "tanh", seed=3, jit_compile=False)
    assert [layer.units for layer in model.layers] == [5, 3]
    assert model.optimizer.momentum == pytest.approx(0.9)
    weights = [np.asarray(w) for w in model.trainable_weights]
    assert st.peak_synapse(model) == max(float(np.abs(w).max()) for w in weights)
    again = st.build_baseline("momentum", 0.01, (8, 5, 3), "tanh", seed=3, jit_compile=False)
    np.testing.assert_array_equal(np.asarray(again.trainable_weights[0]), weights[0])
    with pytest.raises(ValueError, match="Unknown baseline 'rmsprop'"):
        st.build_baseline("rmsprop", 0.01, (8, 5, 3))
    with pytest.raises(ValueError, match="Unknown baseline 'rmsprop'"):  # before any training
        st.run_check(_backprop(), [], baselines={"adam": (0.1,), "rmsprop": (0.1,)})


def test_validation_batch_size_is_used_for_every_validation(toy, tmp_path):
    # activation_norm: training normalises over each batch; validation uses the statistics
    # tracked while the rule trains (BlurModel's inference), so no batch size shows
    genome = st.load_genome(Genome.backprop(0.1).with_metadata(
        config=BlurConfig.backprop().replace(activation_norm=True)))
    report = st.run_check(genome, [toy], hidden_sizes=((4,),), seeds=1, epochs=1,
                          early_steps=(3,), jit_compile=False, val_batch_size=64,
                          log=lambda line: None)
    (curve,) = report["results"][0]["curves"]
    model = st.build_model(genome, (8, 4, 3), jit_compile=False)
    st.fit_curve(model, st.train_subset(toy, 4000, 0), (toy.val_x, toy.val_y), 1,
                 early_steps=(), val_batch_size=64)  # the same run again
    # after its single epoch (= step 3) both records are the accuracy in one batch of 64
    assert curve["early"]["3"] == pytest.approx(curve["val_accuracy"][0])
    assert curve["val_accuracy"][0] == pytest.approx(
        st.val_accuracy(model, toy.val_x, toy.val_y, 64))
    assert st.val_accuracy(model, toy.val_x, toy.val_y, 64) == pytest.approx(st.val_accuracy(
        model, toy.val_x, toy.val_y, 8))
    assert report["val_batch_size"] == 64
    st.write_report(report, str(tmp_path), plot=False)
    assert "Validation in batches of 64." in (tmp_path / "table.md").read_text()
