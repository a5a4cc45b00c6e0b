"""Judging a learned rule against tuned SGD, SGD with momentum and Adam.

A *rule* (a genome with its ``BlurConfig``: a genome file, an exported
SavedModel or the built-in backprop genome) trains fresh networks on a task
for up to ``max(horizons)`` steps; the baselines train networks of the same
sizes, hidden σ and initial weights (channel 0 of the rule's own synapse
draw) on the **same batches**, each over a learning-rate sweep.  Accuracy is
recorded on a validation split (carved from the training split) and on the
test split at the recorded steps.  For every task, method and step count the
baseline learning rate with the best mean *validation* accuracy is chosen and
its *test* accuracy reported: mean and 95% interval (Student t) over seeds.

Everything runs as one compiled ``while_loop`` per (method, shape); the
learning-rate sweep is an extra batch axis, so a baseline's whole sweep is
one call.  The baselines' networks, updates, loop and validation choice are
``blur_keras.evaluation.baselines``; ``run_suite`` ties them and the rule's
curves together and writes the files (``points.csv``, ``summary.json``,
``summary.csv``, ``table.md``, ``curves_*.png``).
"""

import csv
import dataclasses
import io
import json
import math
import os
import time
from typing import Dict, Optional

import gin
import numpy as np
import tensorflow as tf

from blur_keras.core import network
from blur_keras.core.checks import check_layer_sizes
from blur_keras.core.layer_specs import Conv2D, Dense, Flatten, Pool2D, Reshape, plan
from blur_keras.core.config import BlurConfig
from blur_keras.core.feedback import pm1_targets
from blur_keras.files import write_atomic, write_json
from blur_keras.rules.genome import Genome, resolve_config
from blur_keras.core.layout import pairs_in
from blur_keras.core.normalization import INFERENCE_MOMENTUM, start_moments, track_moments
from blur_keras.core.step import forward_moments, inner_step, moments_out, predict
from blur_keras.rules.schedule import at_step
from blur_keras.core.synapses import init_synapses
from blur_keras.evaluation.baselines import (BASELINES, DEFAULT_LEARNING_RATES,
                                             baseline_activations, baseline_curves,
                                             baseline_weights, eval_both, record_slots, run_loop,
                                             select, task_tensors)

__all__ = ["Rule", "load_rule", "TaskData", "task_data", "batch_indices", "initial_synapses",
           "blur_curves", "mean_ci", "run_suite", "format_table", "record_steps", "evaluate_suite",
           "synthetic_data", "plot_suite", "check_chain", "chain_synapses", "chain_weights",
           "chain_curves"]

METHOD_NAMES = {"blur": "BLUR", "sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam"}


# ---------------------------------------------------------------------------------- the rule

@dataclasses.dataclass(frozen=True)
class Rule:
    """A species-free genome and the conventions it runs under."""

    name: str
    values: Dict[str, np.ndarray]
    config: BlurConfig
    per_layer: bool = False
    init_scale: float = 1.0
    provenance: Optional[dict] = None
    schedule: tuple = ()  # ``schedule.Ramp``s of synapse-update entries
    # how the rule's network predicts under activation_norm (``blur_keras.keras.inference``):
    # "batch" statistics of the evaluated set, or "moving" ones tracked while it trains
    inference: str = "batch"
    inference_momentum: float = INFERENCE_MOMENTUM

    @property
    def k(self):
        return int(np.shape(self.values["nu"])[-1])

    def check_depth(self, num_layers):
        if self.per_layer:
            have = int(np.shape(self.values["f"])[-1])
            if have != num_layers:
                raise ValueError(f"Rule {self.name!r} is a per-layer genome for {have} layer "
                                 f"pairs; it cannot train a network with {num_layers}.")


