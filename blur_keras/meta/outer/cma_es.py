"""CMA-ES as the outer optimiser (docs/spec.md §5), with pycma.

A generation: pycma proposes ``λ`` genomes; they become the species axis of
one genome population, evaluated in one compiled call (T inner steps from
shared random synapses on shared batches, then the query accuracy); pycma is
told ``−accuracy`` (it minimises; ``trajectory_weight`` mixes in the accuracy over the whole
unroll, see ``fitness_of``).  A candidate whose outputs are not finite gets the worst fitness
(``+1``, worse than any ``−accuracy``), or with a trajectory fitness the credit of its inner
steps only.

The whole state (the pickled ``CMAEvolutionStrategy`` and the NumPy RNG state
it draws from) lives in a string variable, so it is saved in the run's
checkpoint and a restored run proposes exactly the same candidates.
"""

import pickle

import cma
import numpy as np
import tensorflow as tf

from blur_keras.core.genome_spec import NAMES, member, trainable_entries
from blur_keras.meta.objective.chain import as_network
from blur_keras.meta.objective.batch import meta_batch
from blur_keras.meta.outer.distribute import sharded_population_eval
from blur_keras.meta.outer.base import (OuterTrainer, inference_options, inference_setting,
                                        register_trainer)
from blur_keras.meta.objective.seeds import step_seeds
from blur_keras.meta.objective.unroll import meta_loss

__all__ = ["CMAESTrainer", "WORST_FITNESS"]

WORST_FITNESS = 1.0


