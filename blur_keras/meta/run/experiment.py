"""A whole meta-training run, configured by gin: ``meta_train(model_dir, ...)``.

The run is a composition of named parts: the start genome (``start``), an outer
trainer (``outer``: ``GradientTrainer``, per-species Adam; ``CMAESTrainer``; any
registered other) following the ``curriculum``; checkpoints and resumption
(``checkpoint``), the run log (``runlog``: metrics.jsonl, TensorBoard, progress
line), validation and best-species selection (``validation``); at the end the
result genome and SavedModel (``result``) and the final report (``report``: the
evaluation suite, ``blur_keras.evaluation.suite``, on the transfer tasks bound to
``evaluate_suite.tasks``, default: the run's own task), written to ``suite/``.

Files under ``model_dir``: ``checkpoints/`` (resumable), ``metrics.jsonl``
(one line per meta-step), ``eval.jsonl`` (validation), ``tensorboard/``,
``genome.json``, ``genome_population.json``, ``saved_model/``,
``results.json``, ``operative_config.gin``, ``run_settings.json`` (each written whole,
``blur_keras.files``), and ``run.lock`` while a process runs it (``lock``).
"""

import contextlib
import os
import types

import gin
import numpy as np
import tensorflow as tf
from absl import logging

import blur_keras.evaluation.suite  # noqa: F401  (registers evaluate_suite: the final transfer suite)
import blur_keras.meta.outer.cma_es  # noqa: F401  (registers CMAESTrainer, outer = "cma")
import blur_keras.meta.outer.gradient  # noqa: F401  (registers GradientTrainer, outer = "adam")
from blur_keras.core.config import BlurConfig, backprop_config
from blur_keras.files import write_atomic, write_json
from blur_keras.meta.run import chief
from blur_keras.evaluation.baselines import DEFAULT_SGD_LEARNING_RATES
from blur_keras.meta.run.checkpoint import (check_resumed_settings, checkpoint_candidates,
                                            open_run, run_settings)
from blur_keras.meta.run.checks import check_run, first_task
from blur_keras.meta.run.curriculum import Curriculum
from blur_keras.meta.run.loop import MetaTrainingDiverged, train
from blur_keras.meta.outer.base import build_trainer, trainer_factory
from blur_keras.meta.run.report import judge_file, run_comparison
from blur_keras.meta.run.result import finished_results, jsonable, provenance, write_result
from blur_keras.meta.run.lock import RunDirLock
from blur_keras.meta.run.log import RunLog
from blur_keras.meta.run.stages import run_stages
from blur_keras.meta.run.start import make_start_genome, start_values
from blur_keras.meta.outer.strategy import describe_strategy, is_tpu
from blur_keras.meta.run.validation import Validation
from blur_keras.evaluation.plots import plot_run

__all__ = ["Curriculum", "meta_train", "MetaTrainingDiverged", "make_start_genome"]

GIN_MODULE = "blur_keras.meta"
# meta_train arguments handed to the trainer when it takes them (None: its own value)
TRAINER_SHORTHANDS = ("learning_rate", "clip_norm", "loss", "shard_axis", "trainable",
                      "population_size", "sigma0")

for _configurable, _name in ((BlurConfig, "BlurConfig"), (backprop_config, "backprop_config")):
    try:
        gin.external_configurable(_configurable, name=_name, module="blur_keras")
    except ValueError:  # registered elsewhere already
        pass