def load_rule(spec, config=None, init_scale=None):
    """A ``Rule`` from ``"backprop"`` / ``"backprop:<lr>[:<hidden σ>]"``, a genome ``.json``
    file, an exported SavedModel directory, or the name of a pretrained genome
    (``Genome.pretrained_names()``).

    A genome file carries its config; ``config`` is then only a check (a contradiction is
    an error). An old values-only file needs ``config`` (default ``BlurConfig()``).
    """
    if spec.startswith("backprop"):
        parts = spec.split(":")
        lr = float(parts[1]) if len(parts) > 1 else 0.1
        hidden = parts[2] if len(parts) > 2 else "tanh"
        own = BlurConfig.backprop(hidden, "linear")
        if config is not None and config != own:
            raise ValueError(f"The backprop rule runs under BlurConfig.backprop(); got {config}.")
        return Rule(f"backprop(lr={lr:g})", Genome.backprop(lr).numpy(), own,
                    init_scale=1.0 if init_scale is None else float(init_scale))
    if os.path.isdir(spec):
        return _load_saved_model_rule(spec, config, init_scale)
    if spec in Genome.pretrained_names() and not os.path.exists(spec):
        genome = Genome.pretrained(spec)
        return Rule(f"pretrained/{spec}", genome.numpy(), resolve_config(genome, config),
                    genome.per_layer, float(init_scale or genome.init_scale or 1.0),
                    genome.provenance, genome.schedule)
    genome = Genome.load_json(spec)
    if genome.species is not None:
        raise ValueError(f"{spec} holds {genome.species} species; pick one "
                         f"(Genome.species_member) and save it.")
    config = resolve_config(genome, config) or BlurConfig()
    scale = init_scale if init_scale is not None else (genome.init_scale or 1.0)
    return Rule(os.path.basename(os.path.dirname(os.path.abspath(spec))) + "/" +
                os.path.basename(spec), genome.numpy(), config, genome.per_layer, float(scale),
                genome.provenance, genome.schedule)


def _load_saved_model_rule(path, config, init_scale):
    module = tf.saved_model.load(path)
    values = {n: v.numpy() for n, v in module.genome_vars.items()}
    meta = json.loads(module.metadata_json.numpy().decode()) if hasattr(module, "metadata_json") \
        else {"config": json.loads(module.config_json.numpy().decode())}
    own = BlurConfig.from_dict(meta["config"])
    if config is not None and config != own:
        raise ValueError(f"The explicit config contradicts the SavedModel's: {own} vs {config}.")
    scale = init_scale if init_scale is not None else meta.get("init_scale", 1.0)
    return Rule(os.path.basename(os.path.normpath(path)), values, own,
                bool(meta.get("per_layer", False)), float(scale), meta.get("provenance"))


# ---------------------------------------------------------------------------------- data

@dataclasses.dataclass(frozen=True)
class TaskData:
    """Arrays of one task: a training pool, a validation split (disjoint from the pool,
    carved from the training split) and the test split."""

    name: str
    pool_x: np.ndarray
    pool_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def num_features(self):
        return int(self.pool_x.shape[1])


def task_data(task, val_examples=500, test_examples=2000, name=None):
    """``TaskData`` of a ``blur_keras.data.Task`` (image: train split minus a fixed validation
    subset, with the task's label noise; true labels for validation and the test split.
    Synthetic: three independent samples)."""
    from blur_keras.data import make_eval_arrays, noisy_labels, task_arrays

    name = name or task.describe()
    if task.is_synthetic:
        gen = task.generator
        if type(gen).__name__ == "Synthetic2D":
            pool, val, test = (gen.eval_arrays(n, s) for n, s in
                               ((max(4 * val_examples, 2000), 101), (val_examples, 202),
                                (test_examples, 303)))
        else:  # a Boolean function: its (small) input space, three draws
            pool, val, test = (gen.eval_arrays(None, s) for s in (101, 202, 303))
    else:
        x, y = task_arrays(task, "train")
        if val_examples >= len(y):
            raise ValueError(f"{name}: val_examples={val_examples} leaves no training data "
                             f"({len(y)} training examples).")
        perm = np.random.default_rng(0).permutation(len(y))
        pool = x[perm[val_examples:]], noisy_labels(task, y)[perm[val_examples:]]
        val = x[perm[:val_examples]], y[perm[:val_examples]]
        test = make_eval_arrays(task, test_examples)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    i32 = lambda a: np.asarray(a, np.int32)  # noqa: E731
    return TaskData(name, f32(pool[0]), i32(pool[1]), f32(val[0]), i32(val[1]), f32(test[0]),
                    i32(test[1]), int(task.num_classes))


