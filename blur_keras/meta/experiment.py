"""A whole meta-training run, configured by gin: ``meta_train(model_dir, ...)``.

The run: build the task stream(s), the network sizes and the start genome;
train with per-species Adam (``outer="adam"``) or CMA-ES (``outer="cma"``)
following the curriculum; checkpoint, log and evaluate along the way; at the
end pick the best species by validation accuracy, write ``genome.json`` (with
its config, scales and provenance) and a SavedModel, and run the evaluation
suite (``blur_keras.evaluation``: tuned SGD / SGD+momentum / Adam) on the
transfer tasks bound to ``evaluate_suite.tasks`` (default: the run's own task),
writing ``suite/`` (table.md, curves, points) beside ``genome.json``.

Files under ``model_dir``: ``checkpoints/`` (resumable), ``metrics.jsonl``
(one line per meta-step), ``eval.jsonl`` (validation), ``tensorboard/``,
``genome.json``, ``genome_population.json``, ``saved_model/``,
``results.json``, ``operative_config.gin``.
"""

import dataclasses
import json
import math
import os
import time
from typing import Any, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from blur_keras.config import BlurConfig
from blur_keras.genome import Genome
import blur_keras.evaluation  # noqa: F401  (registers evaluate_suite: the final transfer suite)
from blur_keras.meta import chief
from blur_keras.meta.baselines import DEFAULT_SGD_LEARNING_RATES
from blur_keras.meta.checkpoint import RunCheckpoint
from blur_keras.meta.cma_es import CMAESTrainer
from blur_keras.meta.distribute import shard_layout
from blur_keras.meta.export import export_saved_model
from blur_keras.meta.strategy import describe_strategy, is_tpu
from blur_keras.meta.trainer import GradientTrainer
from blur_keras.plots import plot_run

__all__ = ["Curriculum", "meta_train", "MetaTrainingDiverged", "OUTERS"]

OUTERS = ("adam", "cma")
GIN_MODULE = "blur_keras.meta"

try:
    gin.external_configurable(BlurConfig, name="BlurConfig", module="blur_keras")
except ValueError:  # registered elsewhere already
    pass


def _scalars_metadata():
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"  # what TensorBoard's scalar dashboard reads
    return meta.SerializeToString()


_SCALARS = _scalars_metadata()


def _scalar(name, value, step=None):
    """A TensorBoard scalar summary (``tf.summary.write``: needs no tensorboard package)."""
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=_SCALARS)


class MetaTrainingDiverged(RuntimeError):
    """Several meta-steps in a row had non-finite meta-gradients."""


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Curriculum:
    """Unroll count and task schedule as functions of the meta-step.

    ``T(step) = min(unroll_start + unroll_delta · (step // unroll_every), unroll_max)``;
    ``task_phases``: ``((first_step, task_or_mixture), …)`` replacing the run's
    task from ``first_step`` on (phase 0 is the run's own task).
    """

    unroll_start: int = 10
    unroll_delta: int = 0
    unroll_every: int = 10000
    unroll_max: Optional[int] = None
    task_phases: Sequence[Any] = ()

    def __post_init__(self):
        if self.unroll_start < 1 or self.unroll_delta < 0 or self.unroll_every < 1:
            raise ValueError(f"Curriculum: need unroll_start >= 1, unroll_delta >= 0, "
                             f"unroll_every >= 1; got {self}.")
        starts = [int(s) for s, _ in self.task_phases]
        if starts != sorted(starts) or any(s < 1 for s in starts):
            raise ValueError(f"Curriculum.task_phases must start at increasing steps >= 1; got {starts}.")

    def unroll_at(self, step):
        t = self.unroll_start + self.unroll_delta * (int(step) // self.unroll_every)
        return min(t, self.unroll_max) if self.unroll_max else t

    def phase_at(self, step):
        phase = 0
        for i, (start, _) in enumerate(self.task_phases):
            if int(step) >= int(start):
                phase = i + 1
        return phase

    def task_of_phase(self, phase, base_task):
        return base_task if phase == 0 else self.task_phases[phase - 1][1]


def _finite_stat(fn, values):
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else float("nan")


class _Progress:
    """A one-line progress report: meta-steps/s and ETA (timed from the end of the first
    meta-step, so compilation does not count)."""

    def __init__(self, total, start):
        self.total, self.start_step, self.t0 = total, start, None

    def line(self, step):
        if self.t0 is None:
            self.t0, self.start_step = time.time(), step + 1
            return "compiled"
        done = step + 1 - self.start_step
        elapsed = time.time() - self.t0
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - step - 1) / rate if rate > 0 else float("nan")
        return f"{rate:.2f} meta-steps/s, ETA {_fmt_time(eta)}"


