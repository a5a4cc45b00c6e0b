"""Task definitions: :class:`Task`, :class:`Mixture`, the named presets, and their gin registration.

A :class:`Task` names a dataset (an image dataset or a synthetic task), a split, a class subset
and a resolution. A :class:`Mixture` samples one of its tasks by weight for every meta-step (the
stream: :mod:`~blur_keras.data.stream`). :data:`PRESETS` names the tasks of the paper and of the gin
files; :func:`preset_task` builds one, and every preset is also a gin configurable of its own name.
"""

import dataclasses
import math
from typing import Any, Optional, Sequence

import gin

from blur_keras.data import images as _images
from blur_keras.data import preprocess as _pre
from blur_keras.data import synthetic as _syn

__all__ = [
    "Mixture",
    "PRESETS",
    "Task",
    "known_datasets",
    "paper_mnist_mixture",
    "preset_task",
]

GIN_MODULE = "blur_keras.data"


def known_datasets():
    """Every name ``Task(dataset=...)`` accepts: image datasets, 2-D tasks, Boolean functions."""
    return _images.image_dataset_names() + _syn.synthetic_names()


def _unknown_dataset(name):
    return ValueError(
        f"Unknown dataset {name!r}. Known datasets: "
        f"image: {', '.join(_images.image_dataset_names())}; "
        f"2-D synthetic: {', '.join(_syn.SYNTHETIC_2D)}; "
        f"Boolean (with n_bits): {', '.join(_syn.boolean_function_names())}."
    )


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Task:
    """One task: a dataset, its split, a class subset and a resolution.

    Attributes:
      dataset: an image dataset (``mnist``, ``fashion_mnist``, ``emnist_byclass``,
        ``emnist_letters``, ``mnist_5k``), a 2-D task (``xor``, ``two_moons``, …) or a Boolean
        function (``bool_parity``, ``bool_majority``, ``bool_and``, ``bool_or``, ``bool_random``);
        see :func:`known_datasets`.
      split: ``"train"`` (meta-training streams) or ``"test"``.
      classes: class subset, e.g. ``(0, 1, 2, 3, 4)``, ``range(10, 20)`` or ``"5-9"``; labels are
        remapped to ``0..len(classes)-1`` in the order given. ``None``: all classes.
      resolution: side of the square image fed to the network (``F = resolution²``).
      crop: centre crop applied before the resize (the paper: 20 of 28); ``None``: no crop.
      resize_method: ``tf.image.resize`` method (``"bilinear"``: no antialiasing).
      data_dir: TFDS data directory; local_dir: directory with IDX archives (see ``load_images``).
      n_bits, function_seed, query_fraction: Boolean-function tasks only.
      label_noise: fraction of the examples whose label a network trains on is replaced, once
        and for good, by a class drawn uniformly (possibly the true one): the same examples and
        labels in every run (``arrays.noisy_labels``). Query, validation and test labels stay
        true. Image tasks only; 0 (default): no noise.
      generator: the synthetic generator (filled in from ``dataset`` for synthetic tasks; may be
        given directly as a :class:`~blur_keras.data.synthetic.Synthetic2D` or
        ``BooleanFunction``, whose parameters then win over ``n_bits`` etc.: with
        ``dataclasses.replace`` pass ``generator=None`` to re-derive it from changed fields).
    """

    # The annotations define the dataclass fields.
    dataset: str = "mnist"
    split: str = "train"
    classes: Any = None
    resolution: int = 28
    crop: Optional[int] = None
    resize_method: str = "bilinear"
    data_dir: Optional[str] = None
    local_dir: Optional[str] = None
    n_bits: int = 4
    function_seed: int = 0
    query_fraction: float = 0.25
    label_noise: float = 0.0
    generator: Any = None

    def __post_init__(self):
        self._set_generator()
        if self.split not in _images.SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {_images.SPLITS}.")
        object.__setattr__(self, "classes", _pre.parse_classes(self.classes))
        if not 0.0 <= float(self.label_noise) < 1.0:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")
        if self.generator is not None:
            for what, value in (("class subsets are", self.classes),
                                ("label_noise is", self.label_noise)):
                if value:
                    raise ValueError(f"{what} for image datasets, not the synthetic task "
                                     f"{self.dataset!r}")
            return
        self._check_image_fields()

    def _set_generator(self):
        """Fill in ``generator`` from ``dataset`` (or ``dataset`` from a given generator)."""
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.generator is not None:
            if not isinstance(self.generator, (_syn.Synthetic2D, _syn.BooleanFunction)):
                raise TypeError(
                    "generator must be a Synthetic2D or BooleanFunction, "
                    f"got {type(self.generator)}")
            set_("dataset", self.generator.name)
            if isinstance(self.generator, _syn.BooleanFunction):  # the generator's parameters win
                for k in ("n_bits", "function_seed", "query_fraction"):
                    set_(k, getattr(self.generator, k))
        elif self.dataset in _syn.SYNTHETIC_2D:
            set_("generator", _syn.SYNTHETIC_2D[self.dataset])
        elif self.dataset in _syn.boolean_function_names():
            set_("generator", _syn.BooleanFunction(
                n_bits=self.n_bits, function=self.dataset[len("bool_"):],
                function_seed=self.function_seed, query_fraction=self.query_fraction))
        elif self.dataset not in _images.IMAGE_DATASETS:
            raise _unknown_dataset(self.dataset)

    def _check_image_fields(self):
        spec = _images.IMAGE_DATASETS[self.dataset]
        if self.classes is not None:
            bad = [c for c in self.classes if not 0 <= c < spec.num_classes]
            if bad:
                raise ValueError(
                    f"classes {bad} are outside {self.dataset}'s 0..{spec.num_classes - 1}")
        if not 1 <= int(self.resolution) <= 256:
            raise ValueError(f"resolution must be in 1..256, got {self.resolution}")
        if self.crop is not None and not 1 <= int(self.crop) <= 28:
            raise ValueError(f"crop must be in 1..28 (images are 28x28), got {self.crop}")

    @property
    def is_synthetic(self):
        return self.generator is not None

    @property
    def num_features(self):
        if self.is_synthetic:
            return int(self.generator.num_features)
        return int(self.resolution) ** 2

    @property
    def num_classes(self):
        if self.is_synthetic:
            return int(self.generator.num_classes)
        if self.classes is not None:
            return len(self.classes)
        return _images.IMAGE_DATASETS[self.dataset].num_classes

    @property
    def identity_preprocessing(self):
        """No crop and 28x28: features are exactly ``pixel / 255`` (the pool stays uint8)."""
        return self.crop is None and int(self.resolution) == 28

    def describe(self):
        parts = [self.dataset]
        if self.classes is not None:
            parts.append("classes=" + ",".join(map(str, self.classes)))
        if not self.is_synthetic:
            crop = f" (crop {self.crop})" if self.crop else ""
            parts.append(f"{self.resolution}x{self.resolution}{crop}")
        if self.label_noise:
            parts.append(f"label noise {self.label_noise:g}")
        return " ".join(parts)


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Mixture:
    """Tasks sampled by weight for every meta-step (the paper: full MNIST plus digits 0–4 and 5–9).

    All tasks must share ``num_features``; ``num_classes`` is the largest of theirs (each task's
    labels stay ``0..its classes-1``; the stream reports the chosen task's ``num_classes``).
    ``weights=None``: uniform.
    """

    # The annotations define the dataclass fields.
    tasks: Sequence[Task] = ()
    weights: Optional[Sequence[float]] = None

    def __post_init__(self):
        tasks = tuple(self.tasks)
        if not tasks:
            raise ValueError("a Mixture needs at least one task")
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"Mixture tasks must be Task objects, got {type(t).__name__}")
        feats = {t.num_features for t in tasks}
        if len(feats) != 1:
            raise ValueError(
                "all tasks of a Mixture must have the same num_features; got "
                + ", ".join(f"{t.describe()}: {t.num_features}" for t in tasks))
        if self.weights is None:
            weights = (1.0,) * len(tasks)
        else:
            weights = tuple(float(w) for w in self.weights)
        finite = all(w >= 0 and math.isfinite(w) for w in weights)
        if len(weights) != len(tasks) or not finite or sum(weights) <= 0:
            raise ValueError(
                f"Mixture weights {weights} must be {len(tasks)} non-negative numbers, not all 0")
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "weights", tuple(w / sum(weights) for w in weights))

    @property
    def num_features(self):
        return self.tasks[0].num_features

    @property
    def num_classes(self):
        return max(t.num_classes for t in self.tasks)


