"""Bad configurations of meta-training: clear errors before anything trains."""

import json
import os

import pytest

import blur_keras as bk
from blur_keras.data import preset_task
from blur_keras.meta.run.experiment import meta_train

import helpers

REPO = helpers.REPO
tiny_run = helpers.tiny_run


# -- the start genome file must fit k, per_layer and the depth ------------------------------------
def test_genome_file_with_other_k(tmp_path):
    path = tmp_path / "k3.json"
    bk.Genome.random(3, seed=0).save_json(str(path))
    with pytest.raises(ValueError, match=r"k=3 genome, but Objective.k=2"):
        tiny_run(tmp_path / "run", k=2, genome_init=str(path))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_per_layer_genome_file_with_other_depth(tmp_path):
    path = tmp_path / "one_pair.json"
    bk.Genome.random(2, seed=0, num_layers=1).save_json(str(path))
    with pytest.raises(ValueError, match=r"per-layer with 1 layer pairs.*per-layer with 2"):
        tiny_run(tmp_path / "run", per_layer=True, genome_init=str(path))
    with pytest.raises(ValueError, match=r"per-layer with 1 layer pairs.*shared by all"):
        tiny_run(tmp_path / "run2", per_layer=False, genome_init=str(path))


def test_genome_file_with_a_schedule(tmp_path):
    path = tmp_path / "scheduled.json"
    bk.Genome.random(2, seed=0).with_metadata(
        schedule=[{"entry": "eta_syn", "to": 0.0, "steps": 10}]).save_json(str(path))
    with pytest.raises(ValueError, match=r"schedule.*meta-training does not run"):
        tiny_run(tmp_path / "run", genome_init=str(path))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


# -- a resumed run must have the settings it was started with -------------------------------------
def test_resume_with_other_settings_names_every_difference(tmp_path):
    run = tmp_path / "run"
    tiny_run(run)
    settings = json.loads((run / "run_settings.json").read_text())
    assert settings["sizes"] == [2, 4, 2] and settings["species"] == 2
    with pytest.raises(ValueError, match=r"sizes: \[2, 4, 2\].*now \[2, 5, 2\]"):
        tiny_run(run, hidden_sizes=(5,))
    with pytest.raises(ValueError, match=r"learning_rate: .*; species: 2 in the checkpointed run, "
                                         r"now 3"):
        tiny_run(run, species=3, hyperparameters={"learning_rate": 0.1})
    results = tiny_run(run, num_steps=3)  # more steps: the same run, continued
    assert results["steps_done"] == 3


def test_model_dir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        tiny_run(path)


@pytest.mark.parametrize("name,value", [("num_steps", -5), ("k", 1), ("species", 2.5),
                                        ("batch_size", True)])
def test_meta_train_integer_settings(tmp_path, name, value):
    with pytest.raises(ValueError, match=rf"(Objective|Schedule).{name} must be an int >= \d; "
                                         "got"):
        tiny_run(tmp_path / "run", **{name: value})
    assert not (tmp_path / "run").exists()


# -- the CLI prints one line for every configuration error ----------------------------------------
CLI_CASES = {
    "negative_steps": (["--gin_param=fast/Schedule.num_steps = -5"], "num_steps must be an int"),
    "overridden_by_every_stage": (["--gin_param=Schedule.num_steps = 100"],
                                  "Schedule.num_steps would be ignored"),
    "bad_later_stage": (["--gin_param=long/CMAESTrainer.population_size = 0"],
                        "population_size must be an int"),
    "k_one": (["--gin_param=Objective.k = 1"], "Objective.k must be an int >= 2"),
    "unknown_dataset": (["--gin_param=Task.dataset = 'no_such_task'"], "no_such_task"),
    "bad_config_value": (["--gin_param=backprop_config.norm_epsilon = -1.0"],
                         "BlurConfig.norm_epsilon=-1.0"),
    "ignored_config": (["--gin_param=BlurConfig.norm_epsilon = 0.01"],
                       "BlurConfig.norm_epsilon would be ignored: this configuration's "
                       "Objective.blur_config is @backprop_config(); bind "
                       "backprop_config.norm_epsilon instead."),
    "ignored_backprop_config": ([f"--gin_file={os.path.join(REPO, 'gin', 'general.gin')}",
                                 "--gin_param=backprop_config.activation_norm = False"],
                                "backprop_config.activation_norm would be ignored: this "
                                "configuration's Objective.blur_config is @BlurConfig()"),
    "model_dir_is_file": (["--model_dir={file}"], "is a file"),
    "unknown_binding": (["--gin_param=meta_train.no_such_option = 3"], "no_such_option"),
}


