"""The meta-training stream: :func:`make_task_stream` (``tf.data``), configurable from gin.

:func:`make_task_stream` turns a :class:`~blur_keras.data.tasks.Task` or
:class:`~blur_keras.data.tasks.Mixture` into an infinite, seeded ``tf.data.Dataset`` whose elements
are whole meta-steps, shaped for the population axes ``[species, replicas, batch, features]``::

    {"train_x": float32 [T, S, R, B, F],   # T = unroll_steps inner-step batches
     "train_y": int32   [T, S, R, B],      # labels 0..num_classes-1 (remapped for class subsets)
     "query_x": float32 [S, R, Bq, F],     # the unseen query batch of the meta-step
     "query_y": int32   [S, R, Bq],
     "task_id": int32 [],                  # index of the task in the mixture (0 for a single task)
     "num_classes": int32 []}              # classes of that task

Each element picks its task (by the mixture's weights, the same for every replica of a global
step) and asks that task's sampler (:mod:`~blur_keras.data.samplers`) for the examples.
Everything is a pure function of ``(seed, input pipeline, element index)``: reproducible, and each
input pipeline of a distribution strategy gets its own data.
"""

import gin
import tensorflow as tf

from blur_keras.data.samplers import make_sampler
from blur_keras.data.tasks import GIN_MODULE, Mixture, Task

__all__ = ["make_task_stream"]

_fold = tf.random.experimental.stateless_fold_in


def _as_mixture(task_or_mixture):
    """The mixture to stream (a single task: a mixture of one); train splits only."""
    mixture = task_or_mixture if isinstance(task_or_mixture, Mixture) else None
    if mixture is None:
        if not isinstance(task_or_mixture, Task):
            raise TypeError(
                "make_task_stream needs a Task or a Mixture, "
                f"got {type(task_or_mixture).__name__}")
        mixture = Mixture(tasks=(task_or_mixture,))
    for t in mixture.tasks:
        if t.split != "train" and not t.is_synthetic:
            raise ValueError(
                f"{t.describe()}: meta-training streams use the train split only (the test split "
                "is kept for final evaluation with make_eval_arrays); "
                f"got split={t.split!r}")
    return mixture


def _check_sizes(**sizes):
    for name, v in sizes.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def _shard(input_context, species, replicas, shard_axis):
    """``(species, replicas, elements per global step, pipeline id)`` of this input pipeline."""
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


