"""Checks of a run's arguments, made before anything is built (``meta_train``)."""

import os

import gin
import numpy as np

from blur_keras.core.checks import check_layer_sizes
from blur_keras.core.config import BlurConfig
from blur_keras.rules.genome_file import as_scale

__all__ = ["check_final_eval_task", "check_model_dir", "check_run", "first_task"]


def first_task(task):
    """A Task, or the first task of a Mixture (what names the run)."""
    return task.tasks[0] if hasattr(task, "tasks") else task


def check_run(model_dir, task, blur_config, curriculum, hidden_sizes, ints, final_eval_task=None,
              scales=None):
    """Check what the run is given before anything is built; returns the layer sizes.
    ``scales``: ``{"init_scale": ..., "logit_scale": ...}`` (``as_scale``)."""
    from blur_keras.data import Mixture, Task

    if task is gin.REQUIRED or not isinstance(task, (Task, Mixture)):
        raise ValueError(f"meta_train.task must be a blur_keras.data Task or Mixture; got {task!r}.")
    if not isinstance(blur_config, BlurConfig):
        raise ValueError(f"meta_train.blur_config must be a BlurConfig; got {blur_config!r}.")
    for name, value in ints.items():
        low = 2 if name == "k" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"meta_train.{name} must be an int >= {low}; got {value!r}.")
    if ints["batch_size"] == 1 and blur_config.activation_norm:
        raise ValueError("meta_train.batch_size = 1 with BlurConfig.activation_norm: normalising "
                         "over a batch of one example erases the input. Use batch_size >= 2.")
    hidden_sizes = check_layer_sizes(hidden_sizes, "meta_train.hidden_sizes")
    for name, value in (scales or {}).items():
        try:
            as_scale(value, name)
        except ValueError as err:
            raise ValueError(f"meta_train.{name}={value!r}: "
                             f"{str(err).split(': ', 1)[-1]}") from None
    check_model_dir(model_dir)
    phases = curriculum.phases(task)
    features = {t.num_features for t in phases}
    if len(features) != 1:
        raise ValueError(f"All curriculum tasks must have the same number of features; got {features}.")
    sizes = (features.pop(), *[int(h) for h in hidden_sizes], max(int(t.num_classes) for t in phases))
    check_final_eval_task(final_eval_task, sizes)
    return sizes


def check_final_eval_task(task, sizes):
    """``meta_train.final_eval_task``: None (the run's task) or a Task / Mixture whose first task
    fits the run's network (its features, at most its classes)."""
    from blur_keras.data import Mixture, Task

    if task is None:
        return
    if not isinstance(task, (Task, Mixture)):
        raise ValueError("meta_train.final_eval_task must be None (the run's task) or a "
                         f"blur_keras.data Task or Mixture; got {task!r}.")
    judged = first_task(task)
    if judged.num_features != sizes[0] or judged.num_classes > sizes[-1]:
        raise ValueError(f"meta_train.final_eval_task {judged.describe()} has "
                         f"{judged.num_features} features and {judged.num_classes} classes; the "
                         f"run's network {tuple(sizes)} takes {sizes[0]} features and "
                         f"{sizes[-1]} classes.")


def check_model_dir(model_dir):
    """A run directory must be a directory (new or holding a run to resume)."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} is a file; it must be a directory (new or "
                         "holding a run to resume).")
