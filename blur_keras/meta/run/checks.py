"""Checks of a run made before anything is built (``meta_train``); the parts check
themselves when they are built (``blur_keras.meta.run.parts``)."""

import os

__all__ = ["check_model_dir", "first_task"]


def first_task(task):
    """A Task, or the first task of a Mixture (what names the run)."""
    return task.tasks[0] if hasattr(task, "tasks") else task


def check_model_dir(model_dir):
    """A run directory must be a directory (new or holding a run to resume)."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} is a file; it must be a directory (new or "
                         "holding a run to resume).")