@gin.configurable(module=GIN_MODULE, denylist=["model_dir", "strategy", "judge"])
def meta_train(model_dir, *, task=gin.REQUIRED, hidden_sizes=(32,), k=2, blur_config=None,
               genome_init="random", genome_seed=0, transform_std=1.0, synapse_update=-1e-3,
               genome_values=None, backprop_learning_rate=0.1, per_layer=False, trainer=None,
               outer="adam", species=8, replicas=1, batch_size=128, query_batch_size=None,
               num_steps=1000, curriculum=None, recompute=0, init_scale=1.0, logit_scale=1.0,
               seed=0, checkpoint_every=100, keep_checkpoints=3, log_every=10, eval_every=100,
               eval_replicas=4, max_nonfinite_in_a_row=5, strategy=None, jit_compile=True,
               final_eval=True, final_eval_task=None, final_eval_replicas=8,
               final_eval_examples=2000, sgd_learning_rates=DEFAULT_SGD_LEARNING_RATES,
               export=True, sized_for=None, stop_after=None, learning_rate=None, clip_norm=None,
               loss=None, shard_axis=None, trainable=None, population_size=None, sigma0=None,
               stages=(), final_values=None, final_schedule=None, dry_run=False, judge=None):
    """Meta-train a BLUR genome (see the module docstring); returns a results dict.

    Args (the main ones; all bindable from gin as ``meta_train.<name>``):
      task: a ``blur_keras.data.Task`` or ``Mixture`` (phase 0 of the curriculum).
      hidden_sizes, k, blur_config: the network (input/output sizes come from the task).
      genome_init: ``"random"`` (the paper's random start, ``genome_seed``, ``transform_std``,
        ``synapse_update``), ``"backprop"`` (docs/spec.md §4, k=2) or a genome JSON file;
        ``genome_values`` overrides entries.
      trainer: the outer optimiser, an ``OuterTrainer`` class (``@GradientTrainer``,
        ``@CMAESTrainer``; its hyperparameters bound as ``GradientTrainer.learning_rate``);
        default: the one registered as ``outer`` (``"adam"`` or ``"cma"``).
      species: genomes side by side; replicas: synapse draws per species per meta-step.
      curriculum: a ``Curriculum`` (default: ``T = 10`` throughout); recompute: the
        gradient-checkpoint segment length for long unrolls (0: off).
      final_eval_task: the final comparison's task (default: ``task``; e.g. without label noise);
      max_nonfinite_in_a_row: stop when a species has had this many skipped steps in a row.
      sized_for: ``"tpu"`` marks a configuration sized for a TPU (a warning when there is none).
      stop_after: stop (checkpointed) after this many meta-steps of this invocation (tests).
      learning_rate, clip_norm, loss, shard_axis, trainable, population_size, sigma0: the
        trainer's own hyperparameters, handed to it when it takes them (None: default / gin).
      stages: gin scope names; when given, the run is a chain of stages, one ``meta_train``
        per scope, each starting from the previous stage's genome (``blur_keras.meta.run.stages``).
      final_values, final_schedule: with ``stages`` only: final genome edits (``meta.stages``).
      dry_run: check the settings and build the start genome and the trainer, then return
        the start genome without writing anything (a staged run checks every stage first);
        judge (a genome file; not from gin): return its final comparison (``judge_file``).
    Under several workers only the chief writes ``model_dir`` (``chief``).
    """
    if stages or final_values or final_schedule:  # final edits without stages: refused there
        return run_stages(meta_train, model_dir, stages, strategy=strategy, stop_after=stop_after,
                          final_values=final_values, final_schedule=final_schedule)
    run = types.SimpleNamespace(**locals())  # the run's arguments, for the parts below
    run.blur_config = blur_config if blur_config is not None else BlurConfig()
    run.curriculum = curriculum if curriculum is not None else Curriculum()
    run.sizes = check_run(model_dir, task, run.blur_config, run.curriculum, hidden_sizes, dict(
        species=species, replicas=replicas, batch_size=batch_size, num_steps=num_steps,
        checkpoint_every=checkpoint_every, k=k, log_every=log_every, eval_every=eval_every,
        population_size=1 if population_size is None else population_size), final_eval_task,
        dict(init_scale=init_scale, logit_scale=logit_scale))
    run.strategy = strategy or tf.distribute.get_strategy()
    run.num_layers = len(run.sizes) - 1 if per_layer else None
    start_genome, trainer = _start(run)
    if dry_run or judge:
        return start_genome if dry_run else judge_file(run, judge, start_values(start_genome))
    lock = RunDirLock(model_dir) if chief.is_chief(run.strategy) else contextlib.nullcontext()
    with lock:
        return _run(run, trainer, start_genome)


def _run(run, trainer, start_genome):
    """Train from the last checkpoint on; at the end write the result files (``_finish``)."""
    model_dir, ckpt, run_state, start = _open(run, trainer)
    finished = finished_results(model_dir, start, run.num_steps)
    if finished is not None:  # a finished run returns the results it wrote
        return finished
    train_stream, validation = _streams(run, trainer)
    end = run.num_steps if run.stop_after is None else min(run.num_steps,
                                                           start + int(run.stop_after))
    every = {"log": run.log_every, "eval": run.eval_every, "checkpoint": run.checkpoint_every}
    with RunLog(model_dir, start, run.num_steps) as log:
        last_val = train(trainer, run.curriculum, train_stream, validation, run_state, ckpt, log,
                         start=start, end=end, num_steps=run.num_steps, every=every,
                         max_nonfinite=run.max_nonfinite_in_a_row)
    results = {"model_dir": model_dir, "steps_done": int(trainer.step.numpy()),
               "num_steps": run.num_steps}
    if results["steps_done"] < run.num_steps:
        logging.info("Stopped after %d of %d meta-steps (checkpointed).", results["steps_done"],
                     run.num_steps)
        return results
    if last_val is None:
        last_val, _ = validation(trainer, run.num_steps - 1)
    results.update(_finish(run, model_dir, trainer, last_val, start_values(start_genome)))
    write_json(os.path.join(model_dir, "results.json"), results, indent=2)
    logging.info("pictures: %s", ", ".join(plot_run(model_dir)))
    return results