def synthetic_data(name, num_features, num_classes, pool=2000, val=500, test=1000, seed=0):
    """A linearly-separable-ish Gaussian-cluster task (for tests and quick checks)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (num_classes, num_features))

    def sample(n):
        y = rng.integers(0, num_classes, n)
        return (centres[y] + rng.normal(0, 1.0, (n, num_features))).astype(np.float32), \
            y.astype(np.int32)

    return TaskData(name, *sample(pool), *sample(val), *sample(test), num_classes)


def batch_indices(pool_size, steps, seeds, batch_size, seed=0):
    """``[steps, seeds, batch]`` indices into the pool: per seed, epochs of fresh permutations."""
    out = np.empty((steps, seeds, batch_size), np.int32)
    need = steps * batch_size
    for r in range(seeds):
        rng = np.random.default_rng([int(seed), r])
        order = np.concatenate([rng.permutation(pool_size)
                                for _ in range(-(-need // pool_size))])[:need]
        out[:, r] = order.reshape(steps, batch_size)
    return out


def initial_synapses(rule, sizes, seeds, seed=0):
    """The rule's fresh synapses ``[seeds, ...]`` (one draw per seed)."""
    return init_synapses(tf.constant([int(seed), 7919], tf.int64), sizes, rule.k, (seeds,),
                         rule.config, rule.init_scale)


def record_steps(horizons, every=None, dense_until=0):
    """The steps at which accuracy is recorded: 0 … ``dense_until``, then every ``every``
    steps (every step when ``None``), and every horizon."""
    last = max(horizons)
    grid = set(range(0, last + 1, every or 1)) | set(int(h) for h in horizons)
    grid |= set(range(0, min(int(dense_until), last) + 1))
    return tuple(sorted(grid))


# ---------------------------------------------------------------------------------- curves

@tf.function(jit_compile=True, autograph=False)
def _blur_run(params, synapses, pool_x, pool_y, val_x, val_y, test_x, test_y, idx, slots,
              config, per_layer, num_records, schedule=(), momentum=None):
    """The rule's curves; ``momentum`` not None: inference with tracked statistics."""
    num_classes = synapses[-1][0].shape[-2]
    tracks = momentum is not None and config.activation_norm

    def step(state, x, y):  # state: (synapses, steps taken, tracked statistics)
        syn, t, moments = state
        p = at_step(params, schedule, t)
        if tracks:
            batch = forward_moments(p, pairs_in(syn), x, config, per_layer)
            moments = track_moments(moments, batch, t, momentum)
        new = inner_step(p, syn, x, pm1_targets(y, num_classes), config, per_layer)[0]
        return new, t + 1, moments

    def forward(state, x):
        moments = moments_out(state[2]) if tracks else None
        return predict(params, state[0], x, config, per_layer, moments=moments)

    start = start_moments([w for w, _ in pairs_in(synapses)]) if tracks else ()
    return run_loop(step, eval_both(forward, val_x, val_y, test_x, test_y),
                    (synapses, tf.constant(0), start), pool_x, pool_y, idx, slots, num_records)


def blur_curves(rule, synapses, data, idx, steps_to_record):
    """Accuracy ``[2 (val, test), records, seeds]`` of the rule, one compiled loop."""
    rule.check_depth(len(synapses))
    params = {n: tf.constant(v, tf.float32) for n, v in rule.values.items()}
    momentum = rule.inference_momentum if rule.inference == "moving" else None
    out = _blur_run(params, tuple(synapses), *task_tensors(data), tf.constant(idx),
                    record_slots(steps_to_record, idx.shape[0]), rule.config, rule.per_layer,
                    len(steps_to_record), rule.schedule, momentum)
    return np.transpose(out.numpy(), (1, 0, 2))


# ---------------------------------------------------------------------------------- chains

def _register_specs():
    """The layer specs as gin configurables (``evaluate_suite.specs = [(@Reshape(), …)]``)."""
    for spec in (Dense, Conv2D, Pool2D, Flatten, Reshape):
        try:
            gin.external_configurable(spec, module="blur_keras.layer_specs")
        except ValueError:  # registered already (a reloaded module)
            pass


