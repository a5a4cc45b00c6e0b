"""The gradient outer loop: a population of genomes trained by per-species Adam.

``GradientTrainer`` owns the genome variables (species axis ``S``), the Adam
moments and step counts, and the meta-step counter.  A meta-step
(``train_step``) runs under a ``tf.distribute`` strategy: the batch's replica
axis ``R`` is split across the devices, each device computes the meta-loss
and its gradient with respect to the genome (a ``jit_compile=True``
function), the gradients are all-reduced (mean), and every device applies the
same per-species Adam update.  With ``shard_axis="species"`` (or ``"both"``)
the species axis is split instead (or too): see ``blur_keras.meta.outer.distribute``.

Synapse seeds come from ``(seed, step, global replica index)``, so a step's
result does not depend on the number of devices, and a resumed run repeats an
uninterrupted one exactly.
"""

import numpy as np
import tensorflow as tf

from blur_keras.core.genome_spec import NAMES, trainable_entries
from blur_keras.meta.outer import distribute as dist
from blur_keras.meta.objective.chain import as_network, check_chain_options
from blur_keras.meta.objective.batch import BATCH_AXES, meta_batch
from blur_keras.meta.outer.adam import adam_update, species_norm
from blur_keras.meta.outer.base import (OuterTrainer, finite_stat, inference_options,
                                        inference_setting,
                                        register_trainer)
from blur_keras.meta.objective.seeds import step_seeds
from blur_keras.meta.objective.unroll import meta_loss

__all__ = ["GradientTrainer", "step_seeds", "split_replicas", "STEP_GRADIENTS"]

STEP_GRADIENTS = ("hand", "autodiff")


def split_replicas(batch, index, count):
    """The ``index``-th of ``count`` equal parts of a batch along its replica axis."""
    out = {}
    for key, value in batch.items():
        if key not in BATCH_AXES:
            continue
        axis = BATCH_AXES[key][1]
        size = value.shape[axis]
        if size % count:
            raise ValueError(f"{key}: {size} replicas do not split over {count} devices.")
        part = size // count
        out[key] = tf.gather(value, tf.range(index * part, (index + 1) * part), axis=axis)
    return out


