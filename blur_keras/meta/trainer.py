"""The gradient outer loop: a population of genomes trained by per-species Adam.

``GradientTrainer`` owns the genome variables (species axis ``S``), the Adam
moments and step counts, and the meta-step counter.  A meta-step
(``train_step``) runs under a ``tf.distribute`` strategy: the batch's replica
axis ``R`` is split across the devices, each device computes the meta-loss
and its gradient with respect to the genome (a ``jit_compile=True``
function), the gradients are all-reduced (mean), and every device applies the
same per-species Adam update.  With ``shard_axis="species"`` (or ``"both"``)
the species axis is split instead (or too): see ``blur_keras.meta.distribute``.

Synapse seeds come from ``(seed, step, global replica index)``, so a step's
result does not depend on the number of devices, and a resumed run repeats an
uninterrupted one exactly.
"""

import numpy as np
import tensorflow as tf

from blur_keras.genome import NAMES
from blur_keras.meta import distribute as dist
from blur_keras.meta.optim import adam_update, species_norm
from blur_keras.meta.unroll import meta_loss

__all__ = ["GradientTrainer", "step_seeds", "split_replicas"]


def step_seeds(seed, step, replica_ids):
    """``[len(replica_ids), 2]`` stateless seeds of the synapse initialisations of a step."""
    base = tf.random.experimental.stateless_fold_in(
        tf.constant([int(seed), 0x5E5], tf.int64), tf.cast(step, tf.int64))
    return tf.stack([tf.random.experimental.stateless_fold_in(base, tf.cast(r, tf.int64))
                     for r in replica_ids])


def split_replicas(batch, index, count):
    """The ``index``-th of ``count`` equal parts of a batch along its replica axis."""
    out = {}
    for key, value in batch.items():
        axis = {"train_x": 2, "train_y": 2, "query_x": 1, "query_y": 1}.get(key)
        if axis is None:
            continue
        size = value.shape[axis]
        if size % count:
            raise ValueError(f"{key}: {size} replicas do not split over {count} devices.")
        part = size // count
        out[key] = tf.gather(value, tf.range(index * part, (index + 1) * part), axis=axis)
    return out