_register_specs()


def _spec_name(spec):
    """A short name of a layer spec: ``conv8x3``, ``maxpool2``, ``flatten``, ``28x28x1``, ``10``."""
    if isinstance(spec, Dense):
        return str(spec.units)
    if isinstance(spec, Conv2D):
        stride = "" if spec.strides == (1, 1) else "s" + "x".join(map(str, spec.strides))
        return f"conv{spec.filters}x{'x'.join(map(str, spec.kernel_size))}{stride}" + \
            ("same" if spec.padding == "same" else "")
    if isinstance(spec, Pool2D):
        return f"{spec.kind}pool{'x'.join(map(str, spec.pool_size))}"
    if isinstance(spec, Reshape):
        return "x".join(map(str, spec.target_shape))
    return type(spec).__name__.lower()


def _arch_name(data, arch, is_chain):
    if is_chain:
        return "-".join([str(data.num_features)] + [_spec_name(s) for s in arch])
    return "-".join(map(str, (data.num_features, *[int(w) for w in arch], data.num_classes)))


def check_chain(specs, data):
    """The stages of the chain ``specs`` on ``data``'s flat examples; a ``ValueError`` unless
    it ends in as many neurons as the task has classes."""
    stages = plan((data.num_features,), specs)
    if tuple(stages[-1].upper) != (data.num_classes,):
        raise ValueError(f"evaluate_suite.specs chain ends in {stages[-1].upper} neurons; task "
                         f"{data.name!r} has {data.num_classes} classes.")
    return stages


def chain_synapses(rule, data, specs, seeds, seed=0):
    """The rule's fresh synapses of the chain ``specs``, one draw (public layout) per seed."""
    check_chain(specs, data)
    keys = tf.random.experimental.stateless_split(tf.constant([int(seed), 7919], tf.int64), seeds)
    return [network.init_synapses(keys[r], (data.num_features,), specs, rule.k, rule.config,
                                  rule.init_scale) for r in range(seeds)]


def chain_weights(synapses):
    """Baseline initial weights of a chain: state 0 of each seed's forward synapses,
    ``[seeds, rows, m]`` per layer pair (a conv's rows: the Keras kernel reshaped, then bias)."""
    return [tf.stack([pairs[l][0][..., 0] for pairs in synapses]) for l in range(len(synapses[0]))]


@tf.function(jit_compile=True, autograph=False)
def _chain_run(params, synapses, pool_x, pool_y, val_x, val_y, test_x, test_y, idx, slots, specs,
               config, per_layer, num_records, schedule=()):
    """One seed's curves of the rule on the chain ``specs`` (``idx``: ``[steps, batch]``)."""
    num_classes = synapses[-1][0].shape[-2]

    def step(state, x, y):
        syn, t = state
        new = network.inner_step(at_step(params, schedule, t), syn, x,
                                 pm1_targets(y, num_classes), specs, config, per_layer)[0]
        return new, t + 1

    def forward(state, x):
        return network.predict(params, state[0], x, specs, config, per_layer)

    return run_loop(step, eval_both(forward, val_x, val_y, test_x, test_y),
                    (synapses, tf.constant(0)), pool_x, pool_y, idx, slots, num_records)


def chain_curves(rule, specs, synapses, data, idx, steps_to_record):
    """Accuracy ``[2 (val, test), records, seeds]`` of the rule training the chain ``specs``
    from ``synapses`` (``chain_synapses``), one compiled loop per seed. Predictions under
    ``activation_norm`` use the statistics of the evaluated set (``inference="batch"``)."""
    rule.check_depth(len(synapses[0]))
    if rule.inference == "moving" and rule.config.activation_norm:
        raise ValueError(f"Rule {rule.name!r} normalises activations; on a conv chain it "
                         "predicts with batch statistics only: set evaluate_suite.inference="
                         "'batch'.")
    params = {n: tf.constant(v, tf.float32) for n, v in rule.values.items()}
    tensors, slots = task_tensors(data), record_slots(steps_to_record, idx.shape[0])
    out = [_chain_run(params, tuple(tuple(p) for p in synapses[r]), *tensors,
                      tf.constant(idx[:, r]), slots, tuple(specs), rule.config, rule.per_layer,
                      len(steps_to_record), rule.schedule).numpy()
           for r in range(idx.shape[1])]
    return np.transpose(np.stack(out, -1), (1, 0, 2))


