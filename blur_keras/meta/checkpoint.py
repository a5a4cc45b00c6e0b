"""Checkpoints of a meta-training run: everything needed to resume it exactly.

One ``tf.train.Checkpoint`` holds the genome, the optimizer state, the step,
the curriculum position, the RNG state and (for CMA-ES) the pickled
evolution strategy, so a checkpoint is written or not as a whole.  TensorFlow
writes the data files under a temporary name and renames them, and updates the
``checkpoint`` index file atomically, so a run killed mid-write leaves the
previous checkpoint intact; ``CheckpointManager`` keeps the last few.
"""

import os

import tensorflow as tf

__all__ = ["RunCheckpoint"]


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
        """Restore the latest checkpoint; returns its path or None when there is none."""
        path = tf.train.latest_checkpoint(self.restore_from)
        if path is None:
            return None
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step):
        os.makedirs(self.directory, exist_ok=True)
        return self.manager.save(checkpoint_number=int(step))
