"""Does a rule keep learning when left running?  The ``model.fit`` stability check.

For every task × architecture × seed a fresh ``BlurModel`` (the genome's own synapse
initialisation) trains with ``model.fit`` for many epochs, batch 32, on a shuffled subset of
the training split; validation accuracy (held-out training examples, not the test split) is
recorded after every epoch and at a few early step counts.  A ``NonFiniteError`` (or any
non-finite value in the logs) ends that curve, recorded with its epoch and step; it never
stops the check.  A configuration PASSES when no curve went non-finite and every seed's final
accuracy is within ``tolerance`` of its own best.  Tuned SGD, SGD with momentum and Adam can
run the same check beside the rule (``baselines``): what "stays within 0.01 of its best" means
for a gradient method on the same task.

Pure functions summarise, format and plot; ``run_check`` trains; ``fit_check`` (gin) loads
the rule and the tasks and writes ``fit.json``, ``table.md`` and ``fit_curves.png``.
"""

import math
import os
import re
import time

import gin
import keras
import numpy as np
import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.checks import check_layer_sizes
from blur_keras.core.config import BlurConfig
from blur_keras.core.errors import NonFiniteError
from blur_keras.files import write_atomic, write_json
from blur_keras.evaluation.baselines import (ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON, MOMENTUM,
                                             baseline_activations, check_baseline)
from blur_keras.evaluation.suite import METHOD_NAMES, TaskData, task_data
from blur_keras.rules.genome import Genome, resolve_config
from blur_keras.keras.layers import BlurDense
from blur_keras.keras.model import BlurModel
from blur_keras.core.synapses import init_synapses

__all__ = ["TOLERANCE", "EARLY_STEPS", "BASELINE_OPTIMIZERS", "load_genome", "build_model",
           "build_baseline", "reset_synapses",
           "train_subset", "val_accuracy", "fit_curve", "run_check", "curve_stats", "summarise",
           "passes", "format_table", "plot_curves", "write_report", "fit_check"]

TOLERANCE = 0.01
EARLY_STEPS = (10, 20, 50, 100)


# ---------------------------------------------------------------------------------- models

def load_genome(rule):
    """A species-free ``Genome`` with its config set: a ``Genome``, a genome ``.json`` path or a
    pretrained genome's name."""
    if isinstance(rule, Genome):
        genome = rule
    elif rule in Genome.pretrained_names() and not os.path.exists(rule):
        genome = Genome.pretrained(rule)
    else:
        genome = Genome.load_json(rule)
    if genome.species is not None:
        raise ValueError(f"The fit check trains one genome; {rule} holds {genome.species} species "
                         "(pick one with Genome.species_member).")
    if genome.config is None:
        genome.with_metadata(config=resolve_config(genome, None) or BlurConfig())
    return genome


def build_model(genome, sizes, seed=0, jit_compile=True, steps_per_execution=1):
    """A compiled ``BlurModel`` ``sizes[0]-…-sizes[-1]`` with the genome's own initialisation
    (``init_synapses``, scale ``genome.init_scale``, drawn from ``seed``); ``jit_compile``:
    XLA for ``fit`` (faster steps, a few seconds of compilation per model);
    ``steps_per_execution``: batches per compiled call (less Python overhead per step)."""
    genome = Genome.from_dict(genome.to_dict())  # one genome layer per model
    net = keras.Sequential([keras.Input((int(sizes[0]),))] +
                           [BlurDense(int(n), k=genome.k) for n in sizes[1:]])
    model = BlurModel(net, genome)
    model.compile(metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=int(steps_per_execution))
    return reset_synapses(model, seed)


# Keras's optimizers for evaluation.baselines.BASELINES, with the constants of its updates
BASELINE_OPTIMIZERS = {"sgd": lambda lr: keras.optimizers.SGD(lr),
                       "momentum": lambda lr: keras.optimizers.SGD(lr, momentum=MOMENTUM),
                       "adam": lambda lr: keras.optimizers.Adam(lr, ADAM_BETA_1, ADAM_BETA_2,
                                                                ADAM_EPSILON)}