def _fmt_time(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def _num_classes(task):
    return int(task.num_classes)


def _first_task(task):
    return task.tasks[0] if hasattr(task, "tasks") else task


def make_start_genome(k, species, genome_init, seed, transform_std, synapse_update, values,
                      backprop_learning_rate, num_layers=None):
    if genome_init == "random":
        genome = Genome.random(k, seed=seed, species=species, transform_std=transform_std,
                               synapse_update=synapse_update, num_layers=num_layers)
    elif genome_init == "backprop":
        genome = Genome.backprop(backprop_learning_rate, k=k, species=species,
                                 num_layers=num_layers)
    elif genome_init.endswith(".json"):
        loaded = Genome.load_json(genome_init)
        _check_start_genome(genome_init, loaded, k, num_layers)
        vals = loaded.numpy()
        if loaded.species is not None:
            vals = {n: v[0] for n, v in vals.items()}
        genome = Genome(loaded.k, num_layers=loaded.num_layers, species=species, values=vals)
    else:
        raise ValueError(f"genome_init={genome_init!r}; expected 'random', 'backprop' or a "
                         f"path to a genome .json file.")
    if values:
        genome.assign({n: np.broadcast_to(np.asarray(v, np.float32), genome.shape_of(n))
                       for n, v in values.items()})
    return genome


def _check_start_genome(path, genome, k, num_layers):
    """A genome file must fit the run: same k, same per-layer layout and depth."""
    if genome.k != k:
        raise ValueError(f"meta_train.genome_init={path!r} holds a k={genome.k} genome, but "
                         f"meta_train.k={k}: set meta_train.k = {genome.k} or use another file.")
    if genome.num_layers != num_layers:
        def layout(n):
            return "shared by all layer pairs" if n is None else f"per-layer with {n} layer pairs"
        raise ValueError(f"meta_train.genome_init={path!r} holds a genome {layout(genome.num_layers)}"
                         f", but the run (per_layer, hidden_sizes) needs one {layout(num_layers)}.")


def run_settings(**settings):
    """The settings that change a run's result, as JSON-comparable values."""
    def plain(v):
        if isinstance(v, (bool, int, float, str)) or v is None:
            return v
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(key): plain(x) for key, x in sorted(v.items())}
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, BlurConfig):
            return plain(v.to_dict())
        return repr(v)

    return {name: plain(v) for name, v in sorted(settings.items())}


def check_resumed_settings(model_dir, settings):
    """Compare with the settings the run was started with; name every difference."""
    path = os.path.join(model_dir, "run_settings.json")
    if not os.path.exists(path):
        logging.warning("%s has no run_settings.json (an older run): cannot check that it is "
                        "resumed with the same configuration.", model_dir)
        return
    with open(path) as fh:
        saved = json.load(fh)
    diffs = [f"{name}: {saved.get(name, '<unset>')!r} in the checkpointed run, now "
             f"{settings.get(name, '<unset>')!r}"
             for name in sorted(set(saved) | set(settings)) if saved.get(name) != settings.get(name)]
    if diffs:
        raise ValueError(f"{model_dir} holds a run started with other settings; resuming it "
                         f"would not repeat that run. Differences: {'; '.join(diffs)}. Use another "
                         "--model_dir, or restore those settings.")


def _jsonable(metrics):
    out = {}
    for key, v in metrics.items():
        v = np.asarray(v)
        out[key] = v.tolist() if v.dtype != bool else v.astype(bool).tolist()
    return out


def _truncate_jsonl(path, keep_below):
    """Keep the lines whose ``step`` is below ``keep_below`` (a resumed run rewrites the rest)."""
    if not os.path.exists(path):
        return
    with open(path) as fh:
        lines = [l for l in fh if l.strip()]
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] < keep_below:
                kept.append(line)
        except (ValueError, KeyError):
            break  # a line cut by a kill: drop it and what follows
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.writelines(kept)
    os.replace(tmp, path)


