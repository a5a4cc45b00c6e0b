"""The outer-trainer interface: registry, gin selection, hyperparameter hand-over, and a
third optimiser (``SimpleESTrainer``) run by ``meta_train`` without any change to it."""

import json

import gin
import numpy as np
import pytest

from blur_keras import BlurConfig, Genome
from blur_keras.data import preset_task
from blur_keras.meta.run import experiment  # noqa: F401  (registers the trainers)
from blur_keras.meta.outer.cma_es import CMAESTrainer
from blur_keras.meta.run.curriculum import Curriculum
from blur_keras.meta.outer.base import TRAINERS, OuterTrainer, build_trainer
from blur_keras.meta.run.parts import Outer
from blur_keras.meta.outer.simple_es import SimpleESTrainer
from blur_keras.meta.outer.gradient import GradientTrainer


class _Recorder(OuterTrainer):
    def __init__(self, genome, config, sizes, *, seed=0, learning_rate=1.0, sigma0=None):
        self.args = dict(seed=seed, learning_rate=learning_rate, sigma0=sigma0)


def test_registry_names_the_trainers():
    assert issubclass(TRAINERS["adam"], GradientTrainer)
    assert issubclass(TRAINERS["cma"], CMAESTrainer)
    assert issubclass(TRAINERS["es"], SimpleESTrainer)
    assert Outer("cma").trainer is TRAINERS["cma"]
    assert Outer(CMAESTrainer).trainer is TRAINERS["cma"]  # the class: its gin configurable
    assert Outer(_Recorder).trainer is _Recorder
    with pytest.raises(ValueError, match="Outer.trainer='sgd'; expected one of"):
        Outer("sgd")
    with pytest.raises(ValueError, match="Outer.trainer must be an OuterTrainer class"):
        Outer(len)


def test_outer_hyperparameters_are_the_trainers_own():
    t = build_trainer(Outer(_Recorder).trainer, None, None, (2, 2), {"seed": 3},
                      Outer(_Recorder, {"learning_rate": 0.5}).hyperparameters)
    assert t.args == {"seed": 3, "learning_rate": 0.5, "sigma0": None}
    with pytest.raises(ValueError, match=r"_Recorder has no hyperparameter 'population_size'; "
                                         r"it has \['learning_rate', 'sigma0'\]"):
        Outer(_Recorder, {"population_size": 7})
    with pytest.raises(ValueError, match="has no hyperparameter 'seed'"):  # Schedule.seed's
        Outer(_Recorder, {"seed": 7})
    with pytest.raises(ValueError, match="Objective.loss='mse': _Recorder meta-trains on 'xent'"):
        build_trainer(_Recorder, None, None, (2, 2), {}, loss="mse")


def test_what_the_run_hands_a_trainer_is_not_bound_on_its_class():
    gin.clear_config()
    try:
        with pytest.raises(ValueError, match="loss"):
            gin.parse_config("GradientTrainer.loss = 'mse'")  # Objective.loss
    finally:
        gin.clear_config()


def test_start_species_and_data_species():
    assert GradientTrainer.start_species(8) == 8 and CMAESTrainer.start_species(8) is None
    genome = Genome.random(2, seed=0)
    cma = CMAESTrainer(genome, BlurConfig(), (2, 3, 2), population_size=5, jit_compile=False)
    assert cma.data_species == 1 and cma.species == 5
    values = cma.genome_values()
    assert all(v.shape[0] == 1 for v in values.values())
    best, result = cma.result(np.array([0.3]))
    assert best == 0 and set(result) == set(values)


def test_gin_binds_the_trainer_and_its_hyperparameters():
    gin.clear_config()
    try:
        gin.parse_config(["Outer.trainer = @GradientTrainer",
                          "GradientTrainer.learning_rate = 0.02"])
        factory = gin.query_parameter("Outer.trainer").scoped_configurable_fn
        genome = Genome.random(2, seed=0, species=2)
        trainer = build_trainer(factory, genome, BlurConfig(), (2, 3, 2), {"jit_compile": False})
        assert trainer.hparams["learning_rate"] == 0.02 and trainer.name == "adam"
    finally:
        gin.clear_config()


def test_a_third_optimiser_runs_through_meta_train(tmp_path):
    results = experiment.meta_train(
        str(tmp_path), experiment.Objective(task=preset_task("and"), hidden_sizes=(4,),
                                            replicas=2, batch_size=8,
                                            curriculum=Curriculum(unroll_start=2)),
        outer=experiment.Outer(SimpleESTrainer, {"population_size": 6}),
        schedule=experiment.Schedule(num_steps=4, checkpoint_every=2, eval_every=2,
                                     jit_compile=False),
        report=experiment.Report(final_eval=False, export=False))
    assert results["steps_done"] == 4 and results["best_species"] == 0
    learned = json.loads((tmp_path / "genome.json").read_text())
    assert learned["provenance"]["outer"] == "es"
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [len(l["accuracy"]) for l in lines] == [6] * 4
