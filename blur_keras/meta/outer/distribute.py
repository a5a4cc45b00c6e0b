"""The population over the devices of a ``tf.distribute`` strategy.

A meta-step's work is a grid ``species × replicas``: both axes are batch axes
of the meta-loss, so either (or both) can be split over devices.  A *layout*
``(species_shards, replica_shards)`` with ``species_shards · replica_shards =
num_replicas_in_sync`` says how; device ``d`` (``replica_id_in_sync_group``)
holds species block ``d // replica_shards`` and replica block
``d % replica_shards``.

* ``shard_axis="replicas"``: ``(1, n)``: every device holds every species and
  ``R / n`` replicas (the gradients are averaged over the devices);
* ``"species"``: ``(n, 1)``: every device holds ``S / n`` species and every
  replica (one replica per species can still use ``n`` devices);
* ``"both"``: ``(gcd(n, S), n / gcd(n, S))``.

A device's results are scattered into zeros at its species' positions and
summed over the devices (adding zeros is exact), then divided by the replica
shards: every device ends with the whole population's values, and as the
synapses and the data of a (species, replica) cell do not depend on the
layout, neither does the result (up to float round-off of the replica mean).

CMA-ES candidates are split the same way (``sharded_population_eval``): each
device evaluates ``ceil(λ / n)`` of them (the last one repeated to fill the
last device) on the shared batch.

``distribute_stream`` feeds a layout from ``distribute_datasets_from_function``:
each input pipeline (a worker) draws its own devices' blocks of the seeded
global stream (``make_task_stream(block=...)``), so a multi-worker run sees the
data of a single-process run and divides the input work.
"""

import math

import tensorflow as tf

from blur_keras.meta.objective.batch import BATCH_AXES

__all__ = ["SHARD_AXES", "shard_layout", "device_block", "device_blocks", "shard_batch",
           "scatter_species",
           "take_species", "distribute_stream", "sharded_population_eval"]

SHARD_AXES = ("replicas", "species", "both")



def shard_layout(shard_axis, num_devices, species, replicas=None):
    """``(species_shards, replica_shards)`` of ``num_devices`` (see the module docstring).

    Raises ``ValueError`` when ``species`` (or ``replicas``, if given) do not split evenly.
    """
    if shard_axis not in SHARD_AXES:
        raise ValueError(f"shard_axis={shard_axis!r}; expected one of {SHARD_AXES}.")
    n, species = int(num_devices), int(species)
    ns = {"replicas": 1, "species": n, "both": math.gcd(n, species)}[shard_axis]
    nr = n // ns
    if species % ns:
        raise ValueError(f"shard_axis={shard_axis!r}: {species} species do not split over "
                         f"{ns} devices; use a multiple of {ns} species or shard_axis='both'.")
    if replicas is not None and int(replicas) % nr:
        raise ValueError(f"shard_axis={shard_axis!r}: replicas={replicas} do not split over "
                         f"{nr} devices (of {n}); use a multiple of {nr}.")
    return ns, nr


def device_block(replica_id, replica_shards):
    """``(species block, replica block)`` of the device ``replica_id`` (int or scalar tensor)."""
    return replica_id // replica_shards, replica_id % replica_shards


def _block(value, axis, block, count):
    part = int(value.shape[axis]) // count
    return tf.gather(value, block * part + tf.range(part), axis=axis)


def shard_batch(batch, replica_id, layout):
    """The part of a global batch (``train_x [T, S, R, B, F]`` …) that device ``replica_id`` holds.

    A species axis of 1 (data shared by all species) is kept whole.
    """
    ns, nr = layout
    sb, rb = device_block(replica_id, nr)
    out = {}
    for key, (s_axis, r_axis) in BATCH_AXES.items():
        value = tf.convert_to_tensor(batch[key])
        if ns > 1 and int(value.shape[s_axis]) > 1:
            value = _block(value, s_axis, sb, ns)
        if nr > 1:
            if int(value.shape[r_axis]) % nr:
                raise ValueError(f"{key}: {value.shape[r_axis]} replicas do not split over "
                                 f"{nr} devices.")
            value = _block(value, r_axis, rb, nr)
        out[key] = value
    return out


