"""Checkpoints of a meta-training run: everything needed to resume it exactly.

One ``tf.train.Checkpoint`` holds the genome, the optimizer state, the step,
the curriculum position, the RNG state and (for CMA-ES) the pickled
evolution strategy, so a checkpoint is written or not as a whole.  TensorFlow
writes the data files under a temporary name and renames them, and updates the
``checkpoint`` index file atomically, so a run killed mid-write leaves the
previous checkpoint intact; ``CheckpointManager`` keeps the last few.

``run_settings.json`` (written when a run starts) holds the settings that change its
result; resuming with other settings is refused (``check_resumed_settings``).
``open_run`` puts it together: the run state, the checkpoint, the restore and the checks.
"""

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from blur_keras.core.config import BlurConfig
from blur_keras.files import write_json

__all__ = ["RunCheckpoint", "UnreadableCheckpoint", "checkpoint_candidates", "unreadable",
           "run_settings", "check_resumed_settings", "open_run"]


class UnreadableCheckpoint(ValueError):
    """A run directory holds checkpoints but none of them can be read."""


def _step_of(prefix):
    try:
        return int(prefix.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoint_candidates(directory):
    """Checkpoint prefixes in ``directory``, newest first: those the ``checkpoint`` file lists
    (when it can be read) and those whose ``.index`` file is present."""
    found = set()
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # a cut "checkpoint" file: the index files still name the checkpoints
        state = None
    if state is not None:
        found.update(os.path.join(directory, os.path.basename(p))
                     for p in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]
                     if p)
    if os.path.isdir(directory):
        found.update(os.path.join(directory, name[:-len(".index")])
                     for name in os.listdir(directory) if name.endswith(".index"))
    return sorted(found, key=lambda p: (_step_of(p), p), reverse=True)


def unreadable(prefix):
    """Why the checkpoint ``prefix`` cannot be read (one line), or None when every value in it
    reads back in full."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as err:  # noqa: BLE001  any failure to read means: do not resume from it
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return f"{type(err).__name__}: {lines[0][:200] if lines else 'no message'}"
    return None


class RunCheckpoint:
    """A resumable checkpoint of a run in ``directory``.

    Args:
      directory: where checkpoints live (``<model_dir>/checkpoints``).
      items: dict of trackables (variables, dicts of variables, modules).
      keep: how many recent checkpoints to keep.
      restore_from: where ``restore`` looks for the latest checkpoint (default:
        ``directory``); a non-chief worker saves to a temporary directory of its
        own and restores from the chief's.
    """

    def __init__(self, directory, items, keep=3, restore_from=None):
        self.directory = directory
        self.restore_from = restore_from or directory
        self.checkpoint = tf.train.Checkpoint(**items)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def restore(self):
        """Restore the newest readable checkpoint; returns its path or None when there is none.

        An unreadable checkpoint (a data or index file cut or missing) is reported in one line
        and the next older one is tried; when none is readable, ``UnreadableCheckpoint``.
        """
        candidates = checkpoint_candidates(self.restore_from)
        problems = []
        for path in candidates:
            problem = unreadable(path)
            if problem is None:
                if problems:
                    logging.warning("Resuming from the older checkpoint %s instead.", path)
                self.checkpoint.restore(path).assert_existing_objects_matched()
                return path
            logging.warning("Checkpoint %s is unreadable: %s", path, problem)
            problems.append(f"{os.path.basename(path)}: {problem}")
        if candidates:
            raise UnreadableCheckpoint(
                f"No checkpoint in {self.restore_from} is readable ({'; '.join(problems)}); "
                "the run cannot be resumed. Move that folder away to start the run over, or "
                "use another --model_dir.")
        return None

    def save(self, step):
        os.makedirs(self.directory, exist_ok=True)
        return self.manager.save(checkpoint_number=int(step))


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
    try:
        with open(path) as fh:
            saved = json.load(fh)
    except ValueError as err:
        raise ValueError(f"{path} is unreadable ({err}); cannot check that the run is resumed "
                         "with the same configuration. Move it away to skip that check.") from None
    diffs = [f"{name}: {saved.get(name, '<unset>')!r} in the checkpointed run, now "
             f"{settings.get(name, '<unset>')!r}"
             for name in sorted(set(saved) | set(settings)) if saved.get(name) != settings.get(name)]
    if diffs:
        raise ValueError(f"{model_dir} holds a run started with other settings; resuming it "
                         f"would not repeat that run. Differences: {'; '.join(diffs)}. Use another "
                         "--model_dir, or restore those settings.")


def _run_state(seed, unroll, num_species):
    """Variables of the run itself (beside the trainer's): seed, curriculum position, ..."""
    return {
        "seed": tf.Variable(int(seed), dtype=tf.int64, name="seed"),
        "unroll": tf.Variable(unroll, dtype=tf.int64, name="unroll"),
        "phase": tf.Variable(0, dtype=tf.int64, name="phase"),
        "nonfinite_streak": tf.Variable(np.zeros([num_species], np.int64), name="nonfinite_streak"),
        "best_species": tf.Variable(0, dtype=tf.int64, name="best_species"),
    }


def open_run(run_dir, write_dir, trainer, *, seed, unroll, settings, keep):
    """Checkpoint of a run (trainer and run state), restored if ``run_dir`` holds one.

    A new run writes ``run_settings.json``; a restored one must have the same seed.
    Returns ``(checkpoint, run_state, start_step)``.
    """
    run_state = _run_state(seed, unroll, trainer.species)
    ckpt = RunCheckpoint(os.path.join(write_dir, "checkpoints"),
                         {**trainer.checkpoint_items(), "run": run_state}, keep=keep,
                         restore_from=os.path.join(run_dir, "checkpoints"))
    restored = ckpt.restore()
    trainer.after_restore()
    start = int(trainer.step.numpy())
    if not restored:
        write_json(os.path.join(write_dir, "run_settings.json"), settings, indent=1)
        return ckpt, run_state, start
    if int(run_state["seed"].numpy()) != int(seed):
        raise ValueError(f"{write_dir} holds a run with seed {int(run_state['seed'].numpy())}, "
                         f"not {seed}: use another --model_dir.")
    logging.info("Resumed from %s at meta-step %d (T=%d, task phase %d).", restored, start,
                 int(run_state["unroll"].numpy()), int(run_state["phase"].numpy()))
    return ckpt, run_state, start