def build_baseline(method, learning_rate, sizes, hidden_activation="tanh", seed=0,
                   jit_compile=True, steps_per_execution=1):
    """A compiled Keras MLP ``sizes[0]-…-sizes[-1]`` (``hidden_activation``, linear logits,
    softmax cross-entropy, Keras's default initialisation drawn from ``seed``) trained by
    ``method`` (``"sgd"``, ``"momentum"``: SGD with momentum 0.9, ``"adam"``: Keras's
    defaults; the updates of ``blur_keras.evaluation.baselines``) at ``learning_rate``: what
    the fit check compares a rule with."""
    check_baseline(method)
    keras.utils.set_random_seed(int(seed))
    net = keras.Sequential([keras.Input((int(sizes[0]),))]
                           + [keras.layers.Dense(int(n), activation=hidden_activation)
                              for n in sizes[1:-1]] + [keras.layers.Dense(int(sizes[-1]))])
    net.compile(optimizer=BASELINE_OPTIMIZERS[method](float(learning_rate)),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=jit_compile,
                steps_per_execution=int(steps_per_execution))
    return net


def reset_synapses(model, seed):
    """Give ``model`` fresh synapses: the genome's own initialisation drawn from ``seed``, and
    a schedule's step counter back at 0 (reusing a model keeps its compiled ``fit``); returns
    the model."""
    sizes = [model.blur_layers[0].input_width] + [layer.units for layer in model.blur_layers]
    model.assign_synapses(init_synapses(tf.constant([int(seed), 7919], tf.int64), sizes,
                                        model.genome.k, (), model.config,
                                        model.genome.init_scale or 1.0, model.synapse_dtype))
    if model.rule_step is not None:
        model.rule_step.assign(0)
    if model.moments_count is not None:  # the next step's statistics replace the tracked ones
        model.moments_count.assign(0)
    return model


def train_subset(data, train_examples, seed):
    """``(x, y)``: ``train_examples`` pool examples (all when fewer), a per-seed shuffle."""
    order = np.random.default_rng([int(seed), 31]).permutation(len(data.pool_y))
    order = order[:min(int(train_examples), len(order))]
    return data.pool_x[order], data.pool_y[order]


def val_accuracy(model, x, y, batch_size=32):
    """Accuracy of ``model(x)`` in batches of ``batch_size`` (as ``fit``'s validation: with
    ``activation_norm`` a prediction depends on its batch); non-finite rows count as wrong."""
    out = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                          for i in range(0, len(x), batch_size)])
    hit = (np.argmax(out, -1) == np.asarray(y)) & np.all(np.isfinite(out), -1)
    return float(hit.mean())


# ---------------------------------------------------------------------------------- training

class _Recorder(keras.callbacks.Callback):
    """Validation accuracy per epoch (from ``fit``'s logs) and at the early steps (at the end
    of the compiled call that reaches one, keyed by that call's last step: the early step
    itself when calls of ``steps_per_execution`` steps end there), the largest |synapse| after
    every epoch (``peak_synapse``: a rule whose synapses grow exponentially overflows float32
    at last, docs/results.md); notes the first non-finite log value and stops training there."""

    def __init__(self, val_x, val_y, early_steps, val_batch_size=32, steps_per_epoch=1):
        super().__init__()
        self.val_x, self.val_y, self.early_steps = val_x, val_y, set(early_steps)
        self.val_batch_size, self.steps_per_epoch = val_batch_size, steps_per_epoch
        self.epoch, self.step, self.epochs, self.early, self.nonfinite = 0, 0, [], {}, None
        self.peaks = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def global_step(self, batch):
        """1-based step of batch ``batch`` (0-based, within the current epoch)."""
        return self.epoch * self.steps_per_epoch + int(batch) + 1

    def on_train_batch_begin(self, batch, logs=None):
        self.step = self.global_step(batch)  # the first step of this call

    def on_train_batch_end(self, batch, logs=None):
        first, self.step = self.step, self.global_step(batch)
        if self.early_steps & set(range(first, self.step + 1)):
            self.early[self.step] = val_accuracy(self.model, self.val_x, self.val_y,
                                                 self.val_batch_size)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        bad = sorted(k for k, v in logs.items() if not math.isfinite(float(v)))
        if bad:
            self.nonfinite = {"epoch": epoch + 1, "step": self.step,
                              "message": f"non-finite {', '.join(bad)} after epoch {epoch + 1}"}
            self.model.stop_training = True
            return
        self.epochs.append(float(logs["val_accuracy"]))
        self.peaks.append(peak_synapse(self.model))