def take_species(value, first, count):
    """``value[first : first + count]`` along the leading (species) axis; ``first`` may be a tensor."""
    return tf.gather(value, first + tf.range(count), axis=0)


def scatter_species(value, first, total, axis=0):
    """``value`` (a shard of ``value.shape[axis]`` species) placed at ``first`` in zeros of ``total``."""
    value = tf.convert_to_tensor(value)
    perm = [axis] + [i for i in range(value.shape.rank) if i != axis]
    moved = tf.transpose(value, perm) if axis else value
    index = (first + tf.range(tf.shape(moved)[0]))[:, None]
    full = tf.scatter_nd(index, moved, tf.concat([[int(total)], tf.shape(moved)[1:]], 0))
    if not axis:
        return full
    inverse = [perm.index(i) for i in range(len(perm))]
    return tf.transpose(full, inverse)


def device_blocks(device, layout):
    """``(species_block, species_blocks, replica_block, replica_blocks)`` of a device."""
    ns, nr = layout
    sb, rb = device_block(int(device), nr)
    return sb, ns, rb, nr


def distribute_stream(strategy, make_global_dataset, layout, make_block_dataset=None):
    """A distributed dataset of a global stream, sharded by ``layout`` over the strategy's devices.

    Pipeline ``p`` (a worker) with ``L`` local devices yields, for each meta-step, the shards of
    the devices ``p·L … p·L + L − 1`` in that order (``distribute_datasets_from_function`` deals
    consecutive elements of a pipeline to its devices).

    ``make_block_dataset(block)``: the seeded global stream's block (``device_blocks``) of one
    device, drawn alone (``make_task_stream(block=...)``): a worker draws only its devices' data.
    Otherwise ``make_global_dataset()``: the whole stream, built on every pipeline and sliced.
    """

    def dataset_fn(ctx):
        local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        ids = [ctx.input_pipeline_id * local + i for i in range(local)]

        def stacked(*parts):
            return tf.data.Dataset.from_tensor_slices(
                {k: tf.stack([p[k] for p in parts]) for k in BATCH_AXES})

        if make_block_dataset is not None:
            blocks = [make_block_dataset(device_blocks(d, layout)) for d in ids]
            return tf.data.Dataset.zip(tuple(blocks)).flat_map(stacked)
        return make_global_dataset().flat_map(
            lambda element: stacked(*[shard_batch(element, d, layout) for d in ids]))

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def sharded_population_eval(strategy, eval_fn, num_candidates):
    """A ``tf.function(params, seeds, batch) -> aux`` evaluating the candidates split over devices.

    ``eval_fn(params, seeds, batch)`` returns ``aux`` (``accuracy [λ]``, ``inner_accuracy
    [T, λ]``, ``finite [λ]``) for the candidates (species axis) of ``params``; every device
    gets ``ceil(λ / n)`` of them and the same ``seeds`` and ``batch``; the results are gathered
    (scatter into zeros, sum over devices) and cut back to ``λ``.
    """
    n = strategy.num_replicas_in_sync
    per = -(-int(num_candidates) // n)
    total = per * n

    def replica_fn(params, seeds, batch):
        ctx = tf.distribute.get_replica_context()
        first = ctx.replica_id_in_sync_group * per
        aux = eval_fn({k: take_species(v, first, per) for k, v in params.items()}, seeds, batch)
        out = {"accuracy": scatter_species(aux["accuracy"], first, total),
               "inner_accuracy": scatter_species(aux["inner_accuracy"], first, total, axis=1),
               "finite": scatter_species(tf.cast(aux["finite"], tf.float32), first, total)}
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, out)

    def run(params, seeds, batch):
        pad = total - int(num_candidates)
        params = {k: tf.concat([v, tf.repeat(v[-1:], pad, axis=0)], 0) if pad else v
                  for k, v in params.items()}
        out = strategy.experimental_local_results(
            strategy.run(replica_fn, args=(params, seeds, batch)))[0]
        return {"accuracy": out["accuracy"][:num_candidates],
                "inner_accuracy": out["inner_accuracy"][:, :num_candidates],
                "finite": out["finite"][:num_candidates] > 0.5}

    return tf.function(run, autograph=False)
