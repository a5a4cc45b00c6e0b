"""A whole meta-training run, composed of parts:
``meta_train(model_dir, objective, start, outer, schedule, report)``.

The parts (``blur_keras.meta.run.parts``) are small frozen dataclasses and gin configurables:
``Objective`` (task, network, meta-loss, curriculum, species), ``Start`` (the start genome),
``Outer`` (the outer trainer class, whose hyperparameters are its own gin bindings),
``Schedule`` (meta-steps, checkpoints, logs, validation, seed) and ``Report`` (the final
comparison, the SavedModel). A part not given is built from its gin bindings in the current
scope. The run itself is made of the start genome (``start``), the outer trainer
(``GradientTrainer``, per-species Adam; ``CMAESTrainer``; any registered other) following the
curriculum; checkpoints and resumption (``checkpoint``), the run log (``log``: metrics.jsonl,
TensorBoard, progress line), validation and best-species selection (``validation``); at the
end the result genome and SavedModel (``result``) and the final report (``report``: the
evaluation suite, ``blur_keras.evaluation.suite``, on the transfer tasks bound to
``evaluate_suite.tasks``, default: the run's own task), written to ``suite/``.
``meta_train.stages`` makes a run a chain of stages (``blur_keras.meta.run.stages``).

Files under ``model_dir``: ``checkpoints/`` (resumable), ``metrics.jsonl``
(one line per meta-step), ``eval.jsonl`` (validation), ``tensorboard/``,
``genome.json``, ``genome_population.json``, ``saved_model/``,
``results.json``, ``operative_config.gin``, ``run_settings.json`` (each written whole,
``blur_keras.files``), and ``run.lock`` while a process runs it (``lock``).
"""

import contextlib
import dataclasses
import os

import gin
import numpy as np
import tensorflow as tf
from absl import logging

import blur_keras.evaluation.suite  # noqa: F401  (registers evaluate_suite: the final transfer suite)
import blur_keras.meta.outer.cma_es  # noqa: F401  (registers CMAESTrainer, Outer.trainer = "cma")
import blur_keras.meta.outer.gradient  # noqa: F401  (registers GradientTrainer, "adam")
from blur_keras.core.config import BlurConfig, backprop_config
from blur_keras.evaluation.plots import plot_run
from blur_keras.files import write_atomic, write_json
from blur_keras.meta.objective.chain import describe
from blur_keras.meta.outer.base import build_trainer
from blur_keras.meta.outer.strategy import describe_strategy, is_tpu
from blur_keras.meta.run import chief
from blur_keras.meta.run.checkpoint import (check_resumed_settings, checkpoint_candidates,
                                            open_run, run_settings)
from blur_keras.meta.run.checks import check_model_dir, first_task
from blur_keras.meta.run.curriculum import Curriculum
from blur_keras.meta.run.lock import RunDirLock
from blur_keras.meta.run.log import RunLog
from blur_keras.meta.run.loop import MetaTrainingDiverged, train
from blur_keras.meta.run.parts import Objective, Outer, Report, Run, Schedule, Start
from blur_keras.meta.run.report import judge_file, run_comparison
from blur_keras.meta.run.result import finished_results, jsonable, provenance, write_result
from blur_keras.meta.run.stages import run_stages
from blur_keras.meta.run.start import make_start_genome, start_values
from blur_keras.meta.run.validation import Validation

__all__ = ["Curriculum", "MetaTrainingDiverged", "Objective", "Outer", "Report", "Run",
           "Schedule", "Start", "make_start_genome", "meta_train", "prepare", "run_one"]

GIN_MODULE = "blur_keras.meta"
PARTS = {"objective": Objective, "start": Start, "outer": Outer, "schedule": Schedule,
         "report": Report}

for _configurable, _name in ((BlurConfig, "BlurConfig"), (backprop_config, "backprop_config")):
    try:
        gin.external_configurable(_configurable, name=_name, module="blur_keras")
    except ValueError:  # registered elsewhere already
        pass