# ----------------------------------------------------------------------------------------- presets

PRESETS = {
    # docs/spec.md §5: meta-train on MNIST cropped to 20x20 and resized to 10x10, plus digits
    # 0-4 and 5-9.
    "mnist_10x10": dict(dataset="mnist", crop=20, resolution=10),
    "mnist_0_4_10x10": dict(dataset="mnist", classes=(0, 1, 2, 3, 4), crop=20, resolution=10),
    "mnist_5_9_10x10": dict(dataset="mnist", classes=(5, 6, 7, 8, 9), crop=20, resolution=10),
    "mnist_14x14": dict(dataset="mnist", resolution=14),
    "mnist_28x28": dict(dataset="mnist", resolution=28),
    "mnist_5k_10x10": dict(dataset="mnist_5k", crop=20, resolution=10),
    "fashion_mnist_10x10": dict(dataset="fashion_mnist", crop=20, resolution=10),
    "fashion_mnist_28x28": dict(dataset="fashion_mnist", resolution=28),
    "emnist_letters_10x10": dict(dataset="emnist_letters", crop=20, resolution=10),
    "emnist_byclass_10x10": dict(dataset="emnist_byclass", crop=20, resolution=10),
    "emnist_10_19_10x10": dict(
        dataset="emnist_byclass", classes=tuple(range(10, 20)), crop=20, resolution=10),
}
PRESETS.update({name: dict(dataset=name) for name in _syn.SYNTHETIC_2D})