# ---------------------------------------------------------------------------------- statistics

def mean_ci(values):
    """Mean and half-width of the 95% Student-t interval of a 1-D sample (nan if n < 2)."""
    values = np.asarray(values, np.float64)
    n = values.size
    if n < 2:
        return float(values.mean()), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half)


# ---------------------------------------------------------------------------------- the suite

def run_suite(rule, tasks, out_dir, *, hidden_sizes=((32,),), horizons=(10, 20, 50, 100, 500),
              seeds=8, batch_size=32, learning_rates=None, baselines=BASELINES, loss="xent",
              record_every=None, dense_until=0, seed=0, plot=True, log=print, specs=None):
    """Evaluate ``rule`` and the tuned baselines on every task × architecture.

    Args:
      rule: a ``Rule`` (``load_rule``).
      tasks: ``TaskData`` objects (``task_data``/``synthetic_data``).
      hidden_sizes: architectures: tuples of hidden widths (input/output follow the task).
      specs: instead of ``hidden_sizes``, architectures that are chains of layer specs
        (``blur_keras.core.layer_specs``) on the task's flat examples, e.g. ``(Reshape((28,
        28, 1)), Conv2D(8, 3), Pool2D(), Flatten(), Dense(10))`` (``chain_curves``).
      horizons: the step counts reported in the table (learning rates chosen per horizon).
      seeds: independent runs (batches and initial weights) per configuration.
      learning_rates: dict method -> sweep (default ``DEFAULT_LEARNING_RATES``).
      loss: the baselines' loss: ``"xent"`` (softmax cross-entropy, batch mean) or
        ``"mse"`` (½ Σ (ŷ − ±1 one-hot)², reduced like the rule's ``batch_reduction``:
        what the backprop genome follows).
      record_every: record accuracy every this many steps (default: every step), and at
        every step up to ``dense_until``.
    Returns the summary dict (also written to ``out_dir/summary.json``).
    """
    learning_rates = {**DEFAULT_LEARNING_RATES, **(learning_rates or {})}
    steps = record_steps(horizons, record_every, dense_until)
    os.makedirs(out_dir, exist_ok=True)
    hidden, last = baseline_activations(rule.config, loss)
    reduction = rule.config.batch_reduction if loss == "mse" else "mean"
    points, summary = [], {"rule": rule.name, "provenance": rule.provenance, "seeds": seeds,
                           "batch_size": batch_size, "horizons": list(horizons),
                           "recorded_steps": list(steps), "loss": loss,
                           "baseline_activations": [hidden, last],
                           "learning_rates": {m: list(learning_rates[m]) for m in baselines},
                           "results": []}
    archs = tuple(hidden_sizes) if specs is None else tuple(tuple(c) for c in specs)
    total, done, start = len(tasks) * len(archs), 0, time.time()
    for data in tasks:
        for arch in archs:
            label = f"{data.name} {_arch_name(data, arch, specs is not None)}"
            eta = "" if not done else \
                f", ETA {(time.time() - start) / done * (total - done) / 60:.1f} min"
            log(f"[{done + 1}/{total}] {label}: {len(baselines) + 1} methods, {seeds} seeds, "
                f"{max(horizons)} steps{eta}")
            done += 1
            t0 = time.time()
            progress = _MethodProgress(log, f"[{done}/{total} {label}]",
                                       {m: len(learning_rates[m]) for m in baselines})
            sizes, curves = _arch_curves(rule, data, arch, specs is not None, horizons,
                                         seeds=seeds, batch_size=batch_size, seed=seed,
                                         steps=steps, loss=loss, learning_rates=learning_rates,
                                         baselines=baselines, progress=progress)
            entry = _summarise(label, data.name, sizes, steps, curves, learning_rates)
            summary["results"].append(entry)
            points += _points(label, steps, curves, learning_rates)
            log(f"{label}: {time.time() - t0:.1f}s | " + " | ".join(
                f"{h} steps: " + " ".join(f"{METHOD_NAMES[m]} {entry['methods'][m]['test_mean'][steps.index(h)]:.3f}"
                                          for m in entry["methods"]) for h in horizons))
    _write(out_dir, summary, points, plot)
    return summary


