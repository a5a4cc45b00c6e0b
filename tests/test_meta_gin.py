"""The gin files: every one parses and builds its task; small versions of them run."""

import glob
import json
import logging
import os

import gin
import pytest

import blur_keras as bk

import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(glob.glob(os.path.join(REPO, "gin", "*.gin")))


CLI = helpers.meta_cli()

TINY = ["Objective.species = 2", "Objective.replicas = 2", "Objective.batch_size = 8",
        "Objective.hidden_sizes = (4,)", "Schedule.num_steps = 3", "Objective.k = 2",
        "Curriculum.unroll_start = 2", "Curriculum.unroll_delta = 0",
        "Objective.recompute = 0", "Schedule.jit_compile = False",
        "Report.final_eval = False", "Report.export = False", "Report.plots = False",
        "Schedule.checkpoint_every = 3", "Schedule.eval_every = 3"]


def test_all_required_gin_files_exist():
    names = {os.path.basename(f) for f in GIN_FILES}
    assert {"default.gin", "tpu_fashion.gin", "mnist_10x10.gin", "cma_mnist14.gin",
            "toy2d.gin"} <= names


def _stages():
    """The gin scopes of a staged configuration (``meta_train.stages``), or ``[""]``."""
    try:
        return [s + "/" for s in gin.query_parameter("meta_train.stages")]
    except ValueError:
        return [""]


def tiny(path):
    """TINY, for every stage of the gin file at ``path`` (scoped bindings beat unscoped ones)."""
    CLI.parse_gin([path], [])
    try:
        stages = _stages()
    finally:
        gin.clear_config()
    if stages == [""]:
        return list(TINY)
    scoped = [s + b for s in stages for b in TINY if "stages" not in b]
    return TINY + scoped + [s + "CMAESTrainer.population_size = 4" for s in stages]


def _binding(scoped_name):
    """The value gin binds to ``scoped_name`` (``'stage/Configurable.param'``): the scoped
    binding, else the unscoped one, as gin resolves it inside the stage's scope."""
    try:
        return gin.query_parameter(scoped_name)
    except ValueError:
        return gin.query_parameter(scoped_name.rsplit("/", 1)[-1])


@pytest.mark.parametrize("path", GIN_FILES, ids=os.path.basename)
def test_gin_file_parses_and_names_a_task(path):
    from blur_keras.data import Mixture, Task

    CLI.parse_gin([path], [])
    try:
        task = gin.query_parameter("Objective.task").scoped_configurable_fn()
        assert isinstance(task, (Task, Mixture))
        for stage in _stages():
            assert _binding(f"{stage}Schedule.num_steps") >= 20, stage
    finally:
        gin.clear_config()


def _run_recipe(name, model_dir):
    from blur_keras.meta.run.experiment import meta_train

    path = os.path.join(REPO, "gin", name)
    CLI.parse_gin([path], tiny(path) + ["Objective.task = @preset_task()",
                                        "preset_task.name = 'mnist_5k_10x10'"])
    try:
        stages = [s.rstrip("/") for s in _stages()]
        return stages, meta_train(str(model_dir))
    finally:
        gin.clear_config()


# gin/parts/tpu.gin over a recipe: parsed above (it needs TFDS's full MNIST). default.gin is
# softmax_residual's recipe: two stages from the softmax backprop genome, then a schedule that
# ramps every learned entry back to its start. sgd_residual_scheduled.gin is the recipe that
# sgd_residual_robust.gin and sgd_residual_deep.gin build on
@pytest.mark.parametrize("name", ["general.gin", "default.gin", "sgd_residual_scheduled.gin"])
def test_shipped_recipe_runs_a_few_meta_steps(tmp_path, name):
    """The recipes of the shipped genomes run end to end, each stage from the previous one."""
    stages, results = _run_recipe(name, tmp_path)
    assert len(stages) >= 2 and [r["steps_done"] for r in results["stages"]] == [3] * len(stages)
    final = json.load(open(tmp_path / "genome.json"))
    assert [s["stage"] for s in final["provenance"]["stages"]] == stages
    if name == "general.gin":
        return
    assert final["provenance"]["stages"][0]["genome_init"] == "backprop"
    last = json.load(open(tmp_path / stages[-1] / "genome.json"))
    assert final["values"] == last["values"] and "final_values" not in final["provenance"]
    if name == "default.gin":  # every learned entry ramps back to the start it was learned from
        start = bk.Genome.backprop(0.3).numpy()
        assert final["config"]["feedback"] == "softmax" and len(final["schedule"]) == 13
        for ramp in final["schedule"]:
            want = start[ramp["entry"]] if ramp["index"] is None else \
                start[ramp["entry"]][tuple(ramp["index"])]
            assert ramp["to"] == pytest.approx(float(want)) and ramp["start"] == 100
        return
    assert [s["task"] for s in final["provenance"]["stages"]] == [
        "mnist_5k 10x10 (crop 20)"] * 3
    assert final["schedule"] == [{"entry": "pre", "index": [1, 0], "to": 0.0, "steps": 1000}]