class GradientTrainer(tf.Module):
    """Per-species Adam on the meta-loss (docs/spec.md §5).

    Args:
      genome: a ``Genome`` with a species axis (its values are the start).
      config: ``BlurConfig``; sizes: layer sizes ``n_0 … n_L``.
      learning_rate, clip_norm, beta1, beta2, epsilon: Adam (paper: 5e-4, 10).
      loss, recompute, init_scale, logit_scale: see ``meta_loss``.
      trainable: genome entries to train (default: all).
      seed: seed of the synapse initialisations.
      strategy: a ``tf.distribute.Strategy`` (default: the current one).
      jit_compile: compile the meta-gradient with XLA.
      shard_axis: what the devices split: ``"replicas"``, ``"species"`` or ``"both"``
        (``blur_keras.meta.distribute``); the result does not depend on it.
    """

    def __init__(self, genome, config, sizes, *, learning_rate=5e-4, clip_norm=10.0, beta1=0.9,
                 beta2=0.999, epsilon=1e-8, loss="xent", recompute=0, init_scale=1.0,
                 logit_scale=1.0, trainable=None, seed=0, strategy=None, jit_compile=True,
                 shard_axis="replicas", name="gradient_trainer"):
        super().__init__(name=name)
        if genome.species is None:
            raise ValueError("GradientTrainer needs a genome with a species axis "
                             "(Genome(..., species=S)).")
        unknown = sorted(set(trainable or ()) - set(NAMES))
        if unknown:
            raise ValueError(f"Unknown trainable genome entries {unknown}; known: {list(NAMES)}.")
        self.k, self.species, self.per_layer = genome.k, genome.species, genome.per_layer
        self.num_layers = genome.num_layers
        self.config, self.sizes = config, tuple(int(s) for s in sizes)
        self.hparams = dict(learning_rate=float(learning_rate),
                            clip_norm=None if clip_norm is None else float(clip_norm),
                            beta1=float(beta1), beta2=float(beta2), epsilon=float(epsilon))
        self.loss_kwargs = dict(loss=loss, recompute=int(recompute), per_layer=genome.per_layer,
                                init_scale=float(init_scale), logit_scale=float(logit_scale))
        self.trainable = tuple(trainable) if trainable else tuple(NAMES)
        self.seed = int(seed)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.layout = dist.shard_layout(shard_axis, self.strategy.num_replicas_in_sync,
                                        self.species)
        if self.layout[0] > 1:  # each device draws the population's synapses, keeps its species
            self.loss_kwargs["population_species"] = self.species
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        values = genome.numpy()
        with self.strategy.scope():
            self.params = {n: tf.Variable(values[n], name=n, aggregation=agg) for n in NAMES}
            self.m = {n: tf.Variable(np.zeros_like(values[n]), name="m_" + n, aggregation=agg)
                      for n in NAMES}
            self.v = {n: tf.Variable(np.zeros_like(values[n]), name="v_" + n, aggregation=agg)
                      for n in NAMES}
            self.count = tf.Variable(np.zeros([self.species], np.float32), name="adam_count",
                                     aggregation=agg)
            self.step = tf.Variable(0, dtype=tf.int64, name="step", aggregation=agg)
        self._jit = bool(jit_compile)
        self._grad_fn = tf.function(self._grad, jit_compile=self._jit, autograph=False)
        self._eval_fn = tf.function(self._eval, jit_compile=self._jit, autograph=False)
        self._apply_fn = tf.function(self._apply, jit_compile=self._jit, autograph=False)
        self._step_fn = tf.function(self._distributed_step, autograph=False)

    # -- pure pieces --------------------------------------------------------
    def _grad(self, params, seeds, batch):
        with tf.GradientTape() as tape:
            tape.watch(params)
            losses, aux = meta_loss(params, seeds, batch, self.config, self.sizes,
                                    **self.loss_kwargs)
            total = tf.reduce_sum(tf.where(tf.math.is_finite(losses), losses, 0.0))
        grads = tape.gradient(total, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return losses, aux, grads

    def _eval(self, params, seeds, batch):
        return meta_loss(params, seeds, batch, self.config, self.sizes, **self.loss_kwargs)

    def _apply(self, params, grads, m, v, count, finite):
        return adam_update(params, grads, m, v, count, finite=finite, trainable=self.trainable,
                           **self.hparams)

    def _replica_step(self, batch):
        ctx = tf.distribute.get_replica_context()
        num_local = int(batch["train_x"].shape[2])
        first = ctx.replica_id_in_sync_group * num_local
        if self.layout[0] > 1:
            return self._species_shard_step(ctx, batch)
        seeds = step_seeds(self.seed, self.step.read_value(),
                           [first + r for r in range(num_local)])
        params = {n: tf.identity(v.read_value()) for n, v in self.params.items()}
        losses, aux, grads = self._grad_fn(params, seeds, batch)
        mean = tf.distribute.ReduceOp.MEAN
        grads = ctx.all_reduce(mean, grads)
        losses, acc, inner = ctx.all_reduce(mean, [losses, aux["accuracy"], aux["inner_accuracy"]])
        finite = ctx.all_reduce(mean, tf.cast(aux["finite"], tf.float32)) > 0.999
        return self._update(params, grads, losses, acc, inner, finite)

    def _species_shard_step(self, ctx, batch):
        """The device's species block (and replica block): its gradients, scattered into the
        population's zeros and summed over the devices (``blur_keras.meta.distribute``)."""
        ns, nr = self.layout
        block, rblock = dist.device_block(ctx.replica_id_in_sync_group, nr)
        num_local, per = int(batch["train_x"].shape[2]), self.species // ns
        seeds = step_seeds(self.seed, self.step.read_value(),
                           [rblock * num_local + r for r in range(num_local)])
        params = {n: tf.identity(v.read_value()) for n, v in self.params.items()}
        s0 = block * per
        shard = {n: dist.take_species(p, s0, per) for n, p in params.items()}
        losses, aux, grads = self._grad_fn(shard, seeds, dict(batch, species_first=s0))
        out = [grads, losses, aux["accuracy"], tf.cast(aux["finite"], tf.float32)]
        out = tf.nest.map_structure(lambda t: dist.scatter_species(t, s0, self.species), out)
        out.append(dist.scatter_species(aux["inner_accuracy"], s0, self.species, axis=1))
        out = ctx.all_reduce(tf.distribute.ReduceOp.SUM, out)
        grads, losses, acc, finite, inner = tf.nest.map_structure(lambda t: t / nr, out)
        return self._update(params, grads, losses, acc, inner, finite > 0.999)

    def _update(self, params, grads, losses, acc, inner, finite):
        new_p, new_m, new_v, new_count, norms, applied = self._apply_fn(
            params, grads, {n: t.read_value() for n, t in self.m.items()},
            {n: t.read_value() for n, t in self.v.items()}, self.count.read_value(), finite)
        for n in NAMES:
            self.params[n].assign(new_p[n])
            self.m[n].assign(new_m[n])
            self.v[n].assign(new_v[n])
        self.count.assign(new_count)
        self.step.assign_add(1)
        return {"loss": losses, "accuracy": acc, "inner_accuracy": inner, "grad_norm": norms,
                "applied": applied}

    def _distributed_step(self, batch):
        out = self.strategy.run(self._replica_step, args=(batch,))
        return self.strategy.experimental_local_results(out)[0]

    # -- public -------------------------------------------------------------
    @property
    def num_devices(self):
        return self.strategy.num_replicas_in_sync

    def _distribute(self, batch):
        batch = {k: batch[k] for k in ("train_x", "train_y", "query_x", "query_y")}
        n = self.num_devices
        if n == 1:
            return batch
        if self.layout[0] > 1:
            return self.strategy.experimental_distribute_values_from_function(
                lambda ctx: dist.shard_batch(batch, ctx.replica_id_in_sync_group, self.layout))
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: split_replicas(batch, ctx.replica_id_in_sync_group, n))

    def train_step(self, batch):
        """One meta-step on ``batch`` (dict of ``train_x, train_y, query_x, query_y``).

        Returns numpy metrics: ``loss`` ``[S]``, ``accuracy`` ``[S]`` (query
        accuracy), ``inner_accuracy`` ``[T, S]``, ``grad_norm`` ``[S]``,
        ``applied`` ``[S]`` (False where a non-finite gradient was skipped).
        """
        out = self._step_fn(self._distribute(batch))
        return {k: v.numpy() for k, v in out.items()}

    def train_step_distributed(self, batch):
        """``train_step`` on a batch already distributed by ``distribute_dataset``."""
        out = self._step_fn(batch)
        return {k: v.numpy() for k, v in out.items()}

    def distribute_dataset(self, make_global_dataset=None, make_block_dataset=None):
        """The seeded global stream fed through ``distribute_datasets_from_function``: each
        worker draws its devices' blocks (``make_block_dataset(block)``) or slices the whole
        stream (``make_global_dataset()``); ``blur_keras.meta.distribute.distribute_stream``."""
        return dist.distribute_stream(self.strategy, make_global_dataset, self.layout,
                                      make_block_dataset)

    def evaluate(self, batch, seed_step=0, params=None):
        """Meta-loss and accuracies of the current genomes (no update)."""
        replicas = int(batch["train_x"].shape[2])
        seeds = step_seeds(self.seed + 7919, seed_step, range(replicas))
        params = params if params is not None else self.genome_values()
        losses, aux = self._eval_fn({n: tf.convert_to_tensor(v) for n, v in params.items()},
                                    seeds, {k: batch[k] for k in
                                            ("train_x", "train_y", "query_x", "query_y")})
        return {"loss": losses.numpy(), **{k: v.numpy() for k, v in aux.items()}}

    def genome_values(self):
        """Current genome values, dict name -> ``[S, ...]`` numpy array."""
        return {n: v.numpy() for n, v in self.params.items()}

    def genome_norms(self):
        return species_norm({n: tf.convert_to_tensor(v) for n, v in self.genome_values().items()
                             if n in self.trainable}).numpy()

    def checkpoint_items(self):
        """Trackables for ``tf.train.Checkpoint``."""
        return {"genome": dict(self.params), "adam_m": dict(self.m), "adam_v": dict(self.v),
                "adam_count": self.count, "step": self.step}
