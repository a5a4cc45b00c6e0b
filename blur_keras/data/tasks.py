"""Tasks, task mixtures and the meta-training stream (``tf.data``), all selectable from gin.

A :class:`Task` names a dataset (an image dataset or a synthetic task), a split, a class subset and a
resolution. A :class:`Mixture` samples one of its tasks by weight for every meta-step.
:func:`make_task_stream` turns either into an infinite, seeded ``tf.data.Dataset`` whose elements are
whole meta-steps, shaped for the population axes ``[species, replicas, batch, features]``::

    {"train_x": float32 [T, S, R, B, F],   # T = unroll_steps inner-step batches
     "train_y": int32   [T, S, R, B],      # labels 0..num_classes-1 (remapped for class subsets)
     "query_x": float32 [S, R, Bq, F],     # the unseen query batch of the meta-step
     "query_y": int32   [S, R, Bq],
     "task_id": int32 [],                  # index of the task in the mixture (0 for a single task)
     "num_classes": int32 []}              # classes of that task

Sampling (image tasks): the task's training pool (N examples) is put in a random order ``P``
(``tf.random.experimental.index_shuffle``), drawn afresh every ``reshuffle_every`` meta-steps. In each
meta-step every (species, replica) stream takes its own random start ``o`` and random stride ``a``
coprime with N, and reads the examples ``P[(o + a j) mod N]`` for ``j = 0, 1, 2, …``: these are
distinct for ``j < N``, and since ``P`` is a uniformly random order they are a uniformly random
sample without replacement. The first ``Bq`` (``j < Bq``) form the query batch; the train batches
take the next ``T * B``, so query examples never appear in that meta-step's inner steps, and no train
example repeats within the meta-step. If ``T * B`` exceeds the ``N - Bq`` examples left, the train
batches walk those again, each further pass in a new random order (an affine walk of its own). Cost
per example: a few integer operations and two gathers (a fresh ``index_shuffle`` per stream and
meta-step would cost several times more). Everything is a pure function of
``(seed, input pipeline, element index)``: reproducible, and each input pipeline of a distribution
strategy gets its own data.

Final evaluation uses the test split only: the stream refuses a task whose split is ``"test"``, and
:func:`make_eval_arrays` returns the test split.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import gin
import numpy as np

from blur_keras.data import images as _images
from blur_keras.data import preprocess as _pre
from blur_keras.data import synthetic as _syn

__all__ = [
    "Mixture",
    "PRESETS",
    "Task",
    "known_datasets",
    "make_eval_arrays",
    "make_task_stream",
    "preset_task",
    "task_arrays",
]

GIN_MODULE = "blur_keras.data"


def known_datasets():
    """Every name ``Task(dataset=...)`` accepts: image datasets, 2-D tasks, Boolean functions."""
    return _images.image_dataset_names() + _syn.synthetic_names()


def _unknown_dataset(name) -> ValueError:
    return ValueError(
        f"Unknown dataset {name!r}. Known datasets: image: {', '.join(_images.image_dataset_names())}; "
        f"2-D synthetic: {', '.join(_syn.SYNTHETIC_2D)}; Boolean (with n_bits): {', '.join(_syn.boolean_function_names())}."
    )


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Task:
    """One task: a dataset, its split, a class subset and a resolution.

    Attributes:
      dataset: an image dataset (``mnist``, ``fashion_mnist``, ``emnist_byclass``, ``emnist_letters``,
        ``mnist_5k``), a 2-D task (``xor``, ``two_moons``, …) or a Boolean function (``bool_parity``,
        ``bool_majority``, ``bool_and``, ``bool_or``, ``bool_random``); see :func:`known_datasets`.
      split: ``"train"`` (meta-training streams) or ``"test"``.
      classes: class subset, e.g. ``(0, 1, 2, 3, 4)``, ``range(10, 20)`` or ``"5-9"``; labels are
        remapped to ``0..len(classes)-1`` in the order given. ``None``: all classes.
      resolution: side of the square image fed to the network (``F = resolution²``).
      crop: centre crop applied before the resize (the paper: 20 of 28); ``None``: no crop.
      resize_method: ``tf.image.resize`` method (``"bilinear"``: no antialiasing).
      data_dir: TFDS data directory; local_dir: directory with IDX archives (see ``load_images``).
      n_bits, function_seed, query_fraction: Boolean-function tasks only.
      generator: the synthetic generator (filled in from ``dataset`` for synthetic tasks; may be
        given directly as a :class:`~blur_keras.data.synthetic.Synthetic2D` or ``BooleanFunction``,
        whose parameters then win over ``n_bits`` etc.: with ``dataclasses.replace`` pass
        ``generator=None`` to re-derive it from changed fields).
    """

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
    generator: Any = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.generator is not None:
            if not isinstance(self.generator, (_syn.Synthetic2D, _syn.BooleanFunction)):
                raise TypeError(f"generator must be a Synthetic2D or BooleanFunction, got {type(self.generator)}")
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
        if self.split not in _images.SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {_images.SPLITS}.")
        set_("classes", _pre.parse_classes(self.classes))
        if self.generator is not None:
            if self.classes is not None:
                raise ValueError(f"class subsets are for image datasets, not the synthetic task {self.dataset!r}")
            return
        spec = _images.IMAGE_DATASETS[self.dataset]
        if self.classes is not None:
            bad = [c for c in self.classes if not 0 <= c < spec.num_classes]
            if bad:
                raise ValueError(f"classes {bad} are outside {self.dataset}'s 0..{spec.num_classes - 1}")
        if not 1 <= int(self.resolution) <= 256:
            raise ValueError(f"resolution must be in 1..256, got {self.resolution}")
        if self.crop is not None and not 1 <= int(self.crop) <= 28:
            raise ValueError(f"crop must be in 1..28 (images are 28x28), got {self.crop}")

    @property
    def is_synthetic(self) -> bool:
        return self.generator is not None

    @property
    def num_features(self) -> int:
        if self.is_synthetic:
            return int(self.generator.num_features)
        return int(self.resolution) ** 2

    @property
    def num_classes(self) -> int:
        if self.is_synthetic:
            return int(self.generator.num_classes)
        if self.classes is not None:
            return len(self.classes)
        return _images.IMAGE_DATASETS[self.dataset].num_classes

    @property
    def identity_preprocessing(self) -> bool:
        """No crop and 28x28: features are exactly ``pixel / 255`` (the pool stays uint8)."""
        return self.crop is None and int(self.resolution) == 28

    def describe(self) -> str:
        parts = [self.dataset]
        if self.classes is not None:
            parts.append("classes=" + ",".join(map(str, self.classes)))
        if not self.is_synthetic:
            parts.append(f"{self.resolution}x{self.resolution}" + (f" (crop {self.crop})" if self.crop else ""))
        return " ".join(parts)


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Mixture:
    """Tasks sampled by weight for every meta-step (the paper: full MNIST plus digits 0–4 and 5–9).

    All tasks must share ``num_features``; ``num_classes`` is the largest of theirs (each task's labels
    stay ``0..its classes-1``; the stream reports the chosen task's ``num_classes``).
    ``weights=None``: uniform.
    """

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
        if len(weights) != len(tasks) or any(not (w >= 0 and math.isfinite(w)) for w in weights) or sum(weights) <= 0:
            raise ValueError(f"Mixture weights {weights} must be {len(tasks)} non-negative numbers, not all 0")
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "weights", tuple(w / sum(weights) for w in weights))

    @property
    def num_features(self) -> int:
        return self.tasks[0].num_features

    @property
    def num_classes(self) -> int:
        return max(t.num_classes for t in self.tasks)


# ------------------------------------------------------------------------------------------ arrays

_POOL_CACHE: Dict[tuple, Tuple[np.ndarray, np.ndarray]] = {}


def _pool(task: Task, split: str, keep_uint8: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Preprocessed ``(x [N, F], y int32 [N])`` of an image task's split (cached in-process).

    With ``keep_uint8`` and identity preprocessing, ``x`` stays uint8 (``x / 255`` is the feature).
    """
    uint8 = keep_uint8 and task.identity_preprocessing
    key = (task.dataset, split, task.classes, int(task.resolution), task.crop, task.resize_method,
           task.data_dir, task.local_dir, uint8, tuple(_images.default_search_dirs()))
    if key not in _POOL_CACHE:
        images, labels = _images.load_images(task.dataset, split, data_dir=task.data_dir, local_dir=task.local_dir)
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


def task_arrays(task: Task, split: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(float32 [N, F], int32 [N])``: an image task's split, preprocessed, classes remapped.

    The stream's ``train_index`` / ``query_index`` (``with_indices=True``) index these rows.
    """
    if task.is_synthetic:
        raise ValueError(f"{task.dataset} is synthetic: it has no stored split (see make_eval_arrays)")
    return _pool(task, split or task.split)


@gin.configurable(module=GIN_MODULE)
def make_eval_arrays(task: Task, num_examples: Optional[int] = None, seed: int = 1234) -> Tuple[np.ndarray, np.ndarray]:
    """Final-evaluation arrays ``(float32 [N, F], int64 [N])``: the **test** split of an image task.

    Synthetic tasks: a fixed sample (``num_examples``, default 10,000, from its own seed stream;
    Boolean functions with ``n_bits <= 16``: every input).
    """
    if task.is_synthetic:
        if isinstance(task.generator, _syn.Synthetic2D):
            return task.generator.eval_arrays(num_examples or 10000, seed)
        return task.generator.eval_arrays(num_examples, seed)
    x, y = _pool(task, "test")
    if num_examples is not None:
        x, y = x[:num_examples], y[:num_examples]
    return np.asarray(x, np.float32), y.astype(np.int64)


# ------------------------------------------------------------------------------------------ stream


def _units(n: int) -> np.ndarray:
    """The strides that walk all of ``0..n-1``: the integers in ``1..n-1`` coprime with ``n``."""
    if n <= 2:
        return np.ones(1, np.int64)
    r = np.arange(1, n, dtype=np.int64)
    return r[np.gcd(r, n) == 1]


def _affine_walk(seed, shape, n: int, units: np.ndarray):
    """Random start ``o`` in ``0..n-1`` and stride ``a`` coprime with ``n``, each of ``shape``:
    ``(o + a * j) mod n`` visits every position once as ``j`` runs over ``0..n-1``."""
    import tensorflow as tf

    o = tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, 0), 0, n, dtype=tf.int64)
    k = tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, 1), 0, len(units), dtype=tf.int64)
    return o, tf.gather(tf.constant(units), k)


class _ImageSampler:
    """Samples meta-steps of an image task (module docstring: *Sampling*)."""

    def __init__(self, task: Task, T: int, S: int, R: int, B: int, Bq: int):
        import tensorflow as tf

        x_np, y_np = _pool(task, task.split, keep_uint8=True)
        self.n = n = len(y_np)
        if Bq >= n:
            raise ValueError(
                f"{task.describe()}: the query batch ({Bq}) must be smaller than the training pool ({n} examples)")
        self.T, self.S, self.R, self.B, self.Bq = T, S, R, B, Bq
        self.keep = (0, S, 0, R)  # species and replica ranges drawn (a block: see make_task_stream)
        self.rest = n - Bq
        self.passes = -(-T * B // self.rest)
        self.units_n, self.units_rest = _units(n), _units(self.rest)
        with tf.device("/CPU:0"):
            self.x = tf.constant(x_np)
            self.y = tf.constant(y_np)
        self.raw = x_np.dtype == np.uint8

    def permutation(self, seed):
        """A random permutation of the pool (``index_shuffle``: O(n), stateless)."""
        import tensorflow as tf

        return tf.raw_ops.RandomIndexShuffle(
            index=tf.range(self.n, dtype=tf.int64), seed=_syn.stream_seeds(seed, []),
            max_index=tf.constant(self.n - 1, tf.int64))

    def _features(self, idx):
        import tensorflow as tf

        x = tf.gather(self.x, idx)
        return tf.cast(x, tf.float32) / 255.0 if self.raw else x

    def __call__(self, seed, perm):
        import tensorflow as tf

        T, S, R, B, Bq, n, rest = self.T, self.S, self.R, self.B, self.Bq, self.n, self.rest
        fold = tf.random.experimental.stateless_fold_in
        s0, s1, r0, r1 = self.keep
        o, a = _affine_walk(fold(seed, 0), [1, S, R, 1], n, self.units_n)
        o, a = o[:, s0:s1, r0:r1], a[:, s0:s1, r0:r1]  # the walks are drawn for all, kept for the block
        jj = tf.reshape(tf.range(T * B, dtype=tf.int64), [T, 1, 1, B])
        if self.passes == 1:
            j = Bq + jj
        else:  # more train examples than the rest of the pool: walk it again, in a new order each pass
            o2, a2 = _affine_walk(fold(seed, 1), [self.passes * S * R], rest, self.units_rest)
            s_idx = tf.reshape(tf.range(s0, s1, dtype=tf.int64), [1, s1 - s0, 1, 1])
            r_idx = tf.reshape(tf.range(r0, r1, dtype=tf.int64), [1, 1, r1 - r0, 1])
            which = tf.broadcast_to(((jj // rest) * S + s_idx) * R + r_idx, [T, s1 - s0, r1 - r0, B])
            j = Bq + (tf.gather(o2, which) + tf.gather(a2, which) * (jj % rest)) % rest
        tidx = tf.gather(perm, (o + a * j) % n)  # [T, S, R, B]
        jq = tf.reshape(tf.range(Bq, dtype=tf.int64), [1, 1, Bq])
        qidx = tf.gather(perm, (o[0] + a[0] * jq) % n)  # [S, R, Bq]
        return self._features(tidx), tf.gather(self.y, tidx), self._features(qidx), tf.gather(self.y, qidx), tidx, qidx


class _SyntheticSampler:
    def __init__(self, task: Task, T: int, S: int, R: int, B: int, Bq: int):
        self.task, self.shapes = task, ([T, S, R, B], [S, R, Bq])
        self.keep = (0, S, 0, R)

    def permutation(self, seed):
        import tensorflow as tf

        return tf.zeros([0], tf.int64)

    def __call__(self, seed, perm):
        import tensorflow as tf

        (tshape, qshape) = self.shapes
        tx, ty, qx, qy = self.task.generator.sample(seed, tshape, qshape)
        s0, s1, r0, r1 = self.keep
        tx, ty, qx, qy = tx[:, s0:s1, r0:r1], ty[:, s0:s1, r0:r1], qx[s0:s1, r0:r1], qy[s0:s1, r0:r1]
        return (tx, tf.cast(ty, tf.int32), qx, tf.cast(qy, tf.int32),
                tf.fill(tf.shape(ty), tf.constant(-1, tf.int64)), tf.fill(tf.shape(qy), tf.constant(-1, tf.int64)))


def _shard(input_context, species: int, replicas: int, shard_axis: Optional[str]):
    if input_context is None:
        return species, replicas, 1, 0
    n_sync = input_context.num_replicas_in_sync
    pipelines = input_context.num_input_pipelines
    per_pipeline = max(1, n_sync // pipelines)
    if shard_axis == "replicas":
        replicas = input_context.get_per_replica_batch_size(replicas)
    elif shard_axis == "species":
        species = input_context.get_per_replica_batch_size(species)
    elif shard_axis is not None:
        raise ValueError(f"shard_axis must be 'replicas', 'species' or None, got {shard_axis!r}")
    return species, replicas, per_pipeline, input_context.input_pipeline_id


@gin.configurable(module=GIN_MODULE)
def make_task_stream(
    task_or_mixture: Union[Task, Mixture],
    *,
    species: int,
    replicas: int,
    batch_size: int,
    unroll_steps: int,
    seed: int = 0,
    query_batch_size: Optional[int] = None,
    input_context=None,
    shard_axis: Optional[str] = "replicas",
    with_indices: bool = False,
    reshuffle_every: int = 16,
    num_parallel_calls: Optional[int] = None,
    prefetch: Optional[int] = None,
    start_step: int = 0,
    block: Optional[Tuple[int, int, int, int]] = None,
):
    """The infinite meta-training stream of a task or mixture (module docstring for the layout).

    Args:
      task_or_mixture: a :class:`Task` (split ``"train"``) or a :class:`Mixture`.
      species, replicas, batch_size: the population axes ``S``, ``R`` and the batch ``B``.
      unroll_steps: inner steps ``T`` per meta-step (one train batch each).
      seed: the stream is a pure function of it: same seed, same elements.
      query_batch_size: ``Bq``, default ``batch_size``.
      input_context: a ``tf.distribute.InputContext`` (from
        ``strategy.distribute_datasets_from_function``): each input pipeline draws its own data, the
        axis ``shard_axis`` (``"replicas"``, ``"species"`` or None) is divided by the number of
        replicas in sync, and all replicas of one global step share the same sampled task.
      with_indices: also yield ``train_index [T, S, R, B]`` / ``query_index [S, R, Bq]`` (int64 rows
        of :func:`task_arrays`; -1 for synthetic tasks).
      reshuffle_every: meta-steps that share one random permutation of each pool (module docstring).
      num_parallel_calls, prefetch: ``tf.data`` tuning (default AUTOTUNE).
      start_step: the first meta-step of the stream: its elements are, bit for bit, those of the
        stream started at 0 from element ``start_step`` on (of this input pipeline). The cost does not
        grow with ``start_step``: the element counter starts there and the permutation block of that
        element is computed directly (a resumed run does not replay the steps before it).
      block: ``(species_block, species_blocks, replica_block, replica_blocks)``: yield only that
        block of every element (``species / species_blocks`` species, ``replicas / replica_blocks``
        replicas), equal to slicing the whole element, but drawing only the block's examples
        (a device's part of a distributed population, ``blur_keras.meta.distribute``).
    """
    import tensorflow as tf

    mixture = task_or_mixture if isinstance(task_or_mixture, Mixture) else None
    if mixture is None:
        if not isinstance(task_or_mixture, Task):
            raise TypeError(f"make_task_stream needs a Task or a Mixture, got {type(task_or_mixture).__name__}")
        mixture = Mixture(tasks=(task_or_mixture,))
    for t in mixture.tasks:
        if t.split != "train" and not t.is_synthetic:
            raise ValueError(
                f"{t.describe()}: meta-training streams use the train split only (the test split is kept for "
                f"final evaluation with make_eval_arrays); got split={t.split!r}")
    for name, v in (("species", species), ("replicas", replicas), ("batch_size", batch_size), ("unroll_steps", unroll_steps)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    S, R, per_pipeline, pipeline_id = _shard(input_context, int(species), int(replicas), shard_axis)
    T, B = int(unroll_steps), int(batch_size)
    Bq = int(query_batch_size or batch_size)

    samplers = [(_SyntheticSampler if t.is_synthetic else _ImageSampler)(t, T, S, R, B, Bq) for t in mixture.tasks]
    if block is not None:
        sb, ns, rb, nr = (int(v) for v in block)
        if S % ns or R % nr or not (0 <= sb < ns and 0 <= rb < nr):
            raise ValueError(f"block={block}: {S} species / {R} replicas do not split that way")
        keep = (sb * S // ns, (sb + 1) * S // ns, rb * R // nr, (rb + 1) * R // nr)
        for sampler in samplers:
            sampler.keep = keep
        S, R = S // ns, R // nr
    reshuffle_every = max(1, int(reshuffle_every))
    num_classes = tf.constant([t.num_classes for t in mixture.tasks], tf.int32)
    logits = tf.math.log(tf.constant([mixture.weights], tf.float32))
    task_seed = tf.constant([int(seed), 0x7A5C], tf.int64)
    data_seed = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 0xDA7A], tf.int64), pipeline_id)
    perm_seed = tf.random.experimental.stateless_fold_in(tf.constant([int(seed), 0x9E53], tf.int64), pipeline_id)

    def permutations(epoch):
        seed_e = tf.random.experimental.stateless_fold_in(perm_seed, epoch)
        return tuple(s.permutation(tf.random.experimental.stateless_fold_in(seed_e, k)) for k, s in enumerate(samplers))

    def element(i, perms):
        step = i // per_pipeline  # the global step: same task for every replica of it
        if len(samplers) == 1:
            tid = tf.constant(0, tf.int32)
        else:
            tid = tf.random.stateless_categorical(
                logits, 1, tf.random.experimental.stateless_fold_in(task_seed, step), dtype=tf.int32)[0, 0]
        seed_i = tf.random.experimental.stateless_fold_in(data_seed, i)
        if len(samplers) == 1:
            out = samplers[0](seed_i, perms[0])
        else:
            out = tf.switch_case(tid, [lambda s=s, p=p: s(seed_i, p) for s, p in zip(samplers, perms)])
        tx, ty, qx, qy, tidx, qidx = out
        F = mixture.num_features
        result = {
            "train_x": tf.ensure_shape(tx, [T, S, R, B, F]),
            "train_y": tf.ensure_shape(ty, [T, S, R, B]),
            "query_x": tf.ensure_shape(qx, [S, R, Bq, F]),
            "query_y": tf.ensure_shape(qy, [S, R, Bq]),
            "task_id": tid,
            "num_classes": tf.gather(num_classes, tid),
        }
        if with_indices:
            result["train_index"] = tidx
            result["query_index"] = qidx
        return result

    auto = tf.data.AUTOTUNE
    if int(start_step) < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    first = int(start_step) * per_pipeline  # this pipeline's element index of that meta-step
    block, offset = divmod(first, reshuffle_every)
    # One permutation of each pool per `reshuffle_every` elements, repeated alongside them; a stream
    # started at `first` begins in the middle of block `first // reshuffle_every`.
    perms = tf.data.Dataset.counter(start=block, dtype=tf.int64).map(permutations).prefetch(1)
    perms = perms.flat_map(lambda *p: tf.data.Dataset.from_tensors(p).repeat(reshuffle_every))
    if offset:
        perms = perms.skip(offset)  # fewer than `reshuffle_every` copies of one computed block
    ds = tf.data.Dataset.zip((tf.data.Dataset.counter(start=first, dtype=tf.int64), perms))
    ds = ds.map(element, num_parallel_calls=num_parallel_calls or auto, deterministic=True)
    return ds.prefetch(prefetch or auto)


# ----------------------------------------------------------------------------------------- presets

PRESETS: Dict[str, Any] = {
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
    "emnist_10_19_10x10": dict(dataset="emnist_byclass", classes=tuple(range(10, 20)), crop=20, resolution=10),
}
PRESETS.update({name: dict(dataset=name) for name in _syn.SYNTHETIC_2D})


@gin.configurable(module=GIN_MODULE)
def preset_task(name: str, **overrides) -> Task:
    """A named task from :data:`PRESETS` (or any known dataset name), with field overrides."""
    if name in PRESETS:
        return Task(**{**PRESETS[name], **overrides})
    if name in known_datasets():
        return Task(dataset=name, **overrides)
    raise ValueError(f"Unknown task preset {name!r}. Presets: {', '.join(sorted(PRESETS))}; "
                     f"or any dataset: {', '.join(known_datasets())}.")


@gin.configurable(module=GIN_MODULE)
def paper_mnist_mixture(weights: Optional[Sequence[float]] = None, **overrides) -> Mixture:
    """docs/spec.md §5: full MNIST plus digits 0–4 and 5–9, cropped to 20×20, resized to
    10×10."""
    return Mixture(
        tasks=tuple(preset_task(n, **overrides) for n in ("mnist_10x10", "mnist_0_4_10x10", "mnist_5_9_10x10")),
        weights=weights)


def _register_presets():
    for name in PRESETS:
        if name in _syn.SYNTHETIC_2D:  # 2-D tasks: Task.dataset = 'xor' (short names like 'and' clash)
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