@pytest.mark.parametrize("name", ["general", "sgd_residual_robust", "sgd_residual_deep",
                                  "softmax_residual"])
def test_recipe_config_is_the_shipped_genomes_config(name):
    """gin/<name>.gin builds the BlurConfig its shipped genome file records."""
    from blur_keras import Genome
    CLI.parse_gin([os.path.join(REPO, "gin", name + ".gin")], [])
    try:
        config = gin.query_parameter("Objective.blur_config").scoped_configurable_fn()
    finally:
        gin.clear_config()
    assert config == Genome.pretrained(name).config


def test_backprop_config_changes_and_rejects_unknown_fields():
    from blur_keras.core.config import BlurConfig, backprop_config

    assert backprop_config(activation_norm=True) == BlurConfig.backprop().replace(
        activation_norm=True)
    assert backprop_config(batch_reduction="mean").symmetric
    with pytest.raises(ValueError, match="Unknown BlurConfig fields \\['activation_nrom'\\]"):
        backprop_config(activation_nrom=True)


@pytest.mark.parametrize("name", ["default", "general", "sgd_residual", "sgd_residual_scheduled",
                                  "sgd_residual_robust", "softmax_residual"])
def test_packaged_recipes_are_linked_from_gin_folder(name):
    import importlib.resources

    packaged = importlib.resources.files("blur_keras.meta") / (name + ".gin")
    assert os.path.realpath(os.path.join(REPO, "gin", name + ".gin")) == os.path.realpath(
        str(packaged))


_RECIPE_KEYS = ("fast/Schedule.num_steps", "meta_train.stages", "fast/Start.genome_init",
                "fast/GradientTrainer.residual_penalty", "long/Schedule.num_steps",
                "longer/Curriculum.unroll_start", "Report.final_schedule")


def test_default_is_the_softmax_residual_recipe_and_parses_anywhere(tmp_path, monkeypatch):
    """No --gin_file: the packaged default, whose includes resolve beside it (not in the
    working directory), is gin/softmax_residual.gin's recipe."""
    keys = ("fast/Schedule.num_steps", "meta_train.stages", "Start.genome_init",
            "fast/GradientTrainer.residual_penalty", "long/Curriculum.unroll_start",
            "Report.final_schedule", "backprop_config.feedback")
    monkeypatch.chdir(tmp_path)
    CLI.parse_gin(None, ["fast/Schedule.num_steps = 3"])
    try:
        default = {name: gin.query_parameter(name) for name in keys}
        assert default["fast/Schedule.num_steps"] == 3
        assert default["meta_train.stages"] == ["fast", "long"]
        assert default["Start.genome_init"] == "backprop"
        assert default["backprop_config.feedback"] == "softmax"
    finally:
        gin.clear_config()
    CLI.parse_gin([os.path.join(REPO, "gin", "softmax_residual.gin")],
                  ["fast/Schedule.num_steps = 3"])
    try:
        assert default == {name: gin.query_parameter(name) for name in keys}
    finally:
        gin.clear_config()


def _files(name):
    """``gin/<recipe>.gin`` and, for ``"<recipe>+<part>"``, ``gin/parts/<part>.gin`` over it."""
    recipe, *parts = name.split("+")
    return ([os.path.join(REPO, "gin", recipe + ".gin")]
            + [os.path.join(REPO, "gin", "parts", part + ".gin") for part in parts])


def _recipe(name, keys=_RECIPE_KEYS):
    """The values gin/<name>.gin (``_files``) binds to ``keys``."""
    CLI.parse_gin(_files(name), [])
    try:
        return {key: gin.query_parameter(key) for key in keys}
    finally:
        gin.clear_config()


def _stage_tasks(name):
    """Per stage of gin/<name>.gin: the descriptions of the tasks it trains on, and for the
    last stage also those of its final comparison's task."""
    def describe(binding):
        task = gin.query_parameter(binding).scoped_configurable_fn()
        return [t.describe() for t in getattr(task, "tasks", [task])]

    CLI.parse_gin(_files(name), [])
    try:
        out = {}
        for stage in ("fast", "long", "longer"):
            with gin.config_scope(stage):
                out[stage] = describe("Objective.task")
        with gin.config_scope("longer"):
            out["judge"] = describe("longer/Report.final_eval_task")
        return out
    finally:
        gin.clear_config()


