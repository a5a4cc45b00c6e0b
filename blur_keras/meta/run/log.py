"""The run log: ``metrics.jsonl``, ``eval.jsonl``, TensorBoard scalars and the progress line.

``metrics.jsonl`` holds one line per meta-step (the trainer's metrics but the inner
curve), ``eval.jsonl`` one per validation; a resumed run first drops the lines of the
steps it repeats.  TensorBoard scalars are written with ``tf.summary.write`` (no
tensorboard package needed).
"""

import json
import math
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from blur_keras.files import write_atomic

__all__ = ["RunLog", "Progress", "truncate_jsonl", "fmt_time"]


def _scalars_metadata():
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"  # what TensorBoard's scalar dashboard reads
    return meta.SerializeToString()


_SCALARS = _scalars_metadata()


def _scalar(name, value, step=None):
    """A TensorBoard scalar summary."""
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=_SCALARS)


def _jsonable(metrics):
    out = {}
    for key, v in metrics.items():
        v = np.asarray(v)
        out[key] = v.tolist() if v.dtype != bool else v.astype(bool).tolist()
    return out


def truncate_jsonl(path, keep_below):
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
    write_atomic(path, "".join(kept))


def fmt_time(seconds):
    """``1h02m03s`` / ``2m03s`` (``?`` when not finite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
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
        return f"{rate:.2f} meta-steps/s, ETA {fmt_time(eta)}"


class RunLog:
    """The log sinks of a run in ``model_dir`` from meta-step ``start`` on (a context manager)."""

    def __init__(self, model_dir, start, num_steps):
        self.metrics_path = os.path.join(model_dir, "metrics.jsonl")
        self.eval_path = os.path.join(model_dir, "eval.jsonl")
        truncate_jsonl(self.metrics_path, start)
        truncate_jsonl(self.eval_path, start)
        self.num_steps = num_steps
        self.progress = Progress(num_steps, start)
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))
        self._metrics = open(self.metrics_path, "a")
        self._eval = open(self.eval_path, "a")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._metrics.close()
        self._eval.close()
        self.writer.flush()

    def scalars(self, step, scalars):
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                _scalar(name, value)

    def meta_step(self, step, unroll, phase, metrics, scalars):
        """One ``metrics.jsonl`` line and the step's scalars (``curriculum/unroll`` added)."""
        record = {"step": step, "unroll": unroll, "phase": phase,
                  **_jsonable({k: v for k, v in metrics.items() if k != "inner_accuracy"})}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        self.scalars(step, {**scalars, "curriculum/unroll": unroll})

    def progress_line(self, step, unroll, summary, scalars):
        """The progress line (and the scalars that go with it)."""
        self.scalars(step, scalars)
        logging.info("meta-step %d/%d T=%d | %s | %s", step + 1, self.num_steps, unroll, summary,
                     self.progress.line(step))

    def validation(self, step, unroll, accuracy, best, curve):
        """One ``eval.jsonl`` line, the validation scalars and a log line."""
        self._eval.write(json.dumps({"step": step, "unroll": unroll,
                                     "val_accuracy": accuracy.tolist(), "best_species": best}) + "\n")
        self._eval.flush()
        scalars = {f"val_accuracy/species_{s}": float(a) for s, a in enumerate(accuracy)}
        scalars.update({f"inner_accuracy/step_{i:03d}": float(a) for i, a in enumerate(curve)})
        self.scalars(step, scalars)
        logging.info("validation at meta-step %d: accuracy %s (best species %d)",
                     step + 1, np.round(accuracy, 3).tolist(), best)
