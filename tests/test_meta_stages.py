"""A run in stages (blur_keras.meta.run.stages): each stage a gin scope, starting from the last."""

import json
import os

import gin
import numpy as np
import pytest

from test_meta_gin import CLI, REPO, TINY

STAGED = TINY + [
    "meta_train.stages = ['fast', 'long']",
    "fast/Outer.trainer = @GradientTrainer",
    "fast/GradientTrainer.trajectory_weight = 0.5",
    "long/Outer.trainer = @CMAESTrainer",
    "long/CMAESTrainer.population_size = 4",
    "long/CMAESTrainer.trajectory_weight = 0.5",
    "long/Schedule.num_steps = 2",
    "long/Schedule.checkpoint_every = 2",
    "long/Schedule.eval_every = 2",
    "long/Curriculum.unroll_start = 4",
]


def _run(model_dir, extra=()):
    from blur_keras.meta.run.experiment import meta_train

    CLI.parse_gin([os.path.join(REPO, "gin", "toy2d.gin")], STAGED + list(extra))
    try:
        return meta_train(str(model_dir))
    finally:
        gin.clear_config()


FREEZE = [{"entry": "eta_syn", "index": None, "to": 0.0, "steps": 1},
          {"entry": "f_syn", "index": None, "to": 1.0, "steps": 1}]


def test_stages_chain_genomes_and_scoped_bindings(tmp_path):
    results = _run(tmp_path, ["Report.final_values = {'pre': {(1, 0): -0.1}, 'f': 1.5}",
                              f"Report.final_schedule = {FREEZE!r}",
                              "long/Report.final_eval = True",
                              "long/Report.final_eval_replicas = 2",
                              "long/Report.final_eval_task = @judge/Task()",
                              "judge/Task.dataset = 'two_moons'",
                              "evaluate_suite.baselines = []",
                              "long/Report.export = True",
                              "Report.plots = True"])
    fast, long = (json.load(open(tmp_path / s / "run_settings.json")) for s in ("fast", "long"))
    assert fast["outer"] == "adam" and fast["trajectory_weight"] == 0.5
    assert long["outer"] == "cma" and long["population_size"] == 4
    assert long["genome_init"] == str(tmp_path / "fast" / "genome.json")
    assert [r["steps_done"] for r in results["stages"]] == [3, 2]
    final = json.load(open(tmp_path / "genome.json"))
    stages = final["provenance"]["stages"]
    assert [s["stage"] for s in stages] == ["fast", "long"]
    assert [s["unroll"] for s in stages] == [2, 4]
    assert final["provenance"]["genome_init"] == "random"  # the first stage's start
    assert final["provenance"]["transform_std"] == 0.5  # and what rebuilds it (toy2d.gin)
    assert final["provenance"]["synapse_update"] == -0.01
    long_genome = json.load(open(tmp_path / "long" / "genome.json"))
    # final_values: set by hand on the final file only, recorded in its provenance
    edit = np.array(long_genome["values"]["pre"], np.float32)  # a genome file holds float32
    assert edit[1, 0] != np.float32(-0.1)
    edit[1, 0] = -0.1
    np.testing.assert_array_equal(np.asarray(final["values"]["pre"], np.float32), edit)
    assert final["values"]["f"] == 1.5 != long_genome["values"]["f"]
    assert final["provenance"]["final_values"] == {"pre": {"(1, 0)": -0.1}, "f": 1.5}
    assert {n: v for n, v in final["values"].items() if n not in ("pre", "f")} == \
        {n: v for n, v in long_genome["values"].items() if n not in ("pre", "f")}
    # final_schedule: written into the final file only, and loaded with it
    assert final["schedule"] == FREEZE
    assert "schedule" not in long_genome
    from blur_keras import Genome
    assert Genome.load_json(str(tmp_path / "genome.json")).schedule[1].entry == "f_syn"
    # the run's top level holds the final rule's SavedModel, with the edited values
    import tensorflow as tf
    assert results["saved_model"] == str(tmp_path / "saved_model")
    assert not any((tmp_path / s / "saved_model").exists() for s in ("fast", "long"))
    assert not any("saved_model" in r for r in results["stages"])  # exported once, the run's
    rule = tf.saved_model.load(str(tmp_path / "saved_model"))
    assert float(rule.genome()["f"].numpy()) == 1.5
    _check_the_comparison_judges_the_edited_genome(tmp_path, results)


