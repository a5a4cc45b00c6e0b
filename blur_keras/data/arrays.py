"""The arrays of a task: preprocessed pools of its splits (cached) and the final-evaluation arrays.

Final evaluation uses the test split only: :func:`make_eval_arrays` returns the test split, and the
meta-training stream (:mod:`~blur_keras.data.stream`) refuses a task whose split is ``"test"``.
"""

import gin
import numpy as np

from blur_keras.data import images as _images
from blur_keras.data import preprocess as _pre
from blur_keras.data import synthetic as _syn
from blur_keras.data.tasks import GIN_MODULE

__all__ = ["make_eval_arrays", "noisy_labels", "pool", "task_arrays"]

_POOL_CACHE = {}
LABEL_NOISE_SEED = 20210718  # one fixed draw: the same noisy examples in every run


def pool(task, split, keep_uint8=False):
    """Preprocessed ``(x [N, F], y int32 [N])`` of an image task's split (cached in-process).

    With ``keep_uint8`` and identity preprocessing, ``x`` stays uint8 (``x / 255`` is the feature).
    """
    uint8 = keep_uint8 and task.identity_preprocessing
    key = (task.dataset, split, task.classes, int(task.resolution), task.crop, task.resize_method,
           task.data_dir, task.local_dir, uint8, tuple(_images.default_search_dirs()))
    if key not in _POOL_CACHE:
        images, labels = _images.load_images(  # the stored order: the rows the streams index
            task.dataset, split, data_dir=task.data_dir, local_dir=task.local_dir, shuffle=False)
        images, labels = _pre.select_classes(images, labels, task.classes)
        if uint8:
            x = _pre.flatten(images)
        else:
            x = _pre.preprocess_images(images, task.crop, int(task.resolution), task.resize_method)
        x.setflags(write=False)
        y = labels.astype(np.int32)
        y.setflags(write=False)
        _POOL_CACHE[key] = (x, y)
    return _POOL_CACHE[key]


def noisy_labels(task, y):
    """``y`` (the labels of a split's rows, in order) with ``task.label_noise`` of them replaced
    by a class drawn uniformly (``LABEL_NOISE_SEED``: row ``i`` gets the same label in every
    run); ``y`` itself when the task has no label noise."""
    rate = float(task.label_noise)
    if not rate:
        return y
    rng = np.random.default_rng(LABEL_NOISE_SEED)
    flip = rng.random(len(y)) < rate
    drawn = rng.integers(0, task.num_classes, len(y)).astype(y.dtype)
    out = np.where(flip, drawn, y)
    out.setflags(write=False)
    return out


def task_arrays(task, split=None):
    """``(float32 [N, F], int32 [N])``: an image task's split, preprocessed, classes remapped.

    The stream's ``train_index`` / ``query_index`` (``with_indices=True``) index these rows.
    The labels are the true ones, also for a task with ``label_noise`` (``noisy_labels``
    gives those a network trains on).
    """
    if task.is_synthetic:
        raise ValueError(
            f"{task.dataset} is synthetic: it has no stored split (see make_eval_arrays)")
    return pool(task, split or task.split)


@gin.configurable(module=GIN_MODULE)
def make_eval_arrays(task, num_examples=None, seed=1234):
    """Final-evaluation arrays ``(float32 [N, F], int64 [N])``: the **test** split of an image task.

    Synthetic tasks: a fixed sample (``num_examples``, default 10,000, from its own seed stream;
    Boolean functions with ``n_bits <= 16``: every input).
    """
    if task.is_synthetic:
        if isinstance(task.generator, _syn.Synthetic2D):
            return task.generator.eval_arrays(num_examples or 10000, seed)
        return task.generator.eval_arrays(num_examples, seed)
    x, y = pool(task, "test")
    if num_examples is not None:
        x, y = x[:num_examples], y[:num_examples]
    return np.asarray(x, np.float32), y.astype(np.int64)