def _start(run):
    """The start genome and the outer trainer built on it (trainer checks included)."""
    factory = trainer_factory(run.trainer, run.outer)
    start_genome = make_start_genome(
        run.k, factory.start_species(run.species), run.genome_init, run.genome_seed,
        run.transform_std, run.synapse_update, run.genome_values, run.backprop_learning_rate,
        run.num_layers)
    options = {n: getattr(run, n) for n in TRAINER_SHORTHANDS}
    trainer = build_trainer(factory, start_genome, run.blur_config, run.sizes, dict(
        seed=run.seed, strategy=run.strategy, jit_compile=run.jit_compile,
        init_scale=run.init_scale, logit_scale=run.logit_scale, recompute=run.recompute), options)
    trainer.check_replicas(run.replicas)
    if run.sized_for == "tpu" and not is_tpu(run.strategy):
        logging.warning("This configuration is sized for a TPU, but no TPU is in use: running "
                        "it on %s instead (it may be slow).", describe_strategy(run.strategy))
    logging.info("Meta-training %s genome(s) on %s; network %s, k=%d; strategy: %s",
                 trainer.species, first_task(run.task).describe(), run.sizes, run.k,
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
    ckpt, run_state, start = open_run(run_dir, model_dir, trainer, seed=run.seed,
                                      settings=settings, unroll=run.curriculum.unroll_at(0),
                                      keep=run.keep_checkpoints)
    if start < run.num_steps:
        write_atomic(os.path.join(model_dir, "operative_config.gin"), gin.operative_config_str())
    return model_dir, ckpt, run_state, start


def _settings(run, trainer):
    """What ``run_settings.json`` holds: the run's settings and the trainer's."""
    names = ("task", "sizes", "k", "blur_config", "genome_init", "genome_seed", "transform_std",
             "synapse_update", "genome_values", "backprop_learning_rate", "per_layer", "species",
             "replicas", "batch_size", "query_batch_size", "curriculum", "recompute",
             "init_scale", "logit_scale", "seed", "jit_compile")
    return run_settings(outer=trainer.name, **{n: getattr(run, n) for n in names},
                        **trainer.settings())


def _streams(run, trainer):
    """``(train_stream(T, phase, step), Validation)`` over the run's seeded task streams."""
    from blur_keras.data import make_task_stream

    def task_stream(t, phase, species, replicas, seed, skip, block=None):
        """The seeded stream from meta-step ``skip`` on (constant-time resumption)."""
        return make_task_stream(run.curriculum.task_of_phase(phase, run.task), species=species,
                                replicas=replicas, batch_size=run.batch_size, unroll_steps=t,
                                seed=seed, query_batch_size=run.query_batch_size or run.batch_size,
                                start_step=skip, block=block)

    def train_stream(t, phase, step):
        return trainer.training_stream(lambda species, block=None: task_stream(
            t, phase, species, run.replicas, run.seed, step, block))

    return train_stream, Validation(lambda *a: iter(task_stream(*a)), run.curriculum,
                                    run.eval_replicas, run.seed)


def _finish(run, model_dir, trainer, last_val, start):
    """Result files (genome, population, SavedModel) and the final report; the results."""
    target_t = run.curriculum.unroll_at(run.num_steps - 1)
    task = first_task(run.task)
    origin = provenance(task, run.sizes, target_t, run.num_steps, run.seed, run.genome_init,
                        run.genome_seed, trainer.name, trainer.species, model_dir, start={
                            "transform_std": run.transform_std,
                            "synapse_update": run.synapse_update,
                            "genome_values": jsonable(run.genome_values),
                            "backprop_learning_rate": run.backprop_learning_rate})
    best, best_values, files = write_result(
        model_dir, trainer, last_val, k=run.k, num_layers=run.num_layers, config=run.blur_config,
        sizes=run.sizes, init_scale=run.init_scale, logit_scale=run.logit_scale,
        per_layer=run.per_layer, provenance=origin, export=run.export)
    results = dict(best_species=best, val_accuracy=np.asarray(last_val).tolist(),
                   target_unroll=target_t, **files)
    if run.final_eval:
        results["comparison"] = run_comparison(run, best_values, start,
                                               os.path.join(model_dir, "suite"), origin)
    return results