def test_final_edits_are_checked_before_any_stage_and_need_stages(tmp_path):
    for binding, words in (("Report.final_values = {'pre': [1.0, 2.0, 3.0]}", "shape"),
                           ("Report.final_values = {'prex': 1.0}", "Unknown genome entries"),
                           ("Report.final_values = {'pre': {(2, 0): 1.0}}", "out of bounds"),
                           ("Report.final_schedule = [{'entry': 'nu', 'to': 0.0, 'steps': 5}]",
                            "cannot be scheduled")):
        with pytest.raises(ValueError, match="Report.final_") as err:
            _run(tmp_path / "bad", [binding])
        assert words in str(err.value)
        assert not os.path.exists(tmp_path / "bad" / "fast")  # nothing trained
    from blur_keras.meta.run.experiment import Report, meta_train

    CLI.parse_gin([os.path.join(REPO, "gin", "toy2d.gin")], TINY)
    try:
        with pytest.raises(ValueError, match="has no meta_train.stages"):
            meta_train(str(tmp_path / "single"), report=Report(final_values={"f": 1.0}))
        with pytest.raises(ValueError, match="has no meta_train.stages"):
            meta_train(str(tmp_path / "single"), report=Report(
                final_schedule=[{"entry": "f_syn", "to": 1.0, "steps": 5}]))
    finally:
        gin.clear_config()
    assert not os.path.exists(tmp_path / "single")


def test_a_finished_stage_is_not_run_again(tmp_path):
    _run(tmp_path, ["Schedule.stop_after = 1"])  # stops (checkpointed) in the first stage
    assert not os.path.exists(tmp_path / "fast" / "genome.json")
    first = _run(tmp_path)
    assert [r["steps_done"] for r in first["stages"]] == [3, 2]
    stamp = os.path.getmtime(tmp_path / "fast" / "genome.json")
    # more steps for the last stage: the first is finished and kept, the last one continues
    again = _run(tmp_path, ["long/Schedule.num_steps = 4"])
    assert os.path.getmtime(tmp_path / "fast" / "genome.json") == stamp
    assert [r["steps_done"] for r in again["stages"]] == [3, 4]
    metrics = [json.loads(line) for line in open(tmp_path / "long" / "metrics.jsonl")]
    assert len(metrics) == 4  # steps 3 and 4 continued the checkpointed stage


def _check_the_comparison_judges_the_edited_genome(tmp_path, results):
    """With final edits the last stage's comparison is of the file the run writes: here with
    a schedule that stops the synapse updates after one step (η̃ → 0, f̃ → 1), so the suite's
    curve of the final genome moves at step 1 and not after."""
    assert "comparison" not in json.load(open(tmp_path / "long" / "results.json"))
    assert results["comparison"]["suite"] == str(tmp_path / "suite")
    assert "two_moons" in results["comparison"]["task"]  # final_eval_task, not the run's "and"
    assert json.load(open(tmp_path / "results.json"))["comparison"] == results["comparison"]
    assert (tmp_path / "comparison.png").exists() and (tmp_path / "genome.png").exists()
    summary = json.load(open(tmp_path / "suite" / "summary.json"))
    assert summary["rule"] == results["comparison"]["rule"] == \
        "final genome (with its schedule)"
    entry = summary["results"][0]
    curve, steps = entry["methods"]["blur"]["test_mean"], entry["steps"]
    assert curve[steps.index(1)] != curve[0]  # the first step learns
    assert curve[steps.index(1):] == [curve[steps.index(1)]] * (len(steps) - steps.index(1))