@gin.configurable(module=GIN_MODULE, denylist=["model_dir", "strategy"])
def meta_train(model_dir, objective=None, start=None, outer=None, schedule=None, report=None, *,
               stages=(), strategy=None):
    """Meta-train a BLUR genome into ``model_dir`` (see the module docstring); returns a
    results dict.

    Args:
      objective, start, outer, schedule, report: the run's parts (``Objective``, ``Start``,
        ``Outer``, ``Schedule``, ``Report``); each one not given is built from its gin
        bindings (``Schedule.num_steps = 200``).
      stages: gin scope names; when given, the run is a chain of stages, one run per scope,
        each starting from the previous stage's genome (``blur_keras.meta.run.stages``): scoped
        bindings (``fast/Schedule.num_steps = 1000``) hold for one stage; parts given here for
        every stage.
      strategy: a ``tf.distribute`` strategy (default: the current one). Under several workers
        only the chief writes ``model_dir`` (``chief``).
    """
    parts = dict(objective=objective, start=start, outer=outer, schedule=schedule, report=report)
    if stages:
        return run_stages(run_one, model_dir, stages, parts, strategy)
    return run_one(model_dir, parts, strategy)


def prepare(model_dir, parts=None, strategy=None, changes=None):
    """``(Run, start genome, outer trainer)``: the parts (each one not in ``parts`` built from
    gin; ``changes``: ``{part: {field: value}}`` replaced), checked, before anything is
    written."""
    built = {}
    for name, cls in PARTS.items():
        part = (parts or {}).get(name)
        part = cls() if part is None else part
        if not isinstance(part, cls):
            raise ValueError(f"meta_train.{name} must be of type {cls.__name__}; got {part!r}.")
        built[name] = dataclasses.replace(part, **(changes or {}).get(name, {}))
    run = Run(model_dir, strategy=strategy or tf.distribute.get_strategy(), **built)
    if run.report.final_values or run.report.final_schedule:
        raise ValueError("Report.final_values and Report.final_schedule edit the final genome "
                         "of a run in stages; this run has no meta_train.stages.")
    check_model_dir(model_dir)
    run.report.check_task(run.sizes)
    return (run, *_start(run))


def run_one(model_dir, parts=None, strategy=None, changes=None, *, dry_run=False, judge=None):
    """One run (``meta_train`` without stages; ``prepare``'s arguments). ``dry_run``: check
    the settings, build the start genome and the trainer, return the start genome and write
    nothing; ``judge`` (a genome file): return its final comparison (``judge_file``)."""
    run, start_genome, trainer = prepare(model_dir, parts, strategy, changes)
    if dry_run or judge:
        return start_genome if dry_run else judge_file(run, judge, start_values(start_genome))
    lock = RunDirLock(model_dir) if chief.is_chief(run.strategy) else contextlib.nullcontext()
    with lock:
        return _run(run, trainer, start_genome)


def _run(run, trainer, start_genome):
    """Train from the last checkpoint on; at the end write the result files (``_finish``)."""
    model_dir, ckpt, run_state, start = _open(run, trainer)
    schedule = run.schedule
    finished = finished_results(model_dir, start, schedule.num_steps)
    if finished is not None:  # a finished run returns the results it wrote
        return finished
    train_stream, validation = _streams(run, trainer)
    end = schedule.num_steps if schedule.stop_after is None else min(
        schedule.num_steps, start + int(schedule.stop_after))
    with RunLog(model_dir, start, schedule.num_steps) as log:
        last_val = train(trainer, run.objective.curriculum, train_stream, validation, run_state,
                         ckpt, log, start=start, end=end, num_steps=schedule.num_steps,
                         every=schedule.every, max_nonfinite=schedule.max_nonfinite_in_a_row)
    results = {"model_dir": model_dir, "steps_done": int(trainer.step.numpy()),
               "num_steps": schedule.num_steps}
    if results["steps_done"] < schedule.num_steps:
        logging.info("Stopped after %d of %d meta-steps (checkpointed).", results["steps_done"],
                     schedule.num_steps)
        return results
    if last_val is None:
        last_val, _ = validation(trainer, schedule.num_steps - 1)
    results.update(_finish(run, model_dir, trainer, last_val, start_values(start_genome)))
    write_json(os.path.join(model_dir, "results.json"), results, indent=2)
    if run.report.plots:
        logging.info("pictures: %s", ", ".join(plot_run(model_dir)))
    return results


def _start(run):
    """The start genome and the outer trainer built on it (trainer checks included)."""
    objective, schedule, factory = run.objective, run.schedule, run.outer.trainer
    start_genome = run.start.genome(objective.k, factory.start_species(objective.species),
                                    run.num_layers)
    trainer = build_trainer(factory, start_genome, objective.blur_config, run.sizes, dict(
        seed=schedule.seed, strategy=run.strategy, jit_compile=schedule.jit_compile,
        init_scale=objective.init_scale, logit_scale=objective.logit_scale,
        recompute=objective.recompute), run.outer.hyperparameters, objective.loss)
    trainer.check_replicas(objective.replicas)
    if schedule.sized_for == "tpu" and not is_tpu(run.strategy):
        logging.warning("This configuration is sized for a TPU, but no TPU is in use: running "
                        "it on %s instead (it may be slow).", describe_strategy(run.strategy))
    logging.info("Meta-training %s genome(s) on %s; network %s, k=%d; strategy: %s",
                 trainer.species, first_task(objective.task).describe(), run.sizes, objective.k,
                 describe_strategy(run.strategy))
    return start_genome, trainer