def _arch_curves(rule, data, arch, is_chain, horizons, **run):
    """``(sizes, curves)`` of one architecture: MLP widths or a chain of layer specs."""
    if is_chain:
        return [_spec_name(s) for s in arch], _chain_curves(rule, data, arch, horizons, **run)
    sizes = (data.num_features, *[int(w) for w in arch], data.num_classes)
    return sizes, _mlp_curves(rule, data, sizes, horizons, **run)


def _mlp_curves(rule, data, sizes, horizons, *, seeds, batch_size, seed, steps, loss,
                learning_rates, baselines, progress):
    """The curves of the rule and each baseline on the MLP ``sizes``, the same batches."""
    hidden, last = baseline_activations(rule.config, loss)
    reduction = rule.config.batch_reduction if loss == "mse" else "mean"
    idx = batch_indices(len(data.pool_y), max(horizons), seeds, batch_size, seed)
    synapses = initial_synapses(rule, sizes, seeds, seed)
    curves = {"blur": progress.run("blur", lambda: blur_curves(rule, synapses, data, idx,
                                                               steps))}
    for method in baselines:
        curves[method] = progress.run(method, lambda: baseline_curves(
            method, learning_rates[method], baseline_weights(synapses), data, idx, steps,
            hidden, last, loss, reduction))
    return curves


def _chain_curves(rule, data, specs, horizons, *, seeds, batch_size, seed, steps, loss,
                  learning_rates, baselines, progress):
    """The curves of the rule and each baseline on the chain ``specs``, the same batches."""
    hidden, last = baseline_activations(rule.config, loss)
    reduction = rule.config.batch_reduction if loss == "mse" else "mean"
    idx = batch_indices(len(data.pool_y), max(horizons), seeds, batch_size, seed)
    synapses = chain_synapses(rule, data, specs, seeds, seed)
    curves = {"blur": progress.run("blur", lambda: chain_curves(rule, specs, synapses, data,
                                                                idx, steps))}
    weights = chain_weights(synapses)
    for method in baselines:
        curves[method] = progress.run(method, lambda: baseline_curves(
            method, learning_rates[method], weights, data, idx, steps, hidden, last, loss,
            reduction, specs))
    return curves


class _MethodProgress:
    """Log lines around each method of one task × architecture: what runs, then how long it
    took, how many methods are done and an ETA for the rest (from the mean time so far)."""

    def __init__(self, log, prefix, sweeps):
        self.log, self.prefix, self.sweeps = log, prefix, sweeps
        self.methods = ["blur", *sweeps]
        self.seconds = []

    def run(self, method, fn):
        i = len(self.seconds) + 1
        sweep = self.sweeps.get(method)
        what = "the rule" if sweep is None else \
            f"a sweep of {sweep} learning rate{'s' if sweep != 1 else ''}"
        self.log(f"{self.prefix} {METHOD_NAMES[method]} ({i}/{len(self.methods)}): {what}...")
        t0 = time.time()
        out = fn()
        self.seconds.append(time.time() - t0)
        left = len(self.methods) - i
        eta = f", ETA {np.mean(self.seconds) * left / 60:.1f} min" if left else ""
        self.log(f"{self.prefix} {METHOD_NAMES[method]} done in {self.seconds[-1]:.1f}s "
                 f"({i}/{len(self.methods)} methods{eta})")
        return out