def peak_synapse(model):
    """The largest |W| or |V| of any BLUR layer of ``model`` (a float); for a baseline (a
    plain Keras model) its largest |weight|."""
    if not hasattr(model, "blur_layers"):
        return max(float(np.max(np.abs(np.asarray(w)))) for w in model.trainable_weights)
    return max(float(np.max(np.abs(np.asarray(t)))) for layer in model.blur_layers
               for t in (layer.forward_synapses, layer.backward_synapses))


def fit_curve(model, train, val, epochs=20, batch_size=32, early_steps=EARLY_STEPS, seed=0,
              val_batch_size=None):
    """Run ``model.fit``; returns the curve as a dict: ``val_accuracy`` (one entry per epoch,
    ``None`` from a non-finite epoch on), ``peak_synapse`` (``peak_synapse(model)`` after
    each finished epoch), ``early`` (step -> accuracy), ``nonfinite``
    (``None`` or ``{"epoch", "step", "message"}``, 1-based) and ``seconds``."""
    val_batch_size = int(val_batch_size or batch_size)
    recorder = _Recorder(val[0], val[1], early_steps, val_batch_size,
                         -(-len(train[1]) // batch_size))
    keras.utils.set_random_seed(int(seed))  # fit's shuffle
    start = time.time()
    try:
        model.fit(train[0], train[1], batch_size=batch_size, epochs=epochs, shuffle=True,
                  validation_data=val, validation_batch_size=val_batch_size,
                  callbacks=[recorder], verbose=0)
    except NonFiniteError as err:
        batch = re.search(r"training batch (\d+)", str(err))  # the batch the guard recorded
        recorder.nonfinite = {"epoch": recorder.epoch + 1,
                              "step": recorder.global_step(batch.group(1)) if batch else
                              recorder.step,
                              "message": str(err).split(" Lower the genome")[0]}
    fail = recorder.nonfinite
    early = {str(s): a for s, a in sorted(recorder.early.items())
             if fail is None or s < fail["step"]}
    curve = recorder.epochs + [None] * (epochs - len(recorder.epochs))
    return {"val_accuracy": curve, "peak_synapse": recorder.peaks, "early": early,
            "nonfinite": fail,
            "steps_per_epoch": -(-len(train[1]) // batch_size),
            "seconds": round(time.time() - start, 2)}


def run_check(genome, datas, hidden_sizes=((32,), (64,)), seeds=3, epochs=20, batch_size=32,
              train_examples=4000, early_steps=EARLY_STEPS, seed=0, jit_compile=True,
              steps_per_execution=1, baselines=None, val_batch_size=None, log=print):
    """Train every task × architecture × seed; returns the report dict (``fit.json``).

    ``baselines``: ``{method: learning rates}`` (``build_baseline``'s methods): after the rule,
    each method trains the same architecture on the same examples in the same order at every
    learning rate, and the one with the best mean final validation accuracy is reported
    (``_baseline_entry``).
    ``val_batch_size``: validation batches (default ``batch_size``, as ``fit``'s); with
    ``activation_norm`` a rule's prediction uses its batch's statistics, so larger batches
    measure it with less noise (a baseline's prediction does not depend on its batch).
    """
    baselines = dict(baselines or {})
    for method in baselines:  # before any training
        check_baseline(method)
    val_batch_size = int(val_batch_size or batch_size)
    report = {"epochs": int(epochs), "batch_size": int(batch_size), "seeds": int(seeds),
              "steps_per_execution": int(steps_per_execution), "val_batch_size": val_batch_size,
              "train_examples": int(train_examples), "early_steps": list(early_steps),
              "provenance": genome.provenance, "results": []}
    runs_per_shape = 1 + sum(len(lrs) for lrs in baselines.values())
    progress = {"done": 0, "total": len(datas) * len(hidden_sizes) * seeds * runs_per_shape,
                "start": time.time()}
    hidden_activation = activations.get(baseline_activations(genome.config, "xent")[0])

    def curves(label, make_model, data):
        """One curve per seed: ``make_model(seed)`` trained on that seed's examples."""
        out = []
        for r in range(seeds):
            train = train_subset(data, train_examples, seed + r)
            curve = fit_curve(make_model(seed + r), train, (data.val_x, data.val_y), epochs,
                              batch_size, early_steps, seed + r, val_batch_size)
            curve.update(seed=seed + r, train_examples=len(train[1]))
            out.append(curve)
            progress["done"] += 1
            log(_progress_line(progress, f"{label} seed {seed + r}", curve))
        return out

    for data in datas:
        for widths in hidden_sizes:
            sizes = (data.num_features, *[int(w) for w in widths], data.num_classes)
            label = f"{data.name} {'-'.join(map(str, sizes))}"
            # compiled once per shape; each seed gets fresh synapses
            model = build_model(genome, sizes, seed, jit_compile, steps_per_execution)
            report["results"].append({"label": label, "task": data.name, "sizes": list(sizes),
                                      "curves": curves(label, lambda s: reset_synapses(model, s),
                                                       data)})
            for method, lrs in baselines.items():
                sweep = {float(lr): curves(f"{label} {METHOD_NAMES[method]} lr {lr:g}",
                                           lambda s, lr=lr: build_baseline(
                                               method, lr, sizes, hidden_activation, s,
                                               jit_compile, steps_per_execution), data)
                         for lr in lrs}
                report["results"].append(_baseline_entry(label, data.name, sizes, method, sweep))
    report["seconds"] = round(time.time() - progress["start"], 1)
    return report


def _progress_line(progress, what, curve):
    fail = curve["nonfinite"]
    elapsed = time.time() - progress["start"]
    left = progress["total"] - progress["done"]
    eta = f", ETA {elapsed / progress['done'] * left / 60:.1f} min" \
        if left and progress["done"] else ""
    return (f"[{progress['done']}/{progress['total']}] {what}: "
            + (f"non-finite at epoch {fail['epoch']} step {fail['step']}" if fail else
               f"final val acc {curve['val_accuracy'][-1]:.3f}")
            + f" ({curve['seconds']:.0f}s, total {elapsed:.0f}s{eta})")


def _baseline_entry(label, task, sizes, method, sweep):
    """The report entry of a baseline: the curves of the learning rate with the best mean final
    accuracy (ties: the smaller rate), that rate, and ``sweep``: rate -> mean final."""
    means = {lr: float(np.nanmean([curve_stats(c)[1] for c in cs])) for lr, cs in sweep.items()}
    best = max(means, key=lambda lr: (np.nan_to_num(means[lr], nan=-1.0), -lr))
    return {"label": f"{label} {METHOD_NAMES[method]} (lr {best:g})", "task": task,
            "sizes": list(sizes), "method": method, "learning_rate": best,
            "sweep": {f"{lr:g}": m for lr, m in means.items()}, "curves": sweep[best]}


# ---------------------------------------------------------------------------------- summary

def curve_stats(curve):
    """``(best, final)`` validation accuracy of one curve; ``best`` over the epochs and the
    early steps (NaN when none was recorded), ``final`` after the last epoch (NaN for a curve
    that went non-finite)."""
    acc = [np.nan if a is None else a for a in curve["val_accuracy"]]
    finished = [a for a in acc + list(curve.get("early", {}).values()) if np.isfinite(a)]
    best = max(finished) if finished else np.nan
    final = np.nan if curve["nonfinite"] is not None or not acc else acc[-1]
    return float(best), float(final)


def passes(curves, tolerance=TOLERANCE):
    """PASS: no curve went non-finite and every curve ends within ``tolerance`` of its best
    (a drop of exactly ``tolerance``, e.g. 10 of 1000 validation examples for 0.01, passes:
    the comparison allows 1e-6 for the round-off of float32 accuracies)."""
    for curve in curves:
        best, final = curve_stats(curve)
        if (curve["nonfinite"] is not None or not np.isfinite(final)
                or best - final > tolerance + 1e-6):
            return False
    return True


def _mean_spread(values):
    values = np.asarray([v for v in values if np.isfinite(v)], float)
    if not len(values):
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std()), len(values)


def summarise(entry, tolerance=TOLERANCE):
    """Per task × architecture: mean and spread (std) over seeds of best, final and final − best
    (finite curves only: ``n_final`` of them), the non-finite count and the PASS flag."""
    stats = [curve_stats(c) for c in entry["curves"]]
    best = _mean_spread([b for b, _ in stats])
    final = _mean_spread([f for _, f in stats])
    drop = _mean_spread([f - b for b, f in stats])
    fails = [c["nonfinite"] for c in entry["curves"] if c["nonfinite"] is not None]
    peaks = [c["peak_synapse"][-1] for c in entry["curves"] if c.get("peak_synapse")]
    return {"label": entry["label"], "best": best[:2], "final": final[:2], "drop": drop[:2],
            "n_final": final[2], "seeds": len(stats), "nonfinite": len(fails),
            "peak_synapse": max(peaks) if peaks else float("nan"),
            "nonfinite_epochs": [f["epoch"] for f in fails],
            "pass": passes(entry["curves"], tolerance)}


def _cell(pair):
    mean, spread = pair
    return "—" if not np.isfinite(mean) else f"{mean:.3f} ± {spread:.3f}"


def _table_note(report, tolerance):
    note = (f"`model.fit`, {report['epochs']} epochs, batch {report['batch_size']}, "
            f"{report['seeds']} seeds; PASS = no non-finite value and final within "
            f"{tolerance:g} of best (every seed). Best: over epochs and early steps; final and "
            "final − best: over the seeds that finished.")
    if report.get("val_batch_size", report["batch_size"]) != report["batch_size"]:
        note += f" Validation in batches of {report['val_batch_size']}."
    if any(entry.get("method") for entry in report["results"]):
        note += (" Baselines: the learning rate with the best mean final accuracy; their peak "
                 "is the largest \\|weight\\|.")
    return note


def format_table(report, tolerance=TOLERANCE):
    """Markdown: one row per task × architecture (mean ± std over seeds), and per baseline."""
    lines = [_table_note(report, tolerance), "",
             "| task / sizes | best val acc | final val acc | final − best | non-finite "
             "(epochs) | peak \\|synapse\\| (last epoch) | result |",
             "|---|---|---|---|---|---|---|"]
    for entry in report["results"]:
        s = summarise(entry, tolerance)
        nonfinite = f"{s['nonfinite']}/{s['seeds']}" + (
            f" ({', '.join(map(str, s['nonfinite_epochs']))})" if s["nonfinite"] else "")
        lines.append(f"| {s['label']} | {_cell(s['best'])} | {_cell(s['final'])} | "
                     f"{_cell(s['drop'])} | {nonfinite} | {s['peak_synapse']:.3g} | "
                     f"{'PASS' if s['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def plot_curves(report, path):
    """One panel per task × architecture: validation accuracy vs epoch (early steps at their
    fraction of an epoch), one line per seed; a cross where a curve went non-finite; the peak
    |synapse| per epoch dotted, on a log axis at the right."""
    from blur_keras.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    n = len(report["results"])
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax, entry in zip(axes.flat, report["results"]):
        twin = None  # the log axis of the peak |synapse|, made for the first curve with one
        for curve in entry["curves"]:
            per = curve.get("steps_per_epoch") or 1
            early = sorted((int(s) / per, a) for s, a in curve.get("early", {}).items())
            acc = [(e + 1.0, np.nan if a is None else a)
                   for e, a in enumerate(curve["val_accuracy"])]
            x, y = np.array(sorted(early + acc), float).reshape(-1, 2).T
            line, = ax.plot(x, y, marker=".", label=f"seed {curve['seed']}")
            fail = curve["nonfinite"]
            if fail is not None:
                ax.plot([fail["step"] / per], [0.0], "x", color=line.get_color(), markersize=9)
            peaks = curve.get("peak_synapse") or []
            if peaks:
                twin = twin or ax.twinx()
                twin.plot(np.arange(1, len(peaks) + 1), peaks, ":", color=line.get_color())
        if twin is not None:
            twin.set_yscale("log")
            twin.set_ylabel("peak |synapse| (dotted)", fontsize=8)
        ax.set_title(entry["label"] + (" (x: non-finite)" if any(
            c["nonfinite"] for c in entry["curves"]) else ""), fontsize=9)
        ax.set_xlabel("epoch (early points: steps / steps per epoch)")
        ax.set_xlim(0, report["epochs"] + 0.5)
        ax.set_ylabel("val accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_report(report, out_dir, tolerance=TOLERANCE, plot=True):
    """``fit.json``, ``table.md`` and (``plot``) ``fit_curves.png`` in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    report["summary"] = [summarise(e, tolerance) for e in report["results"]]
    write_json(os.path.join(out_dir, "fit.json"), report, indent=1, default=float)
    write_atomic(os.path.join(out_dir, "table.md"), format_table(report, tolerance))
    if plot:
        plot_curves(report, os.path.join(out_dir, "fit_curves.png"))
    return report


@gin.configurable(module="blur_keras", denylist=["rule", "out_dir", "log"])
def fit_check(rule, out_dir, *, tasks=gin.REQUIRED, hidden_sizes=((32,), (64,)), seeds=3,
              epochs=20, batch_size=32, train_examples=4000, val_examples=1000,
              early_steps=EARLY_STEPS, tolerance=TOLERANCE, seed=0, jit_compile=True,
              steps_per_execution=10, baselines=None, val_batch_size=None, plot=True,
              log=print):
    """The fit check of ``rule`` (a ``Genome`` or genome ``.json``) on ``tasks``
    (``blur_keras.data.Task`` or ``TaskData``; validation: ``val_examples`` held out of the
    training split), and of the ``baselines`` (``run_check``) beside it; writes the files to
    ``out_dir`` and returns the report."""
    hidden_sizes = [check_layer_sizes(h, "fit_check.hidden_sizes entry") for h in hidden_sizes]
    genome = load_genome(rule)
    datas = [t if isinstance(t, TaskData) else task_data(t, val_examples, 1) for t in tasks]
    if not datas:
        raise ValueError("fit_check needs at least one task.")
    report = run_check(genome, datas, tuple(tuple(h) for h in hidden_sizes), int(seeds),
                       int(epochs), int(batch_size), int(train_examples), tuple(early_steps),
                       int(seed), bool(jit_compile), int(steps_per_execution), baselines,
                       val_batch_size, log)
    report["rule"] = rule if isinstance(rule, str) else genome.name
    report["config"] = genome.config.to_dict()
    report["tolerance"] = float(tolerance)
    return write_report(report, out_dir, tolerance, plot)