def _open(run, trainer):
    """Check a resumed run's settings, open (or restore) its checkpoint, write its operative
    config; returns ``(write dir, checkpoint, run state, start step)``."""
    run_dir, model_dir = run.model_dir, chief.write_dir(run.model_dir, run.strategy)
    settings = _settings(run, trainer)
    if checkpoint_candidates(os.path.join(run_dir, "checkpoints")):
        check_resumed_settings(run_dir, settings)
    os.makedirs(model_dir, exist_ok=True)
    ckpt, run_state, start = open_run(run_dir, model_dir, trainer, seed=run.schedule.seed,
                                      settings=settings,
                                      unroll=run.objective.curriculum.unroll_at(0),
                                      keep=run.schedule.keep_checkpoints)
    if start < run.schedule.num_steps:
        write_atomic(os.path.join(model_dir, "operative_config.gin"), gin.operative_config_str())
    return model_dir, ckpt, run_state, start


def _settings(run, trainer):
    """What ``run_settings.json`` holds: the run's settings and the trainer's."""
    parts = ((run.objective, ("task", "k", "blur_config", "species", "replicas", "batch_size",
                              "query_batch_size", "curriculum", "recompute", "init_scale",
                              "logit_scale")),
             (run.start, ("genome_init", "genome_seed", "transform_std", "synapse_update",
                          "genome_values", "backprop_learning_rate", "per_layer")),
             (run.schedule, ("seed", "jit_compile")))
    settings = {n: getattr(part, n) for part, names in parts for n in names}
    return run_settings(outer=trainer.name, sizes=describe(run.sizes), **settings,
                        **trainer.settings())


def _streams(run, trainer):
    """``(train_stream(T, phase, step), Validation)`` over the run's seeded task streams."""
    from blur_keras.data import make_task_stream

    objective, seed = run.objective, run.schedule.seed

    def task_stream(t, phase, species, replicas, seed, skip, block=None):
        """The seeded stream from meta-step ``skip`` on (constant-time resumption)."""
        return make_task_stream(
            objective.curriculum.task_of_phase(phase, objective.task), species=species,
            replicas=replicas, batch_size=objective.batch_size, unroll_steps=t, seed=seed,
            query_batch_size=objective.query_batch_size or objective.batch_size,
            start_step=skip, block=block)

    def train_stream(t, phase, step):
        return trainer.training_stream(lambda species, block=None: task_stream(
            t, phase, species, objective.replicas, seed, step, block))

    return train_stream, Validation(lambda *a: iter(task_stream(*a)), objective.curriculum,
                                    run.schedule.eval_replicas, seed)


def _finish(run, model_dir, trainer, last_val, start):
    """Result files (genome, population, SavedModel) and the final report; the results."""
    objective, begin, num_steps = run.objective, run.start, run.schedule.num_steps
    target_t = objective.curriculum.unroll_at(num_steps - 1)
    origin = provenance(first_task(objective.task), run.sizes, target_t, num_steps,
                        run.schedule.seed, begin.genome_init, begin.genome_seed, trainer.name,
                        trainer.species, model_dir, start={
                            "transform_std": begin.transform_std,
                            "synapse_update": begin.synapse_update,
                            "genome_values": jsonable(begin.genome_values),
                            "backprop_learning_rate": begin.backprop_learning_rate})
    best, best_values, files = write_result(
        model_dir, trainer, last_val, k=objective.k, num_layers=run.num_layers,
        config=objective.blur_config, sizes=run.sizes, init_scale=objective.init_scale,
        logit_scale=objective.logit_scale, per_layer=begin.per_layer, provenance=origin,
        export=run.report.export)
    results = dict(best_species=best, val_accuracy=np.asarray(last_val).tolist(),
                   target_unroll=target_t, **files)
    if run.report.final_eval:
        results["comparison"] = run_comparison(run, best_values, start,
                                               os.path.join(model_dir, "suite"), origin)
    return results