@register_trainer("cma")
class CMAESTrainer(OuterTrainer, tf.Module):
    """Evolve one genome with CMA-ES.

    Args:
      genome: the start (the mean of the first search distribution); a
        species axis, if any, is ignored (species 0 is used).
      config, sizes: the network (``BlurConfig``, layer sizes or a ``Chain`` of layer specs,
        ``blur_keras.meta.objective.chain``).
      population_size: ``λ`` (paper: 80).
      sigma0: initial step size σ₀.
      trainable: genome entries that evolve (default: the core entries and
        the optional ones the config uses); the others stay fixed.
      seed: seeds pycma and the synapse initialisations.
      init_scale, logit_scale, recompute: see ``meta_loss``.
      jit_compile: compile the population's evaluation with XLA.
      trajectory_weight: ``w``: the fitness is ``(1 − w) ·`` query accuracy ``+ w ·`` the mean
        over the T inner steps of the accuracy on each training batch before learning from it
        (a fitness spread over the whole trajectory; 0: the paper's query accuracy).
      inference: ``"batch"`` or ``"moving"``: how the query is normalised (``meta_loss``).
      strategy: a ``tf.distribute.Strategy``; with several devices the candidates are split
        over them (``blur_keras.meta.outer.distribute.sharded_population_eval``); every worker runs
        the same pycma (same seed, same fitness), so all propose the same candidates.
    """

    def __init__(self, genome, config, sizes, *, population_size=80, sigma0=0.1, trainable=None,
                 seed=0, init_scale=1.0, logit_scale=1.0, recompute=0, jit_compile=True,
                 strategy=None, trajectory_weight=0.0, inference="batch", name="cma_es_trainer"):
        super().__init__(name=name)
        self.k, self.per_layer, self.num_layers = genome.k, genome.per_layer, genome.num_layers
        values = genome.numpy()
        if genome.species is not None:
            values = member(values, 0)
        self.base = values
        self.config, self.sizes = config, as_network(sizes)
        self.trainable = trainable_entries(trainable, config)
        self.shapes = {n: values[n].shape for n in self.trainable}
        self.population_size = int(population_size)
        if isinstance(population_size, bool) or self.population_size != population_size \
                or self.population_size < 1:
            raise ValueError(f"CMAESTrainer.population_size must be an int >= 1; "
                             f"got {population_size!r}.")
        self.sigma0 = float(sigma0)
        if not 0.0 <= float(trajectory_weight) <= 1.0:
            raise ValueError(f"CMAESTrainer.trajectory_weight={trajectory_weight!r}; "
                             "expected a number in [0, 1].")
        self.trajectory_weight = float(trajectory_weight)
        self.species = self.population_size
        self.seed = int(seed)
        self.loss_kwargs = dict(loss="xent", recompute=int(recompute), per_layer=self.per_layer,
                                init_scale=float(init_scale), logit_scale=float(logit_scale),
                                shared_synapses=True,
                                **inference_options(inference, "CMAESTrainer"))
        x0 = self.flatten(values)
        saved = np.random.get_state()
        # pycma samples with opts["randn"]; a private RandomState pickles with the strategy
        # (the default, np.random.randn, would pickle a detached copy of the global state)
        self._rng = np.random.RandomState(self.seed + 1)
        self.es = cma.CMAEvolutionStrategy(
            x0, float(sigma0), {"popsize": self.population_size, "seed": self.seed + 1,
                                "verbose": -9, "randn": self._rng.randn})
        self.rng_state = np.random.get_state()
        np.random.set_state(saved)
        self.state = tf.Variable(b"", dtype=tf.string, name="cma_state")
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self._eval_fn = tf.function(self._evaluate, jit_compile=bool(jit_compile), autograph=False)
        self.strategy = strategy or tf.distribute.get_strategy()
        self._population_fn = self._eval_fn
        if self.strategy.num_replicas_in_sync > 1:
            self._population_fn = sharded_population_eval(self.strategy, self._eval_fn,
                                                          self.population_size)

    # -- genome <-> vector ---------------------------------------------------
    @property
    def dimension(self):
        return int(sum(np.prod(s) for s in self.shapes.values()))

    def flatten(self, values):
        return np.concatenate([np.asarray(values[n], np.float64).ravel() for n in self.trainable])

    def unflatten(self, vectors):
        """``[λ, D]`` -> genome dict with species axis ``λ`` (fixed entries broadcast)."""
        vectors = np.asarray(vectors, np.float32)
        lam = vectors.shape[0]
        out, pos = {}, 0
        for n in NAMES:
            if n in self.shapes:
                size = int(np.prod(self.shapes[n]))
                out[n] = vectors[:, pos:pos + size].reshape((lam,) + self.shapes[n])
                pos += size
            else:
                out[n] = np.broadcast_to(self.base[n], (lam,) + self.base[n].shape).copy()
        return out

    # -- evaluation -----------------------------------------------------------
    def _evaluate(self, params, seeds, batch):
        _, aux = meta_loss(params, seeds, batch, self.config, self.sizes, **self.loss_kwargs)
        return aux

    def fitness(self, params, batch, seed_step):
        """Query accuracies ``[λ]`` (NaN where the outputs were not finite) and the inner curve."""
        replicas = int(batch["train_x"].shape[2])
        seeds = step_seeds(self.seed, seed_step, range(replicas))
        fn = self._population_fn if len(next(iter(params.values()))) == self.population_size \
            else self._eval_fn  # the mean genome (validation) is evaluated on one device
        aux = fn({n: tf.convert_to_tensor(v) for n, v in params.items()}, seeds,
                 meta_batch(batch, as_tensors=True))
        acc = aux["accuracy"].numpy()
        acc = np.where(aux["finite"].numpy() & np.isfinite(acc), acc, np.nan)
        return acc, aux["inner_accuracy"].numpy()

    def fitness_of(self, acc, inner):
        """What pycma minimises: ``−((1 − w) · query accuracy + w · mean inner accuracy)``.

        A candidate whose outputs went non-finite scores its query accuracy as 0: with
        ``w > 0`` it keeps the credit of the steps it learned before diverging (a graded
        fitness, so that a population that diverges late can still be ranked); with ``w = 0``
        it gets ``WORST_FITNESS``.
        """
        finite = np.isfinite(acc)
        if self.trajectory_weight == 0:
            return np.where(finite, -np.nan_to_num(acc), WORST_FITNESS)
        inner = np.nan_to_num(np.asarray(inner, np.float64)).mean(axis=0)
        return -((1.0 - self.trajectory_weight) * np.where(finite, acc, 0.0)
                 + self.trajectory_weight * inner)

    def _ask(self):
        saved = np.random.get_state()
        np.random.set_state(self.rng_state)
        try:
            return self.es.ask()
        finally:
            self.rng_state = np.random.get_state()
            np.random.set_state(saved)

    def train_step(self, batch):
        """One generation on ``batch`` (species axis 1: every candidate sees the same data)."""
        solutions = self._ask()
        acc, inner = self.fitness(self.unflatten(solutions), batch, int(self.step.numpy()))
        finite = np.isfinite(acc)
        fitness = self.fitness_of(acc, inner)
        self.es.tell(solutions, fitness.tolist())
        self.step.assign_add(1)
        return {"accuracy": np.nan_to_num(acc), "fitness": fitness, "applied": finite,
                "inner_accuracy": inner, "mean_fitness": float(fitness.mean()),
                "sigma": float(self.es.sigma)}

    def mean_genome(self):
        """The distribution's mean as a species-free genome dict."""
        return member(self.unflatten(self.es.mean[None]), 0)

    def best_genome(self):
        """The best candidate seen so far (pycma's record), or the mean before any."""
        x = self.es.result.xbest
        if x is None:
            return self.mean_genome()
        return member(self.unflatten(np.asarray(x)[None]), 0)

    # -- checkpoint -------------------------------------------------------------
    def pack_state(self):
        """Write the evolution strategy and its RNG state into the ``state`` variable."""
        self.state.assign(pickle.dumps({"es": self.es, "rng_state": self.rng_state}))

    def unpack_state(self):
        """Load them back after a checkpoint restore."""
        data = self.state.numpy()
        if data:
            loaded = pickle.loads(data)
            self.es, self.rng_state = loaded["es"], loaded["rng_state"]

    def checkpoint_items(self):
        return {"cma_state": self.state, "step": self.step}

    # -- the OuterTrainer interface ------------------------------------------------
    nonfinite = "meta-fitness"

    @classmethod
    def start_species(cls, species):
        return None  # one genome: the mean of the first search distribution

    @property
    def data_species(self):
        return 1  # every candidate sees the same data

    def validate(self, batch):
        """The distribution's mean (one genome)."""
        return self.fitness({n: v[None] for n, v in self.mean_genome().items()}, batch, 0)

    def genome_values(self):
        return {n: v[None] for n, v in self.mean_genome().items()}

    def before_save(self):
        self.pack_state()

    def after_restore(self):
        self.unpack_state()

    def scalars(self, metrics):
        return {"cma/mean_fitness": metrics["mean_fitness"], "cma/sigma": metrics["sigma"],
                "query_accuracy/mean": float(np.mean(metrics["accuracy"])),
                "query_accuracy/best": float(np.max(metrics["accuracy"]))}

    def summary(self, metrics):
        acc = metrics["accuracy"]
        return (f"mean fitness {metrics['mean_fitness']:.4f} | query acc mean {np.mean(acc):.3f} "
                f"max {np.max(acc):.3f} | sigma {metrics['sigma']:.4f}")

    def settings(self):
        return {"population_size": self.population_size, "sigma0": self.sigma0,
                "trainable": list(self.trainable), "trajectory_weight": self.trajectory_weight,
                **inference_setting(self.loss_kwargs)}