def test_cli_configuration_errors_are_one_line(tmp_path):
    """train/meta.py's checks, in this process (its one line on stderr from a real process:
    tests/test_cli_errors.py)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for name, (args, expected) in CLI_CASES.items():
        args = [a.format(file=afile) for a in args]
        if not any(a.startswith("--model_dir") for a in args):
            args.append(f"--model_dir={tmp_path / name}")
        helpers.cli_one_line(helpers.run_meta_cli(*args), expected)
        assert not list((tmp_path / name).rglob("checkpoints")), name  # nothing trained


# -- the final comparison's task must fit the run's network ---------------------------------------
def test_final_eval_task_must_fit_the_network(tmp_path):
    with pytest.raises(ValueError, match=r"final_eval_task must be None .* or a blur_keras"):
        tiny_run(tmp_path / "run", final_eval_task="two_moons")
    with pytest.raises(ValueError, match=r"final_eval_task mnist_5k 10x10.* has 100 features "
                                         r"and 10 classes; the run's network \(2, 4, 2\)"):
        tiny_run(tmp_path / "run", final_eval_task=preset_task("mnist_5k_10x10"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


# -- the parts of a run check their fields when they are built ------------------------------------
@pytest.mark.parametrize("build, words", [
    (lambda p: p.Objective(), "Objective.task must be a blur_keras.data Task or Mixture; got None."),
    (lambda p: p.Objective(task=preset_task("and"), blur_config="norm"),
     "Objective.blur_config must be a BlurConfig"),
    (lambda p: p.Objective(task=preset_task("and"), loss="hinge"), "Objective.loss='hinge'"),
    (lambda p: p.Objective(task=preset_task("and"), recompute=-1),
     "Objective.recompute must be an int >= 0"),
    (lambda p: p.Start(genome_init="random.txt"), "Start.genome_init='random.txt'; expected"),
    (lambda p: p.Start(genome_values=[1.0]), "Start.genome_values must be None or a dict"),
    (lambda p: p.Schedule(sized_for="gpu"), "Schedule.sized_for='gpu'; expected None or 'tpu'."),
    (lambda p: p.Schedule(stop_after=0), "Schedule.stop_after must be an int >= 1"),
    (lambda p: p.Schedule(eval_replicas=0), "Schedule.eval_replicas must be an int >= 1"),
    (lambda p: p.Report(final_values=[1.0]), "Report.final_values must be None or a dict"),
    (lambda p: p.Report(final_eval_examples=0), "Report.final_eval_examples must be an int >= 1"),
])
def test_parts_check_their_fields_when_built(build, words):
    from blur_keras.meta.run import parts

    with pytest.raises(ValueError) as err:
        build(parts)
    assert str(err.value).splitlines()[0].startswith(words)  # (gin adds where it was built)


def test_meta_train_takes_parts_of_their_own_type(tmp_path):
    from blur_keras.meta.run.experiment import Schedule

    with pytest.raises(ValueError, match=r"^meta_train.objective must be of type Objective; got "):
        meta_train(str(tmp_path / "run"), Schedule())
    assert not (tmp_path / "run").exists()
