"""A simple evolution strategy, as a third outer optimiser added without touching the run.

A generation: ``population_size`` Gaussian perturbations (``sigma``) of the mean genome
are evaluated like CMA-ES candidates (shared synapses, shared data, the query accuracy);
the mean moves to the average of the ``elite`` best.  The noise is drawn statelessly from
``(seed, step)``, so the whole state is the mean and the step: a restored run repeats an
uninterrupted one.  One device (no sharding).

Select it from gin (``import blur_keras.meta.outer.simple_es`` registers it)::

    Outer.trainer = @SimpleESTrainer
    SimpleESTrainer.population_size = 16
"""

import numpy as np
import tensorflow as tf

from blur_keras.core.genome_spec import NAMES, member, trainable_entries
from blur_keras.meta.objective.batch import meta_batch
from blur_keras.meta.objective.chain import as_network
from blur_keras.meta.outer.base import OuterTrainer, register_trainer
from blur_keras.meta.objective.seeds import step_seeds
from blur_keras.meta.objective.unroll import meta_loss

__all__ = ["SimpleESTrainer"]


@register_trainer("es")
class SimpleESTrainer(OuterTrainer, tf.Module):
    """(μ, λ) evolution strategy with a fixed step size ``sigma`` (see the module docstring)."""

    nonfinite = "meta-fitness"

    def __init__(self, genome, config, sizes, *, population_size=16, sigma=0.05, elite=4,
                 trainable=None, seed=0, init_scale=1.0, logit_scale=1.0, recompute=0,
                 jit_compile=True, strategy=None, name="simple_es_trainer"):
        super().__init__(name=name)
        values = genome.numpy()
        values = member(values, 0) if genome.species is not None else values
        self.config, self.sizes = config, as_network(sizes)
        self.trainable = trainable_entries(trainable, config)
        self.species, self.sigma = int(population_size), float(sigma)
        self.elite, self.seed = min(int(elite), self.species), int(seed)
        self.mean = {n: tf.Variable(values[n], name="mean_" + n) for n in NAMES}
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.loss_kwargs = dict(loss="xent", recompute=int(recompute), per_layer=genome.per_layer,
                                init_scale=float(init_scale), logit_scale=float(logit_scale),
                                shared_synapses=True)
        self._eval_fn = tf.function(self._evaluate, jit_compile=bool(jit_compile),
                                    autograph=False)

    @classmethod
    def start_species(cls, species):
        return None

    @property
    def data_species(self):
        return 1

    def _evaluate(self, params, seeds, batch):
        return meta_loss(params, seeds, batch, self.config, self.sizes, **self.loss_kwargs)[1]

    def _fitness(self, params, batch, seed_step):
        seeds = step_seeds(self.seed, seed_step, range(int(batch["train_x"].shape[2])))
        aux = self._eval_fn({n: tf.convert_to_tensor(v) for n, v in params.items()}, seeds,
                            meta_batch(batch, as_tensors=True))
        acc = aux["accuracy"].numpy()
        return np.where(aux["finite"].numpy() & np.isfinite(acc), acc, np.nan), \
            aux["inner_accuracy"].numpy()

    def _candidates(self, step):
        seed = tf.constant([self.seed, int(step)], tf.int64)
        out = {}
        for i, n in enumerate(NAMES):
            mean = self.mean[n].numpy()
            shape = (self.species,) + mean.shape
            if n in self.trainable:
                noise = tf.random.stateless_normal(
                    shape, tf.random.experimental.stateless_fold_in(seed, i)).numpy()
                out[n] = (mean + self.sigma * noise).astype(np.float32)
            else:
                out[n] = np.broadcast_to(mean, shape).copy()
        return out

    def train_step(self, batch):
        step = int(self.step.numpy())
        candidates = self._candidates(step)
        acc, inner = self._fitness(candidates, batch, step)
        finite = np.isfinite(acc)
        if finite.any():
            best = np.argsort(-np.where(finite, acc, -np.inf), kind="stable")[:self.elite]
            for n in self.trainable:
                self.mean[n].assign(candidates[n][best].mean(axis=0))
        self.step.assign_add(1)
        return {"accuracy": np.nan_to_num(acc), "applied": finite, "inner_accuracy": inner}

    def validate(self, batch):
        return self._fitness(self.genome_values(), batch, 0)

    def genome_values(self):
        return {n: v.numpy()[None] for n, v in self.mean.items()}

    def checkpoint_items(self):
        return {"es_mean": dict(self.mean), "step": self.step}

    def scalars(self, metrics):
        return {"query_accuracy/mean": float(np.mean(metrics["accuracy"])),
                "query_accuracy/best": float(np.max(metrics["accuracy"]))}

    def summary(self, metrics):
        acc = metrics["accuracy"]
        return f"query acc mean {np.mean(acc):.3f} max {np.max(acc):.3f}"

    def settings(self):
        return {"population_size": self.species, "sigma": self.sigma, "elite": self.elite,
                "trainable": list(self.trainable)}
