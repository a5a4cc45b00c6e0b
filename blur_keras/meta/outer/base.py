"""The outer-trainer interface: what a meta-training run needs from any outer optimiser.

A run (``blur_keras.meta.run.experiment``) only talks to an ``OuterTrainer``:

* ``start_species(species)`` (class method): how many start genomes it needs;
* ``data_species``: the species axis the task stream must provide; ``species``: the rows
  of its metrics (genomes trained side by side, or candidates of a generation);
* ``training_stream(make_dataset)`` and ``train_step(batch)``: one meta-step, returning
  metrics with the common keys ``accuracy`` ``[species]``, ``applied`` ``[species]`` and
  ``inner_accuracy``, plus scalars it names itself;
* ``scalars(metrics)`` / ``log_scalars()``: its TensorBoard scalars; ``summary(metrics)``: its
  part of the progress line;
* ``validate(batch)``: accuracies ``[V]`` and inner curves ``[T, V]`` of the genomes
  ``genome_values()`` holds (``V`` of them); ``result(val_accuracy)``: the genome a run
  writes; ``population()``: the genomes side by side, if any;
* ``checkpoint_items()``, ``before_save()``, ``after_restore()``: its resumable state;
* ``settings()``: the hyperparameters that change its result (checked when a run resumes).

Trainers register under a short name (``register_trainer``) and as gin configurables of their
hyperparameters: ``Outer.trainer = @GradientTrainer`` with ``GradientTrainer.learning_rate =
1e-3``; ``Outer.trainer = 'adam'`` names one (``blur_keras.meta.run.parts.Outer``). What the run
hands every trainer (``RUN_OPTIONS``: its seed, strategy, scales, ...; the objective's ``loss``)
is not a gin parameter of the class: it is bound on the run's parts.
"""

import inspect

import gin
import numpy as np

from blur_keras.core.genome_spec import member

__all__ = ["OuterTrainer", "RUN_OPTIONS", "TRAINERS", "register_trainer", "build_trainer",
           "trainer_parameters",
           "inference_options", "inference_setting", "finite_stat"]

GIN_MODULE = "blur_keras.meta"
TRAINERS = {}  # name -> gin-configurable trainer class
# what a run hands every trainer (from its Objective and Schedule), not bound on the class
RUN_OPTIONS = ("genome", "config", "sizes", "seed", "strategy", "jit_compile", "init_scale",
               "logit_scale", "recompute", "loss")


class OuterTrainer:
    """Base class of the outer optimisers (see the module docstring)."""

    name = None  # the registered name (``outer`` in provenance and run settings)
    nonfinite = "meta-gradient"  # what was not finite when a step is skipped (for logs)
    stops_on_nonfinite = False  # whether a species skipped too often in a row ends the run

    @classmethod
    def start_species(cls, species):
        """Species of the start genome given the run's ``species`` (None: one genome)."""
        return species

    @property
    def data_species(self):
        """The species axis the task stream must provide."""
        return self.species

    def check_replicas(self, replicas):
        """Raise ``ValueError`` when ``replicas`` synapse draws per step do not fit."""

    def training_stream(self, make_dataset):
        """``(iterator, step_fn)``: ``make_dataset(species, block=None)`` is the seeded stream."""
        return iter(make_dataset(self.data_species)), self.train_step

    def train_step(self, batch):
        raise NotImplementedError

    def validate(self, batch):
        raise NotImplementedError

    def genome_values(self):
        raise NotImplementedError

    def population(self):
        """The genomes trained side by side (a dict with a species axis), or None."""
        return None

    def result(self, val_accuracy):
        """``(index, values)``: the validated genome with the best accuracy."""
        best = int(np.argmax(val_accuracy))
        return best, member(self.genome_values(), best)

    def checkpoint_items(self):
        raise NotImplementedError

    def before_save(self):
        """Put state that is not in variables into them (called before every save)."""

    def after_restore(self):
        """Load it back (called after a restore, or when there was nothing to restore)."""

    def scalars(self, metrics):
        """TensorBoard scalars of a meta-step (name -> float)."""
        return {}

    def log_scalars(self):
        """TensorBoard scalars written with the progress line (name -> float)."""
        return {}

    def summary(self, metrics):
        raise NotImplementedError

    def settings(self):
        raise NotImplementedError


def inference_options(inference, owner):
    """``meta_loss`` keywords for a trainer's ``inference`` (``"batch"``: none, the default)."""
    if inference not in ("batch", "moving"):
        raise ValueError(f"{owner}.inference={inference!r}; expected 'batch' or 'moving'.")
    return {} if inference == "batch" else {"inference": inference}


def inference_setting(loss_kwargs):
    """The run setting of a trainer's inference mode (nothing for the default, ``"batch"``,
    so that runs without it keep their settings)."""
    return {"inference": loss_kwargs["inference"]} if "inference" in loss_kwargs else {}


def finite_stat(fn, values):
    """``fn`` of the finite entries of ``values`` (NaN when there are none)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else float("nan")


def register_trainer(name):
    """Class decorator: the trainer is ``Outer.trainer = name`` and a gin configurable of its
    class name, of every parameter but the ``RUN_OPTIONS``."""
    def add(cls):
        cls.name = name
        denylist = [p for p in inspect.signature(cls).parameters if p in RUN_OPTIONS]
        try:
            TRAINERS[name] = gin.external_configurable(cls, module=GIN_MODULE, denylist=denylist)
        except ValueError:  # registered already (a module reloaded)
            TRAINERS.setdefault(name, cls)
        return cls
    return add


def build_trainer(factory, genome, config, sizes, run_options, hyperparameters=None,
                  loss="xent"):
    """``factory(genome, config, sizes, **run_options, **hyperparameters)``, with the
    objective's ``loss`` for a trainer that takes one; a trainer without that parameter
    meta-trains on ``'xent'`` only."""
    options = dict(run_options, **(hyperparameters or {}))
    accepted = trainer_parameters(factory)
    if accepted is None or "loss" in accepted:
        options["loss"] = loss
    elif loss != "xent":
        raise ValueError(f"Objective.loss={loss!r}: {getattr(factory, '__name__', factory)} "
                         "meta-trains on 'xent' only.")
    return factory(genome, config, sizes, **options)


def trainer_parameters(factory):
    """The parameter names ``factory`` takes (None: any), looking through gin's wrapper classes."""
    for cls in getattr(factory, "__mro__", (factory,)):
        if cls in (OuterTrainer, object):
            break
        params = inspect.signature(cls).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return set(params)
    return None