def _apply_block(samplers, block, S, R):
    """Restrict every sampler to ``block``; returns the block's ``(species, replicas)``."""
    if block is None:
        return S, R
    sb, ns, rb, nr = (int(v) for v in block)
    if S % ns or R % nr or not (0 <= sb < ns and 0 <= rb < nr):
        raise ValueError(f"block={block}: {S} species / {R} replicas do not split that way")
    keep = (sb * S // ns, (sb + 1) * S // ns, rb * R // nr, (rb + 1) * R // nr)
    for sampler in samplers:
        sampler.keep = keep
    return S // ns, R // nr


def _element_fn(mixture, samplers, seed, pipeline_id, per_pipeline, shapes, with_indices):
    """The map function ``(element index i, permutations) -> element``."""
    T, S, R, B, Bq = shapes
    F = mixture.num_features
    num_classes = tf.constant([t.num_classes for t in mixture.tasks], tf.int32)
    logits = tf.math.log(tf.constant([mixture.weights], tf.float32))
    task_seed = tf.constant([int(seed), 0x7A5C], tf.int64)
    data_seed = _fold(tf.constant([int(seed), 0xDA7A], tf.int64), pipeline_id)

    def element(i, perms):
        step = i // per_pipeline  # the global step: same task for every replica of it
        seed_i = _fold(data_seed, i)
        if len(samplers) == 1:
            tid = tf.constant(0, tf.int32)
            out = samplers[0](seed_i, perms[0])
        else:
            tid = tf.random.stateless_categorical(
                logits, 1, _fold(task_seed, step), dtype=tf.int32)[0, 0]
            branches = [lambda s=s, p=p: s(seed_i, p) for s, p in zip(samplers, perms)]
            out = tf.switch_case(tid, branches)
        tx, ty, qx, qy, tidx, qidx = out
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

    return element


def _permutation_stream(samplers, seed, pipeline_id, first, reshuffle_every):
    """Each sampler's pool permutation for every element from ``first`` on.

    One permutation of each pool per ``reshuffle_every`` elements, repeated alongside them; a
    stream started at ``first`` begins in the middle of block ``first // reshuffle_every``, which
    is computed directly (the blocks before it are not replayed).
    """
    perm_seed = _fold(tf.constant([int(seed), 0x9E53], tf.int64), pipeline_id)

    def permutations(epoch):
        seed_e = _fold(perm_seed, epoch)
        return tuple(s.permutation(_fold(seed_e, k)) for k, s in enumerate(samplers))

    block, offset = divmod(first, reshuffle_every)
    perms = tf.data.Dataset.counter(start=block, dtype=tf.int64).map(permutations).prefetch(1)
    perms = perms.flat_map(lambda *p: tf.data.Dataset.from_tensors(p).repeat(reshuffle_every))
    if offset:
        perms = perms.skip(offset)  # fewer than `reshuffle_every` copies of one computed block
    return perms


@gin.configurable(module=GIN_MODULE)
def make_task_stream(
    task_or_mixture,
    *,
    species,
    replicas,
    batch_size,
    unroll_steps,
    seed=0,
    query_batch_size=None,
    input_context=None,
    shard_axis="replicas",
    with_indices=False,
    reshuffle_every=16,
    num_parallel_calls=None,
    prefetch=None,
    start_step=0,
    block=None,
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
      with_indices: also yield ``train_index [T, S, R, B]`` / ``query_index [S, R, Bq]`` (int64
        rows of :func:`task_arrays`; -1 for synthetic tasks).
      reshuffle_every: meta-steps that share one random permutation of each pool
        (:mod:`~blur_keras.data.samplers`).
      num_parallel_calls, prefetch: ``tf.data`` tuning (default AUTOTUNE).
      start_step: the first meta-step of the stream: its elements are, bit for bit, those of the
        stream started at 0 from element ``start_step`` on (of this input pipeline). The cost does
        not grow with ``start_step``: the element counter starts there and the permutation block
        of that element is computed directly (a resumed run does not replay the steps before it).
      block: ``(species_block, species_blocks, replica_block, replica_blocks)``: yield only that
        block of every element (``species / species_blocks`` species, ``replicas /
        replica_blocks`` replicas), equal to slicing the whole element, but drawing only the
        block's examples (a device's part of a distributed population,
        ``blur_keras.meta.outer.distribute``).
    """
    mixture = _as_mixture(task_or_mixture)
    _check_sizes(species=species, replicas=replicas, batch_size=batch_size,
                 unroll_steps=unroll_steps)
    S, R, per_pipeline, pipeline_id = _shard(input_context, int(species), int(replicas), shard_axis)
    T, B = int(unroll_steps), int(batch_size)
    Bq = int(query_batch_size or batch_size)
    samplers = [make_sampler(t, T, S, R, B, Bq) for t in mixture.tasks]
    S, R = _apply_block(samplers, block, S, R)
    element = _element_fn(mixture, samplers, seed, pipeline_id, per_pipeline,
                          (T, S, R, B, Bq), with_indices)
    if int(start_step) < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    first = int(start_step) * per_pipeline  # this pipeline's element index of that meta-step
    perms = _permutation_stream(samplers, seed, pipeline_id, first, max(1, int(reshuffle_every)))
    return _pipeline(element, perms, first, num_parallel_calls, prefetch)


def _pipeline(element, perms, first, num_parallel_calls, prefetch):
    """The element counter from ``first`` beside the permutation stream, mapped by ``element``
    in order (deterministic) and prefetched (``tf.data.AUTOTUNE`` where a value is None)."""
    ds = tf.data.Dataset.zip((tf.data.Dataset.counter(start=first, dtype=tf.int64), perms))
    auto = tf.data.AUTOTUNE
    ds = ds.map(element, num_parallel_calls=num_parallel_calls or auto, deterministic=True)
    return ds.prefetch(prefetch or auto)