def steps_to_reach(val_curves, targets, steps):
    """How many steps a tuned baseline needs to reach each target (validation accuracy).

    ``val_curves``: ``[records, learning rates]`` mean validation accuracy of one baseline's
    sweep; ``targets``: ``[records]`` (the rule's mean validation accuracy at each recorded
    step); ``steps``: the recorded steps. For each target, the first recorded step at which
    some learning rate's curve reaches it (the best rate for that target), or ``None`` when no
    rate reaches it within the recorded steps.
    """
    val_curves = np.asarray(val_curves, np.float64)
    out = []
    for target in np.asarray(targets, np.float64):
        hit = np.nonzero((val_curves >= target).any(axis=1))[0]
        out.append(int(steps[hit[0]]) if hit.size else None)
    return out


def _summarise(label, task, sizes, steps, curves, learning_rates):
    methods = {}
    for method, c in curves.items():
        if method == "blur":
            test, best_lr = c[1], [None] * len(steps)
            val_mean = c[0].mean(-1)
        else:
            best, test = select(c)
            best_lr = [float(learning_rates[method][b]) for b in best]
            val_mean = c[0].mean(-1)[np.arange(len(steps)), best]
        stats = [mean_ci(row) for row in test]
        methods[method] = {"test_mean": [s[0] for s in stats], "test_ci95": [s[1] for s in stats],
                           "val_mean": np.asarray(val_mean, float).tolist(),
                           "best_learning_rate": best_lr}
    rule_val = methods["blur"]["val_mean"]
    for method, c in curves.items():
        if method != "blur":
            methods[method]["steps_to_reach_rule"] = steps_to_reach(c[0].mean(-1), rule_val,
                                                                    steps)
    return {"label": label, "task": task, "sizes": list(sizes), "steps": list(steps),
            "methods": methods}


def _points(label, steps, curves, learning_rates):
    rows = []
    for method, c in curves.items():
        c = c[:, :, None] if method == "blur" else c
        lrs = [None] if method == "blur" else learning_rates[method]
        for split_i, split in enumerate(("val", "test")):
            for si, step in enumerate(steps):
                for li, lr in enumerate(lrs):
                    for r in range(c.shape[-1]):
                        rows.append((label, method, lr, step, r, split, float(c[split_i, si, li, r])))
    return rows


def format_table(summary):
    """Markdown: per task × architecture, test accuracy (mean ± 95% half-width) per method at
    each horizon; the best mean per column in bold (baselines at their validation-chosen LR)."""
    horizons = summary["horizons"]
    lines = []
    for entry in summary["results"]:
        steps = entry["steps"]
        lines += [f"**{entry['label']}**", "",
                  "| method | " + " | ".join(f"{h} steps" for h in horizons) + " |",
                  "|---|" + "---|" * len(horizons)]
        cols = [steps.index(h) for h in horizons]
        best = {i: max(entry["methods"][m]["test_mean"][i] for m in entry["methods"]) for i in cols}
        for method, res in entry["methods"].items():
            cells = []
            for i in cols:
                mean, ci = res["test_mean"][i], res["test_ci95"][i]
                cell = f"{mean:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{mean:.3f}"
                if mean == best[i]:
                    cell = f"**{cell}**"
                if res["best_learning_rate"][i] is not None:
                    cell += f" (lr {res['best_learning_rate'][i]:g})"
                cells.append(cell)
            lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
        lines += [""] + _reach_table(entry, horizons)
    return "\n".join(lines)


