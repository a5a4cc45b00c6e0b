"""The parts a meta-training run is composed of (``meta_train(model_dir, objective, start,
outer, schedule, report)``), each a small frozen dataclass and a gin configurable, checked when
it is built:

* ``Objective``: what is meta-trained on: the task, the network (hidden sizes or layer specs
  such as ``@conv_chain()``, k, ``BlurConfig``, scales), the meta-loss, the curriculum, batch
  sizes, species and replicas;
* ``Start``: the start genome (random, backprop or a file; entries set by hand);
* ``Outer``: the outer trainer class (``@GradientTrainer``, ``@CMAESTrainer`` or a registered
  name); its hyperparameters are bound on the class (``GradientTrainer.learning_rate = 1e-3``);
* ``Schedule``: how long and how often: meta-steps, checkpoints, logs, validation, the seed;
* ``Report``: what a finished run writes and judges: the final comparison, the SavedModel, and
  with ``meta_train.stages`` the final genome's edits;
* ``Run``: a run's directory, its five parts and its ``tf.distribute`` strategy.

A part not given to ``meta_train`` is built from its gin bindings in the current gin scope,
so a stage's scoped bindings (``fast/Schedule.num_steps = 1000``) reach that stage only.
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import gin
import numpy as np

from blur_keras.core.checks import check_layer_sizes
from blur_keras.core.config import BlurConfig
from blur_keras.meta.objective.chain import Chain, num_classes, num_features, num_pairs
from blur_keras.core.layer_specs import Conv2D, Dense, Flatten, Pool2D
from blur_keras.meta.objective.unroll import LOSSES
from blur_keras.meta.outer.base import RUN_OPTIONS, TRAINERS, OuterTrainer, trainer_parameters
from blur_keras.meta.run.checks import first_task
from blur_keras.meta.run.curriculum import Curriculum
from blur_keras.meta.run.start import make_start_genome
from blur_keras.rules.genome_file import as_scale

__all__ = ["Objective", "Start", "Outer", "Schedule", "Report", "Run", "conv_chain"]

GIN_MODULE = "blur_keras.meta"


def _check_int(owner, name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{owner}.{name} must be an int >= {low}; got {value!r}.")


def _set(part, name, value):
    object.__setattr__(part, name, value)


def _is_task(task):
    from blur_keras.data import Mixture, Task

    return isinstance(task, (Task, Mixture))


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Objective:
    """What is meta-trained on. ``task``: a ``blur_keras.data`` Task or Mixture (phase 0 of the
    ``curriculum``, default ``Curriculum()``: T = 10 throughout); the network is ``task``'s
    features -> ``hidden_sizes`` (default ``(32,)``) -> its classes, or ``specs``: layer specs
    (``blur_keras.core.layer_specs``, e.g. ``@conv_chain()``; docs/conv.md) on inputs of
    ``input_shape`` (default: an image task's ``(r, r, 1)``, else flat), ending in a Dense
    layer of one unit per class; with ``k`` states, ``blur_config`` (default
    ``BlurConfig()``), ``init_scale`` and ``logit_scale``; ``loss``: the meta-loss
    (``'xent'``; ``'mse'`` for trainers that take one, ``GradientTrainer``); ``recompute``: the
    gradient-checkpoint segment length of long unrolls (0: off); ``species`` genomes side by
    side and ``replicas`` synapse draws each per meta-step, on batches of ``batch_size``
    (queries: ``query_batch_size``, default ``batch_size``)."""

    task: Any = None
    hidden_sizes: Optional[Sequence[int]] = None
    k: int = 2
    blur_config: Optional[BlurConfig] = None
    loss: str = "xent"
    init_scale: float = 1.0
    logit_scale: float = 1.0
    curriculum: Optional[Curriculum] = None
    recompute: int = 0
    batch_size: int = 128
    query_batch_size: Optional[int] = None
    species: int = 8
    replicas: int = 1
    specs: Optional[Sequence[Any]] = None
    input_shape: Optional[Sequence[int]] = None

    def __post_init__(self):
        if self.task is gin.REQUIRED or not _is_task(self.task):
            raise ValueError(f"Objective.task must be a blur_keras.data Task or Mixture; got "
                             f"{self.task!r}.")
        _set(self, "blur_config", BlurConfig() if self.blur_config is None else self.blur_config)
        _set(self, "curriculum", Curriculum() if self.curriculum is None else self.curriculum)
        if not isinstance(self.blur_config, BlurConfig):
            raise ValueError(f"Objective.blur_config must be a BlurConfig; got "
                             f"{self.blur_config!r}.")
        if not isinstance(self.curriculum, Curriculum):
            raise ValueError(f"Objective.curriculum must be a Curriculum; got {self.curriculum!r}.")
        for name in ("k", "species", "replicas", "batch_size"):
            _check_int("Objective", name, getattr(self, name), 2 if name == "k" else 1)
        _check_int("Objective", "recompute", self.recompute, 0)
        if self.query_batch_size is not None:
            _check_int("Objective", "query_batch_size", self.query_batch_size)
        if self.batch_size == 1 and self.blur_config.activation_norm:
            raise ValueError("Objective.batch_size = 1 with BlurConfig.activation_norm: "
                             "normalising over a batch of one example erases the input. Use "
                             "batch_size >= 2.")
        if self.loss not in LOSSES:
            raise ValueError(f"Objective.loss={self.loss!r}; expected one of {LOSSES}.")
        self._check_network()
        for name in ("init_scale", "logit_scale"):
            try:
                as_scale(getattr(self, name), name)
            except ValueError as err:
                raise ValueError(f"Objective.{name}={getattr(self, name)!r}: "
                                 f"{str(err).split(': ', 1)[-1]}") from None
        self.sizes  # noqa: B018  (the curriculum's tasks must share their features)

    @property
    def sizes(self):
        """The network: the layer sizes (the task's features, the hidden sizes, the most classes
        of a phase), or with ``specs`` a ``Chain`` (``blur_keras.meta.objective.chain``)."""
        phases = self.curriculum.phases(self.task)
        features = {t.num_features for t in phases}
        if len(features) != 1:
            raise ValueError(f"All curriculum tasks must have the same number of features; got "
                             f"{features}.")
        if self.specs is not None:
            return Chain(self.input_shape or _image_shape(phases[0]), self.specs)
        return (features.pop(), *self.hidden_sizes, max(int(t.num_classes) for t in phases))

    def _check_network(self):
        """``hidden_sizes`` (default ``(32,)``) or ``specs`` (with ``input_shape``), checked
        against the task's features and classes."""
        if self.specs is None:
            if self.input_shape is not None:
                raise ValueError("Objective.input_shape is the input of Objective.specs; a dense "
                                 "network (Objective.hidden_sizes) takes flat inputs.")
            sizes = (32,) if self.hidden_sizes is None else self.hidden_sizes
            _set(self, "hidden_sizes", check_layer_sizes(sizes, "Objective.hidden_sizes"))
            return
        if self.hidden_sizes is not None:
            raise ValueError("Objective.hidden_sizes and Objective.specs both give the network; "
                             "bind one of them (Objective.hidden_sizes = None).")
        if isinstance(self.specs, list):
            _set(self, "specs", tuple(self.specs))
        phases = self.curriculum.phases(self.task)
        shape = self.input_shape or _image_shape(phases[0])
        try:
            network = Chain(shape, self.specs)
        except (ValueError, TypeError) as err:
            raise ValueError(f"Objective.specs on inputs of shape {tuple(shape)}: {err}") from None
        features, classes = phases[0].num_features, max(int(t.num_classes) for t in phases)
        if num_features(network) != features:
            raise ValueError(f"Objective.input_shape={tuple(shape)} holds "
                             f"{num_features(network)} features; the task has {features}.")
        if num_classes(network) != classes:
            raise ValueError(f"Objective.specs end in {num_classes(network)} units; the task "
                             f"has {classes} classes.")


def _image_shape(task):
    """A task's examples as the network ``specs`` read them: ``(r, r, 1)`` images, else flat."""
    if getattr(task, "is_synthetic", True):
        return (int(task.num_features),)
    return (int(task.resolution), int(task.resolution), 1)


@gin.configurable(module=GIN_MODULE)
def conv_chain(filters=(8,), kernel_size=3, strides=1, padding="valid", pool="max",
               pool_size=2, hidden=(), classes=10):
    """Layer specs for ``Objective.specs``: for each entry of ``filters`` a
    ``Conv2D(f, kernel_size, strides, padding)`` followed (``pool`` ``'max'`` or ``'avg'``;
    None: none) by a ``Pool2D(pool, pool_size)``; then a ``Flatten``, a ``Dense`` per entry
    of ``hidden`` and a ``Dense(classes)``."""
    specs = []
    for f in filters:
        specs.append(Conv2D(f, kernel_size, strides, padding))
        if pool is not None:
            specs.append(Pool2D(pool, pool_size))
    return (*specs, Flatten(), *(Dense(n) for n in hidden), Dense(classes))


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Start:
    """The start genome: ``genome_init`` ``'random'`` (the paper's random start: ``genome_seed``,
    ``transform_std``, ``synapse_update``), ``'backprop'`` (docs/spec.md §4, k = 2, at
    ``backprop_learning_rate``) or a genome ``.json`` file; ``genome_values`` sets entries;
    ``per_layer``: one genome per layer pair."""

    genome_init: str = "random"
    genome_seed: int = 0
    transform_std: float = 1.0
    synapse_update: float = -1e-3
    genome_values: Optional[dict] = None
    backprop_learning_rate: float = 0.1
    per_layer: bool = False

    def __post_init__(self):
        init = self.genome_init
        if not isinstance(init, str) or not (init in ("random", "backprop")
                                             or init.endswith(".json")):
            raise ValueError(f"Start.genome_init={init!r}; expected 'random', 'backprop' or a "
                             "path to a genome .json file.")
        _check_int("Start", "genome_seed", self.genome_seed, 0)
        if self.genome_values is not None and not isinstance(self.genome_values, dict):
            raise ValueError(f"Start.genome_values must be None or a dict of genome entries; got "
                             f"{self.genome_values!r}.")
        if not isinstance(self.per_layer, bool):
            raise ValueError(f"Start.per_layer must be True or False; got {self.per_layer!r}.")

    def genome(self, k, species, num_layers=None):
        """The start ``Genome`` (``species`` side by side, or one for None)."""
        return make_start_genome(k, species, self.genome_init, self.genome_seed,
                                 self.transform_std, self.synapse_update, self.genome_values,
                                 self.backprop_learning_rate, num_layers)


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Outer:
    """The outer trainer: an ``OuterTrainer`` class (``@GradientTrainer``: per-species Adam;
    ``@CMAESTrainer``; any registered other) or its registered name (``'adam'``, ``'cma'``,
    ``'es'``), with its hyperparameters: gin bindings of the class
    (``GradientTrainer.learning_rate = 0.01``), and ``hyperparameters`` given here
    (``Outer(GradientTrainer, {'learning_rate': 0.01})``), which win. What the run hands every
    trainer (``RUN_OPTIONS``: seed, scales, loss, ...) is bound on the other parts."""

    trainer: Any = "adam"
    hyperparameters: Optional[Mapping[str, Any]] = None

    def __post_init__(self):
        trainer = self.trainer
        if isinstance(trainer, str):
            if trainer not in TRAINERS:
                raise ValueError(f"Outer.trainer={trainer!r}; expected one of {tuple(TRAINERS)} "
                                 "or a trainer class (e.g. @GradientTrainer).")
            trainer = TRAINERS[trainer]
        if not (isinstance(trainer, type) and issubclass(trainer, OuterTrainer)):
            raise ValueError(f"Outer.trainer must be an OuterTrainer class (e.g. @GradientTrainer) "
                             f"or one of {tuple(TRAINERS)}; got {trainer!r}.")
        registered = TRAINERS.get(trainer.name)
        if registered is not None and issubclass(registered, trainer):
            trainer = registered  # the gin configurable, which its class bindings reach
        _set(self, "trainer", trainer)
        _set(self, "hyperparameters", dict(self.hyperparameters or {}))
        taken = trainer_parameters(trainer)
        for name in self.hyperparameters:
            if name in RUN_OPTIONS or (taken is not None and name not in taken):
                raise ValueError(f"Outer.hyperparameters: {trainer.__name__} has no "
                                 f"hyperparameter {name!r}; it has "
                                 f"{sorted(set(taken or ()) - set(RUN_OPTIONS) - {'name'})}.")


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and how often: ``num_steps`` meta-steps from ``seed``; a checkpoint every
    ``checkpoint_every`` (the last ``keep_checkpoints`` kept), a log line every ``log_every``,
    validation on ``eval_replicas`` draws every ``eval_every``; a species skipped
    ``max_nonfinite_in_a_row`` times in a row stops the run; ``jit_compile``: XLA;
    ``sized_for='tpu'`` warns when no TPU is in use. ``stop_after``: this invocation stops
    (checkpointed) after that many meta-steps (tests, ``train/meta.py --stop_after``)."""

    num_steps: int = 1000
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int = 100
    eval_replicas: int = 4
    max_nonfinite_in_a_row: int = 5
    seed: int = 0
    jit_compile: bool = True
    sized_for: Optional[str] = None
    stop_after: Optional[int] = None

    def __post_init__(self):
        for name in ("num_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                     "eval_every", "eval_replicas", "max_nonfinite_in_a_row"):
            _check_int("Schedule", name, getattr(self, name))
        _check_int("Schedule", "seed", self.seed, 0)
        if self.stop_after is not None:
            _check_int("Schedule", "stop_after", self.stop_after)
        if self.sized_for not in (None, "tpu"):
            raise ValueError(f"Schedule.sized_for={self.sized_for!r}; expected None or 'tpu'.")

    @property
    def every(self):
        """The periods of the training loop, in meta-steps: ``{"log", "eval", "checkpoint"}``."""
        return {"log": self.log_every, "eval": self.eval_every,
                "checkpoint": self.checkpoint_every}


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Report:
    """What a finished run writes and judges. ``final_eval``: the final comparison (the
    evaluation suite, ``blur_keras.meta.run.report``) on ``final_eval_task`` (default: the
    objective's task), ``final_eval_replicas`` seeds, ``final_eval_examples`` test examples
    (the baselines' learning rates: ``evaluate_suite.learning_rates``); ``export``: the SavedModel;
    ``plots``: the run's pictures (``evaluation.plots.plot_run``: meta-history, validation,
    genome, comparison). With ``meta_train.stages`` only: ``final_values`` and
    ``final_schedule`` edit the final genome (``blur_keras.meta.run.stages``)."""

    final_eval: bool = True
    final_eval_task: Any = None
    final_eval_replicas: int = 8
    final_eval_examples: int = 2000
    export: bool = True
    plots: bool = True
    final_values: Optional[dict] = None
    final_schedule: Optional[Sequence[Any]] = None

    def __post_init__(self):
        if self.final_eval_task is not None and not _is_task(self.final_eval_task):
            raise ValueError("Report.final_eval_task must be None (the objective's task) or a "
                             f"blur_keras.data Task or Mixture; got {self.final_eval_task!r}.")
        _check_int("Report", "final_eval_replicas", self.final_eval_replicas)
        _check_int("Report", "final_eval_examples", self.final_eval_examples)
        if self.final_values is not None and not isinstance(self.final_values, dict):
            raise ValueError(f"Report.final_values must be None or a dict of genome entries; "
                             f"got {self.final_values!r}.")

    def check_task(self, sizes):
        """``final_eval_task``'s first task must fit the network ``sizes`` (its features, at
        most its classes)."""
        if self.final_eval_task is None:
            return
        judged = first_task(self.final_eval_task)
        if judged.num_features != num_features(sizes) or judged.num_classes > num_classes(sizes):
            raise ValueError(f"Report.final_eval_task {judged.describe()} has "
                             f"{judged.num_features} features and {judged.num_classes} classes; "
                             f"the run's network {sizes} takes {num_features(sizes)} features "
                             f"and {num_classes(sizes)} classes.")


@dataclasses.dataclass(frozen=True)
class Run:
    """A run's directory, parts and strategy (what the modules of a run read)."""

    model_dir: str
    objective: Objective
    start: Start
    outer: Outer
    schedule: Schedule
    report: Report
    strategy: Any

    @property
    def sizes(self):
        return self.objective.sizes

    @property
    def num_layers(self):
        """The layer pairs of a per-layer genome (None: one genome shared by all)."""
        return num_pairs(self.sizes) if self.start.per_layer else None