@pytest.mark.parametrize("name, recipe", [("sgd_residual_robust", "sgd_residual_scheduled"),
                                          ("sgd_residual_robust+tpu", "sgd_residual_scheduled+tpu")])
def test_robust_recipe_is_the_scheduled_one_with_a_pull_and_label_noise(name, recipe):
    """sgd_residual_robust (and its TPU variant): the scheduled recipe with residual penalty
    0.01; its CMA-ES stages train on 30% noisy labels, its final comparison on clean ones."""
    keys = _RECIPE_KEYS + ("Objective.hidden_sizes", "fast/Curriculum.unroll_start")
    robust, scheduled = _recipe(name, keys), _recipe(recipe, keys)
    assert robust.pop("fast/GradientTrainer.residual_penalty") == 0.01
    assert scheduled.pop("fast/GradientTrainer.residual_penalty") == 1e-4
    assert robust == scheduled
    tasks = _stage_tasks(name)
    assert tasks["judge"] == tasks["fast"] and not any("noise" in t for t in tasks["fast"])
    assert tasks["long"] == tasks["longer"] == [t + " label noise 0.3" for t in tasks["fast"]]


def test_deep_recipe_is_the_scheduled_one_through_two_hidden_layers():
    """gin/sgd_residual_deep.gin changes only the hidden sizes of the recipe it follows."""
    deep_keys = _recipe("sgd_residual_deep", _RECIPE_KEYS + ("Objective.hidden_sizes",))
    assert deep_keys.pop("Objective.hidden_sizes") == (32, 32)
    assert deep_keys == _recipe("sgd_residual_scheduled")


def test_toy2d_runs_small(tmp_path):
    from blur_keras.meta.run.experiment import meta_train

    CLI.parse_gin([os.path.join(REPO, "gin", "toy2d.gin")], TINY)
    try:
        results = meta_train(str(tmp_path))
    finally:
        gin.clear_config()
    assert results["steps_done"] == 3
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert len(lines) == 3 and len(lines[0]["loss"]) == 2


def test_tpu_config_without_tpu_says_so_and_runs(tmp_path, caplog):
    from blur_keras.data import load_images
    from blur_keras.meta.run.experiment import meta_train

    try:
        load_images("fashion_mnist", "train")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not available here: {err}")
    CLI.parse_gin([os.path.join(REPO, "gin", "tpu_fashion.gin")], TINY)
    try:
        with caplog.at_level(logging.WARNING):
            results = meta_train(str(tmp_path))
    finally:
        gin.clear_config()
    assert "sized for a TPU" in caplog.text
    assert results["steps_done"] == 3


def test_cma_config_runs_small(tmp_path):
    from blur_keras.meta.run.experiment import meta_train


    def run_small_cma(final_eval):
        CLI.parse_gin([os.path.join(REPO, "gin", "cma_mnist14.gin")],
                      TINY + ["Objective.task = @preset_task()", "preset_task.name = 'two_moons'",
                              "CMAESTrainer.population_size = 6", "Objective.query_batch_size = 32",
                              f"Report.final_eval = {final_eval}"])
        try:
            return meta_train(str(tmp_path))
        finally:
            gin.clear_config()

    results = run_small_cma(True)
    assert results["steps_done"] == 3
    assert 0.0 <= results["comparison"]["learned"] <= 1.0
    assert os.path.exists(tmp_path / "genome.json")
    # resuming a finished CMA-ES run restores its state and does nothing more
    again = run_small_cma(False)
    assert again["steps_done"] == 3


def test_a_relative_gin_file_parses_without_error_lines(caplog, monkeypatch):
    """gin tries a relative path under each search folder first and logs an ERROR for each miss;
    train/meta.py hands it absolute paths."""
    monkeypatch.chdir(REPO)
    with caplog.at_level("ERROR"):
        CLI.parse_gin([os.path.join("gin", "sgd_residual_deep.gin")], [])
    gin.clear_config()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_the_cli_stop_after_binds_the_schedule():
    """``train/meta.py --stop_after N`` is ``Schedule.stop_after = N`` for every stage."""
    from blur_keras.meta.run.parts import Schedule

    CLI.parse_gin([os.path.join(REPO, "gin", "general.gin")], [], stop_after=2)
    try:
        assert gin.query_parameter("Schedule.stop_after") == 2
        with gin.config_scope("long"):
            assert Schedule().stop_after == 2 and Schedule().num_steps == 80
    finally:
        gin.clear_config()