def _reach_table(entry, horizons):
    """Markdown rows: steps each tuned baseline needs to reach the rule's validation accuracy
    at each horizon (">N" when it does not within the recorded steps)."""
    baselines = [m for m in entry["methods"] if "steps_to_reach_rule" in entry["methods"][m]]
    if not baselines:
        return []
    cols = [entry["steps"].index(h) for h in horizons]
    last = entry["steps"][-1]
    lines = ["Steps each baseline (best learning rate for the purpose) needs to reach the rule's "
             "validation accuracy at N steps:", "",
             "| method | " + " | ".join(f"N = {h}" for h in horizons) + " |",
             "|---|" + "---|" * len(horizons)]
    for method in baselines:
        reach = entry["methods"][method]["steps_to_reach_rule"]
        cells = [str(reach[i]) if reach[i] is not None else f"> {last}" for i in cols]
        lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_suite(summary, out_dir):
    """One PNG per task × architecture: test accuracy vs steps, a 95% band per method."""
    from blur_keras.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    paths = []
    for entry in summary["results"]:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        x = np.asarray(entry["steps"], float)
        for method, res in entry["methods"].items():
            mean = np.asarray(res["test_mean"])
            ci = np.nan_to_num(np.asarray(res["test_ci95"]))
            ax.plot(x + 1, mean, label=METHOD_NAMES[method])
            ax.fill_between(x + 1, mean - ci, mean + ci, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("training steps + 1 (log)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{entry['label']}\n(baselines: LR chosen on validation at each step)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = "curves_" + "".join(ch if ch.isalnum() else "_" for ch in entry["label"]) + ".png"
        path = os.path.join(out_dir, name)
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _csv_text(header, rows):
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _write(out_dir, summary, points, plot):
    write_atomic(os.path.join(out_dir, "points.csv"), _csv_text(
        ["config", "method", "learning_rate", "step", "seed", "split", "accuracy"], points))
    write_json(os.path.join(out_dir, "summary.json"), summary, indent=1)
    rows = [[entry["label"], method, step, res["test_mean"][i], res["test_ci95"][i],
             res["val_mean"][i], res["best_learning_rate"][i]]
            for entry in summary["results"] for method, res in entry["methods"].items()
            for i, step in enumerate(entry["steps"])]
    write_atomic(os.path.join(out_dir, "summary.csv"), _csv_text(
        ["config", "method", "step", "test_mean", "test_ci95", "val_mean", "best_learning_rate"],
        rows))
    write_atomic(os.path.join(out_dir, "table.md"), format_table(summary))
    if plot:
        summary["plots"] = plot_suite(summary, out_dir)


@gin.configurable(module="blur_keras", denylist=["rule", "out_dir", "log"])
def evaluate_suite(rule, out_dir, *, tasks=gin.REQUIRED, hidden_sizes=None, specs=None,
                   horizons=(10, 20, 50, 100, 500), seeds=8, batch_size=32, learning_rates=None,
                   baselines=BASELINES, loss="xent", record_every=10, dense_until=20,
                   val_examples=500, test_examples=2000, seed=0, inference=None, log=print):
    """``run_suite`` on ``blur_keras.data.Task`` objects (gin: ``evaluate_suite.<name>``).

    ``rule``: a ``Rule`` or a ``load_rule`` spec. ``tasks``: ``Task`` objects (test split
    capped at ``test_examples``; validation: ``val_examples`` carved from the training split)
    or ``TaskData``. Architectures: ``hidden_sizes`` (MLPs; default ``[(32,)]``) or ``specs``
    (chains of layer specs on the flat examples, e.g. a CNN, gin/eval/cnn.gin), not both.
    ``inference``: ``"batch"`` or ``"moving"`` overrides the rule's (``Rule.inference``).
    """
    if hidden_sizes is not None and specs is not None:
        raise ValueError("evaluate_suite takes hidden_sizes or specs, not both.")
    if specs is not None and not specs:
        raise ValueError("evaluate_suite.specs is empty; expected at least one chain.")
    hidden_sizes = [check_layer_sizes(h, "evaluate_suite.hidden_sizes entry")
                    for h in (hidden_sizes or ((32,),))]
    if isinstance(rule, str):
        rule = load_rule(rule)
    if inference is not None:
        if inference not in ("batch", "moving"):
            raise ValueError(f"evaluate_suite.inference={inference!r}; expected 'batch' or "
                             "'moving'.")
        rule = dataclasses.replace(rule, inference=inference)
    datas = [t if isinstance(t, TaskData) else task_data(t, val_examples, test_examples)
             for t in tasks]
    if not datas:
        raise ValueError("evaluate_suite needs at least one task.")
    for chain in specs or ():
        for data in datas:
            check_chain(tuple(chain), data)
    return run_suite(rule, datas, out_dir, hidden_sizes=tuple(tuple(h) for h in hidden_sizes),
                     horizons=tuple(horizons), seeds=seeds, batch_size=batch_size,
                     learning_rates=learning_rates, baselines=tuple(baselines), loss=loss,
                     record_every=record_every, dense_until=dense_until, seed=seed, log=log,
                     specs=specs)