@register_trainer("adam")
class GradientTrainer(OuterTrainer, tf.Module):
    """Per-species Adam on the meta-loss (docs/spec.md §5).

    Args:
      genome: a ``Genome`` with a species axis (its values are the start).
      config: ``BlurConfig``; sizes: layer sizes ``n_0 … n_L`` or a ``Chain`` of layer specs
        (``blur_keras.meta.objective.chain``; ``step_gradient="autodiff"`` only).
      learning_rate, clip_norm, beta1, beta2, epsilon: Adam (paper: 5e-4, 10).
      loss, recompute, init_scale, logit_scale: see ``meta_loss``.
      trainable: genome entries to train (default: ``genome_spec.trainable_entries``).
      seed: seed of the synapse initialisations.
      strategy: a ``tf.distribute.Strategy`` (default: the current one).
      jit_compile: compile the meta-gradient with XLA.
      shard_axis: what the devices split: ``"replicas"``, ``"species"`` or ``"both"``
        (``blur_keras.meta.outer.distribute``); the result does not depend on it.
      trajectory_weight: weight of the online (trajectory) loss, see ``meta_loss``.
      residual_penalty: ``λ``: adds ``λ Σ (θ − θ₀)²`` (θ₀: the start genome) to every
        species' meta-loss, so that the rule learns a regularised residual on its start
        (e.g. the backprop genome) rather than drifting far from it.
      inference: how the query is normalised under activation norm, ``"batch"`` or
        ``"moving"`` (tracked statistics, as ``BlurModel`` predicts; see ``meta_loss``).
      step_gradient: ``"hand"`` (default: the hand-derived gradient of a whole inner step,
        ``blur_keras.core.step_reverse``, ~1.2× faster) or ``"autodiff"`` (TensorFlow's). They
        agree to float32 round-off (~1e-6 relative), but a thousand Adam steps amplify
        round-off, so a recipe reproduces a genome file only with the one that made it.
    """

    def __init__(self, genome, config, sizes, *, learning_rate=5e-4, clip_norm=10.0, beta1=0.9,
                 beta2=0.999, epsilon=1e-8, loss="xent", recompute=0, init_scale=1.0,
                 logit_scale=1.0, trainable=None, seed=0, strategy=None, jit_compile=True,
                 shard_axis="replicas", trajectory_weight=0.0, residual_penalty=0.0,
                 step_gradient="hand", inference="batch", name="gradient_trainer"):
        super().__init__(name=name)
        if genome.species is None:
            raise ValueError("GradientTrainer needs a genome with a species axis "
                             "(Genome(..., species=S)).")
        self.k, self.species, self.per_layer = genome.k, genome.species, genome.per_layer
        self.num_layers = genome.num_layers
        self.config, self.sizes = config, as_network(sizes)
        check_chain_options(self.sizes, reverse=step_gradient,
                            owner="GradientTrainer", reverse_name="step_gradient")
        self.hparams = dict(learning_rate=float(learning_rate),
                            clip_norm=None if clip_norm is None else float(clip_norm),
                            beta1=float(beta1), beta2=float(beta2), epsilon=float(epsilon))
        if not 0.0 <= float(trajectory_weight) <= 1.0:
            raise ValueError(f"GradientTrainer.trajectory_weight={trajectory_weight!r}; "
                             "expected a number in [0, 1].")
        if not 0.0 <= float(residual_penalty) < float("inf"):
            raise ValueError(f"GradientTrainer.residual_penalty={residual_penalty!r}; "
                             "expected a finite number >= 0.")
        self.loss_kwargs = dict(loss=loss, recompute=int(recompute), per_layer=genome.per_layer,
                                init_scale=float(init_scale), logit_scale=float(logit_scale),
                                trajectory_weight=float(trajectory_weight))
        self.residual_penalty = float(residual_penalty)
        self.loss_kwargs.update(inference_options(inference, "GradientTrainer"))
        if step_gradient not in STEP_GRADIENTS:
            raise ValueError(f"GradientTrainer.step_gradient={step_gradient!r}; expected one of "
                             f"{STEP_GRADIENTS}.")
        self.step_gradient = step_gradient
        self.loss_kwargs["reverse"] = step_gradient
        self.trainable = trainable_entries(trainable, config)
        self.shard_axis = shard_axis
        self.seed = int(seed)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.layout = dist.shard_layout(shard_axis, self.strategy.num_replicas_in_sync,
                                        self.species)
        if self.layout[0] > 1:  # each device draws the population's synapses, keeps its species
            self.loss_kwargs["population_species"] = self.species
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        values = genome.numpy()
        self.start = values  # the residual penalty pulls towards it
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
        if self.residual_penalty:  # gradient of λ Σ (θ − θ₀)²: a residual on the start genome
            grads = {n: g + 2.0 * self.residual_penalty * (params[n] - tf.cast(self.start[n], g.dtype))
                     for n, g in grads.items()}
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
        population's zeros and summed over the devices (``blur_keras.meta.outer.distribute``)."""
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
        batch = meta_batch(batch)
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
        stream (``make_global_dataset()``); ``blur_keras.meta.outer.distribute.distribute_stream``."""
        return dist.distribute_stream(self.strategy, make_global_dataset, self.layout,
                                      make_block_dataset)

    def evaluate(self, batch, seed_step=0, params=None):
        """Meta-loss and accuracies of the current genomes (no update)."""
        replicas = int(batch["train_x"].shape[2])
        seeds = step_seeds(self.seed + 7919, seed_step, range(replicas))
        params = params if params is not None else self.genome_values()
        losses, aux = self._eval_fn({n: tf.convert_to_tensor(v) for n, v in params.items()},
                                    seeds, meta_batch(batch))
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

    # -- the OuterTrainer interface ------------------------------------------------
    stops_on_nonfinite = True

    def check_replicas(self, replicas):
        if self.shard_axis == "replicas" and replicas % self.num_devices:
            raise ValueError(f"Objective.replicas={replicas} must be a multiple of the "
                             f"{self.num_devices} devices of the strategy.")
        dist.shard_layout(self.shard_axis, self.num_devices, self.species, replicas)

    def training_stream(self, make_dataset):
        if self.num_devices == 1:
            return iter(make_dataset(self.data_species)), self.train_step
        # each worker draws its devices' blocks of the stream
        return iter(self.distribute_dataset(make_block_dataset=lambda block: make_dataset(
            self.data_species, block=block))), self.train_step_distributed

    def validate(self, batch):
        res = self.evaluate(batch)
        return res["accuracy"], res["inner_accuracy"]

    def population(self):
        return self.genome_values()

    def scalars(self, metrics):
        out = {"meta_loss/mean": finite_stat(np.mean, metrics["loss"])}
        for s in range(self.species):
            out[f"meta_loss/species_{s}"] = float(metrics["loss"][s])
            out[f"query_accuracy/species_{s}"] = float(metrics["accuracy"][s])
            out[f"grad_norm/species_{s}"] = float(metrics["grad_norm"][s])
        return out

    def log_scalars(self):
        return {f"genome_norm/species_{s}": float(n) for s, n in enumerate(self.genome_norms())}

    def summary(self, metrics):
        loss, acc = metrics["loss"], metrics["accuracy"]
        return (f"meta-loss {finite_stat(np.mean, loss):.4f} (min {finite_stat(np.min, loss):.4f})"
                f" | query acc {np.mean(acc):.3f} (max {np.max(acc):.3f})")

    def settings(self):
        return {**self.hparams, "loss": self.loss_kwargs["loss"], "shard_axis": self.shard_axis,
                "trainable": list(self.trainable),
                "trajectory_weight": self.loss_kwargs["trajectory_weight"],
                "residual_penalty": self.residual_penalty, "step_gradient": self.step_gradient,
                **inference_setting(self.loss_kwargs)}