@gin.configurable(module=GIN_MODULE)
def preset_task(name, **overrides):
    """A named task from :data:`PRESETS` (or any known dataset name), with field overrides."""
    if name in PRESETS:
        return Task(**{**PRESETS[name], **overrides})
    if name in known_datasets():
        return Task(dataset=name, **overrides)
    raise ValueError(f"Unknown task preset {name!r}. Presets: {', '.join(sorted(PRESETS))}; "
                     f"or any dataset: {', '.join(known_datasets())}.")


@gin.configurable(module=GIN_MODULE)
def paper_mnist_mixture(weights=None, **overrides):
    """docs/spec.md §5: full MNIST plus digits 0–4 and 5–9, cropped to 20×20, resized to
    10×10."""
    names = ("mnist_10x10", "mnist_0_4_10x10", "mnist_5_9_10x10")
    return Mixture(tasks=tuple(preset_task(n, **overrides) for n in names), weights=weights)


def _register_presets():
    for name in PRESETS:
        # 2-D tasks are chosen with Task.dataset = 'xor' (short names like 'and' would clash)
        if name in _syn.SYNTHETIC_2D:
            continue

        def make(_name=name, **overrides):
            return preset_task(_name, **overrides)

        make.__name__ = name
        make.__doc__ = f"Preset task {name!r}: Task(**{PRESETS[name]!r})."
        try:
            gin.external_configurable(make, name=name, module=GIN_MODULE)
        except ValueError:  # already registered (module reloaded)
            pass


_register_presets()