@gin.configurable(module=GIN_MODULE, denylist=["model_dir", "strategy"])
def meta_train(model_dir, *, task=gin.REQUIRED, hidden_sizes=(32,), k=2, blur_config=None,
               genome_init="random", genome_seed=0, transform_std=1.0, synapse_update=-1e-3,
               genome_values=None, backprop_learning_rate=0.1, per_layer=False,
               outer="adam", species=8, replicas=1, batch_size=128, query_batch_size=None,
               num_steps=1000, curriculum=None, learning_rate=5e-4, clip_norm=10.0, loss="xent",
               recompute=0, init_scale=1.0, logit_scale=1.0, trainable=None,
               population_size=80, sigma0=0.1, seed=0,
               checkpoint_every=100, keep_checkpoints=3, log_every=10, eval_every=100,
               eval_replicas=4, max_nonfinite_in_a_row=5, strategy=None, jit_compile=True,
               final_eval=True, final_eval_replicas=8, final_eval_examples=2000,
               sgd_learning_rates=DEFAULT_SGD_LEARNING_RATES, export=True, sized_for=None,
               stop_after=None, shard_axis="replicas"):
    """Meta-train a BLUR genome (see the module docstring); returns a results dict.

    Args (the main ones; all bindable from gin as ``meta_train.<name>``):
      task: a ``blur_keras.data.Task`` or ``Mixture`` (phase 0 of the curriculum).
      hidden_sizes, k, blur_config: the network (input/output sizes come from the task).
      genome_init: ``"random"`` (the paper's random start, ``genome_seed``,
        ``transform_std``, ``synapse_update``), ``"backprop"`` (docs/spec.md §4, k=2)
        or a path to a genome JSON file; ``genome_values`` overrides entries.
      outer: ``"adam"`` (per-species Adam, ``species`` genomes side by side) or
        ``"cma"`` (CMA-ES, ``population_size``, ``sigma0``).
      replicas: synapse initialisations per species per meta-step (split over devices).
      curriculum: a ``Curriculum`` (default: ``T = 10`` throughout).
      recompute: gradient-checkpoint segment length for long unrolls (0: off).
      max_nonfinite_in_a_row: stop when a species has had this many skipped steps in a row.
      sized_for: ``"tpu"`` marks a configuration sized for a TPU (a warning when there is none).
      stop_after: stop (checkpointed) after this many meta-steps of this invocation (tests).
      shard_axis: what the strategy's devices split (``outer="adam"``): ``"replicas"``,
        ``"species"`` or ``"both"`` (``blur_keras.meta.distribute``); CMA-ES splits its
        candidates. Under several workers only the chief writes ``model_dir`` (``chief``).
    """
    # ---- validate everything before any compilation ----------------------------------
    from blur_keras.data import Mixture, Task, make_eval_arrays, make_task_stream

    if task is gin.REQUIRED or not isinstance(task, (Task, Mixture)):
        raise ValueError(f"meta_train.task must be a blur_keras.data Task or Mixture; got {task!r}.")
    if outer not in OUTERS:
        raise ValueError(f"meta_train.outer={outer!r}; expected one of {OUTERS}.")
    blur_config = blur_config if blur_config is not None else BlurConfig()
    if not isinstance(blur_config, BlurConfig):
        raise ValueError(f"meta_train.blur_config must be a BlurConfig; got {blur_config!r}.")
    curriculum = curriculum if curriculum is not None else Curriculum()
    for name, value, low in (("species", species, 1), ("replicas", replicas, 1),
                             ("batch_size", batch_size, 1), ("num_steps", num_steps, 1),
                             ("checkpoint_every", checkpoint_every, 1), ("k", k, 2),
                             ("log_every", log_every, 1), ("eval_every", eval_every, 1),
                             ("population_size", population_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"meta_train.{name} must be an int >= {low}; got {value!r}.")
    if batch_size == 1 and blur_config.activation_norm:
        raise ValueError("meta_train.batch_size = 1 with BlurConfig.activation_norm: normalising "
                         "over a batch of one example erases the input. Use batch_size >= 2.")
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} is a file; it must be a directory (new or "
                         "holding a run to resume).")
    strategy = strategy or tf.distribute.get_strategy()
    if outer == "adam" and shard_axis == "replicas" and replicas % strategy.num_replicas_in_sync:
        raise ValueError(f"meta_train.replicas={replicas} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} devices of the strategy.")
    if outer == "adam":
        shard_layout(shard_axis, strategy.num_replicas_in_sync, species, replicas)
    phases = [task] + [t for _, t in curriculum.task_phases]
    features = {t.num_features for t in phases}
    if len(features) != 1:
        raise ValueError(f"All curriculum tasks must have the same number of features; got {features}.")
    sizes = (features.pop(), *[int(h) for h in hidden_sizes], max(_num_classes(t) for t in phases))
    if sized_for == "tpu" and not is_tpu(strategy):
        logging.warning("This configuration is sized for a TPU, but no TPU is in use: running "
                        "it on %s instead (it may be slow).", describe_strategy(strategy))
    logging.info("Meta-training %s genome(s) on %s; network %s, k=%d; strategy: %s",
                 population_size if outer == "cma" else species, _first_task(task).describe(),
                 sizes, k, describe_strategy(strategy))
    run_dir, model_dir = model_dir, chief.write_dir(model_dir, strategy)  # non-chief: a temp dir
    num_layers = len(sizes) - 1 if per_layer else None
    settings = run_settings(
        task=task, sizes=sizes, k=k, blur_config=blur_config, genome_init=genome_init,
        genome_seed=genome_seed, transform_std=transform_std, synapse_update=synapse_update,
        genome_values=genome_values, backprop_learning_rate=backprop_learning_rate,
        per_layer=per_layer, outer=outer, species=species, replicas=replicas,
        batch_size=batch_size, query_batch_size=query_batch_size, curriculum=curriculum,
        learning_rate=learning_rate, clip_norm=clip_norm, loss=loss, recompute=recompute,
        init_scale=init_scale, logit_scale=logit_scale, trainable=trainable,
        population_size=population_size, sigma0=sigma0, seed=seed, jit_compile=jit_compile)
    if tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")):
        check_resumed_settings(run_dir, settings)
    os.makedirs(model_dir, exist_ok=True)
    start_genome = make_start_genome(k, None if outer == "cma" else species, genome_init,
                                     genome_seed, transform_std, synapse_update, genome_values,
                                     backprop_learning_rate, num_layers)
    start_values = {n: (v[0] if outer == "adam" else v) for n, v in start_genome.numpy().items()}

    if outer == "adam":
        trainer = GradientTrainer(
            start_genome, blur_config, sizes, learning_rate=learning_rate, clip_norm=clip_norm,
            loss=loss, recompute=recompute, init_scale=init_scale, logit_scale=logit_scale,
            trainable=trainable, seed=seed, strategy=strategy, jit_compile=jit_compile,
            shard_axis=shard_axis)
        data_species = species
    else:
        trainer = CMAESTrainer(
            start_genome, blur_config, sizes, population_size=population_size, sigma0=sigma0,
            trainable=trainable, seed=seed, init_scale=init_scale, logit_scale=logit_scale,
            recompute=recompute, jit_compile=jit_compile, strategy=strategy)
        data_species = 1
    num_species = trainer.species

    # ---- run state and checkpoint --------------------------------------------------------
    run_state = {
        "seed": tf.Variable(int(seed), dtype=tf.int64, name="seed"),
        "unroll": tf.Variable(curriculum.unroll_at(0), dtype=tf.int64, name="unroll"),
        "phase": tf.Variable(0, dtype=tf.int64, name="phase"),
        "nonfinite_streak": tf.Variable(np.zeros([num_species], np.int64), name="nonfinite_streak"),
        "best_species": tf.Variable(0, dtype=tf.int64, name="best_species"),
    }
    ckpt = RunCheckpoint(os.path.join(model_dir, "checkpoints"),
                         {**trainer.checkpoint_items(), "run": run_state}, keep=keep_checkpoints,
                         restore_from=os.path.join(run_dir, "checkpoints"))
    restored = ckpt.restore()
    if outer == "cma":
        trainer.unpack_state()
    start = int(trainer.step.numpy())
    if not restored:
        with open(os.path.join(model_dir, "run_settings.json"), "w") as fh:
            json.dump(settings, fh, indent=1)
    if restored:
        if int(run_state["seed"].numpy()) != int(seed):
            raise ValueError(f"{model_dir} holds a run with seed {int(run_state['seed'].numpy())}, "
                             f"not {seed}: use another --model_dir.")
        logging.info("Resumed from %s at meta-step %d (T=%d, task phase %d).", restored, start,
                     int(run_state["unroll"].numpy()), int(run_state["phase"].numpy()))
    metrics_path = os.path.join(model_dir, "metrics.jsonl")
    eval_path = os.path.join(model_dir, "eval.jsonl")
    _truncate_jsonl(metrics_path, start)
    _truncate_jsonl(eval_path, start)
    with open(os.path.join(model_dir, "operative_config.gin"), "w") as fh:
        fh.write(gin.operative_config_str())
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))

    # ---- data ----------------------------------------------------------------------------
    query_batch_size = query_batch_size or batch_size

    def stream(t, phase, species_, replicas_, seed_, skip):
        ds = make_task_stream(curriculum.task_of_phase(phase, task), species=species_,
                              replicas=replicas_, batch_size=batch_size, unroll_steps=t,
                              seed=seed_, query_batch_size=query_batch_size, start_step=skip)
        return iter(ds)  # starts at meta-step `skip` directly: constant-time resumption

    def train_stream(t, phase, step):
        """(iterator, meta-step function) of the training stream from ``step`` on."""
        if outer == "adam" and trainer.num_devices > 1:  # each worker draws its devices' blocks
            return iter(trainer.distribute_dataset(make_block_dataset=lambda block: make_task_stream(
                curriculum.task_of_phase(phase, task), species=data_species, replicas=replicas,
                batch_size=batch_size, unroll_steps=t, seed=seed,
                query_batch_size=query_batch_size, start_step=step, block=block))), \
                trainer.train_step_distributed
        return stream(t, phase, data_species, replicas, seed, step), trainer.train_step

    val_cache = {}

    def validation_batch(t, phase):
        if (t, phase) not in val_cache:
            val_cache[(t, phase)] = next(stream(t, phase, data_species, eval_replicas,
                                                seed + 1_000_003, 0))
        return val_cache[(t, phase)]

    def validate(step):
        t, phase = curriculum.unroll_at(step), curriculum.phase_at(step)
        batch = validation_batch(t, phase)
        if outer == "adam":
            res = trainer.evaluate(batch)
            acc, inner = res["accuracy"], res["inner_accuracy"]
        else:
            mean = {n: v[None] for n, v in trainer.mean_genome().items()}
            acc, inner = trainer.fitness(mean, batch, 0)
        return np.nan_to_num(acc), inner

    # ---- loop ----------------------------------------------------------------------------
    progress = _Progress(num_steps, start)
    key, it = None, None
    streak = run_state["nonfinite_streak"].numpy()
    last_val = None
    end = num_steps if stop_after is None else min(num_steps, start + int(stop_after))
    with open(metrics_path, "a") as mfile, open(eval_path, "a") as efile:
        for step in range(start, end):
            t, phase = curriculum.unroll_at(step), curriculum.phase_at(step)
            if (t, phase) != key:
                if key is not None:
                    logging.info("Curriculum: meta-step %d, T=%d, task phase %d.", step, t, phase)
                key = (t, phase)
                it, train_fn = train_stream(t, phase, step)
            run_state["unroll"].assign(t)
            run_state["phase"].assign(phase)
            m = train_fn(next(it))
            applied = np.asarray(m["applied"], bool)
            streak = np.where(applied, 0, streak + 1)
            run_state["nonfinite_streak"].assign(streak)
            record = {"step": step, "unroll": t, "phase": phase,
                      **_jsonable({k_: v for k_, v in m.items() if k_ != "inner_accuracy"})}
            mfile.write(json.dumps(record) + "\n")
            mfile.flush()
            if not applied.all():
                logging.warning("Meta-step %d: non-finite meta-%s for species %s; step skipped "
                                "for them.", step, "gradient" if outer == "adam" else "fitness",
                                np.flatnonzero(~applied).tolist())
            if outer == "adam" and streak.max() >= max_nonfinite_in_a_row:
                bad = np.flatnonzero(streak >= max_nonfinite_in_a_row).tolist()
                raise MetaTrainingDiverged(
                    f"Species {bad} had non-finite meta-gradients for {max_nonfinite_in_a_row} "
                    f"meta-steps in a row (up to meta-step {step}); stopping. The last good "
                    f"checkpoint is {ckpt.latest}. Try a smaller learning rate, clip_norm, or the "
                    f"oja / synapse_norm / activation_norm options.")
            with writer.as_default(step=step):
                if outer == "adam":
                    _scalar("meta_loss/mean", _finite_stat(np.mean, m["loss"]))
                    for s in range(num_species):
                        _scalar(f"meta_loss/species_{s}", float(m["loss"][s]))
                        _scalar(f"query_accuracy/species_{s}", float(m["accuracy"][s]))
                        _scalar(f"grad_norm/species_{s}", float(m["grad_norm"][s]))
                else:
                    _scalar("cma/mean_fitness", m["mean_fitness"])
                    _scalar("cma/sigma", m["sigma"])
                    _scalar("query_accuracy/mean", float(np.mean(m["accuracy"])))
                    _scalar("query_accuracy/best", float(np.max(m["accuracy"])))
                _scalar("curriculum/unroll", t)
            last = step == num_steps - 1
            if (step + 1) % log_every == 0 or last or step == start:
                if outer == "adam":
                    norms = trainer.genome_norms()
                    with writer.as_default(step=step):
                        for s in range(num_species):
                            _scalar(f"genome_norm/species_{s}", float(norms[s]))
                    summary = (f"meta-loss {_finite_stat(np.mean, m['loss']):.4f} "
                               f"(min {_finite_stat(np.min, m['loss']):.4f})"
                               f" | query acc {np.mean(m['accuracy']):.3f} (max {np.max(m['accuracy']):.3f})")
                else:
                    summary = (f"mean fitness {m['mean_fitness']:.4f} | query acc mean "
                               f"{np.mean(m['accuracy']):.3f} max {np.max(m['accuracy']):.3f} "
                               f"| sigma {m['sigma']:.4f}")
                logging.info("meta-step %d/%d T=%d | %s | %s", step + 1, num_steps, t, summary,
                             progress.line(step))
            if (step + 1) % eval_every == 0 or last:
                acc, inner = validate(step)
                best = int(np.argmax(acc))
                run_state["best_species"].assign(best)
                last_val = acc
                efile.write(json.dumps({"step": step, "unroll": t,
                                        "val_accuracy": acc.tolist(), "best_species": best}) + "\n")
                efile.flush()
                with writer.as_default(step=step):
                    for s in range(len(acc)):
                        _scalar(f"val_accuracy/species_{s}", float(acc[s]))
                    curve = inner[:, best] if inner.ndim == 2 else inner
                    for i, a in enumerate(curve):
                        _scalar(f"inner_accuracy/step_{i:03d}", float(a))
                logging.info("validation at meta-step %d: accuracy %s (best species %d)",
                             step + 1, np.round(acc, 3).tolist(), best)
            if (step + 1) % checkpoint_every == 0 or last or step + 1 == end:
                if outer == "cma":
                    trainer.pack_state()
                ckpt.save(step + 1)
    writer.flush()
    done = int(trainer.step.numpy())
    results = {"model_dir": model_dir, "steps_done": done, "num_steps": num_steps}
    if done < num_steps:
        logging.info("Stopped after %d of %d meta-steps (checkpointed).", done, num_steps)
        return results

    # ---- result: best species, files, comparison ---------------------------------------
    target_t = curriculum.unroll_at(num_steps - 1)
    if last_val is None:
        last_val, _ = validate(num_steps - 1)
    if outer == "adam":
        best = int(np.argmax(last_val))
        population = trainer.genome_values()
        best_values = {n: v[best] for n, v in population.items()}
        Genome(k, num_layers=num_layers, species=num_species, values=population).save_json(
            os.path.join(model_dir, "genome_population.json"))
    else:
        best = 0
        best_values = trainer.mean_genome()
    provenance = {"task": _first_task(task).describe(), "sizes": list(sizes), "unroll": target_t,
                  "meta_steps": num_steps, "seed": seed, "genome_init": str(genome_init),
                  "genome_seed": genome_seed, "outer": outer, "species": num_species,
                  "model_dir": os.path.abspath(model_dir), "package_version": _version()}
    learned = Genome(k, num_layers=num_layers, values=best_values).with_metadata(
        blur_config or BlurConfig(), init_scale, logit_scale, provenance)
    learned.save_json(os.path.join(model_dir, "genome.json"))
    results.update(best_species=best, val_accuracy=np.asarray(last_val).tolist(),
                   target_unroll=target_t)
    if export:
        path = export_saved_model(os.path.join(model_dir, "saved_model"), best_values,
                                  blur_config or BlurConfig(), sizes, init_scale, per_layer,
                                  metadata={"logit_scale": logit_scale, "provenance": provenance})
        results["saved_model"] = path
    if final_eval:
        results["comparison"] = compare(
            best_values, start_values, blur_config, sizes, _first_task(task), target_t,
            batch_size=batch_size, replicas=final_eval_replicas, examples=final_eval_examples,
            seed=seed, init_scale=init_scale, per_layer=per_layer,
            sgd_learning_rates=sgd_learning_rates, jit_compile=jit_compile,
            make_eval_arrays=make_eval_arrays, make_task_stream=make_task_stream,
            out_dir=os.path.join(model_dir, "suite"), provenance=provenance)
    with open(os.path.join(model_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    pictures = plot_run(model_dir)
    logging.info("pictures: %s", ", ".join(pictures))
    return results


def _version():
    import blur_keras

    return getattr(blur_keras, "__version__", "unknown")


def _gin_bound(name):
    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False


def compare(learned, start, config, sizes, task, unroll, *, batch_size, replicas, examples, seed,
            init_scale, per_layer, sgd_learning_rates, jit_compile, make_eval_arrays,
            make_task_stream, out_dir=None, provenance=None):
    """The evaluation suite (``blur_keras.evaluation``) on the run's transfer tasks.

    The tasks, architectures, horizons, seeds, ... are the gin bindings of
    ``evaluate_suite``; what is not bound follows the run: its own task (test split), its
    hidden sizes, horizons ``{T, 10, 20, 50, 100}``, ``replicas`` seeds, its batch size and
    ``examples`` test examples. The random start is measured on the run's own task at T.
    Writes ``out_dir`` (table.md, curves, points) and returns the ``comparison`` summary
    (test accuracy at T: learned rule, its start, SGD and Adam at the learning rate
    chosen on validation).
    """
    from blur_keras import evaluation as ev

    config = config or BlurConfig()
    out_dir = out_dir or "/tmp/blur_suite"
    own = {"tasks": [task], "hidden_sizes": [tuple(sizes[1:-1])],
           "horizons": tuple(sorted({int(unroll), 10, 20, 50, 100})), "seeds": int(replicas),
           "batch_size": int(batch_size), "test_examples": int(examples or 2000)}
    overrides = {key: v for key, v in own.items() if not _gin_bound(f"evaluate_suite.{key}")}
    if not _gin_bound("evaluate_suite.tasks"):
        overrides["tasks"] = [ev.task_data(task, test_examples=own["test_examples"])]
    rule = ev.Rule("learned genome", learned, config, per_layer, float(init_scale), provenance)
    summary = ev.evaluate_suite(rule, out_dir, log=lambda line: logging.info("%s", line),
                                **overrides)
    entry = summary["results"][0]
    data = ev.task_data(task, test_examples=own["test_examples"])
    start_rule = dataclasses.replace(rule, name="random start", values=start)
    start_summary = ev.run_suite(start_rule, [data], os.path.join(out_dir, "random_start"),
                                 hidden_sizes=[tuple(sizes[1:-1])], horizons=(int(unroll),),
                                 seeds=summary["seeds"], batch_size=summary["batch_size"],
                                 baselines=(), plot=False, log=lambda *_: None)
    steps = entry["steps"]
    at = max(i for i, s_ in enumerate(steps) if s_ <= unroll)
    res = entry["methods"]
    out = {"unroll": int(steps[at]), "task": entry["label"], "seeds": summary["seeds"],
           "learned": res["blur"]["test_mean"][at],
           "random_start": start_summary["results"][0]["methods"]["blur"]["test_mean"][-1],
           "suite": out_dir, "table": os.path.join(out_dir, "table.md")}
    for method in ("sgd", "adam"):
        if method in res:
            out[f"{method}_best"] = res[method]["test_mean"][at]
            out[f"{method}_best_learning_rate"] = res[method]["best_learning_rate"][at]
    out["learned_beats_start"] = out["learned"] > out["random_start"]
    out["learned_beats_sgd"] = out["learned"] > out.get("sgd_best", -1.0)
    print(f"Test accuracy (baselines at the learning rate chosen on validation; "
          f"{summary['seeds']} seeds); random start at T={unroll}: {out['random_start']:.4f}\n"
          + ev.format_table(summary), flush=True)
    return out
