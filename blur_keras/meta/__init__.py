"""Meta-training of BLUR genomes (docs/spec.md §5): the meta-loss, outer optimisers, runs, export.

* :func:`meta_loss` (``unroll``): pure meta-loss of a genome population through T inner steps;
* :class:`OuterTrainer` (``outer``): what a run needs from an outer optimiser;
* :class:`GradientTrainer` (``trainer``): per-species Adam under a ``tf.distribute`` strategy;
* :class:`CMAESTrainer` (``cma_es``): CMA-ES over the genome, population on the species axis;
* :func:`meta_train` (``experiment``): a whole run, composed of its parts :class:`Objective`,
  :class:`Start`, :class:`Outer`, :class:`Schedule` and :class:`Report` (``parts``; gin
  configurables), run by ``start``, ``checkpoint``, ``log``, ``validation``, ``loop``,
  ``result`` and ``report``, with a :class:`Curriculum` (``curriculum``);
* :func:`choose_strategy` (``strategy``), :class:`RunCheckpoint` (``checkpoint``),
  :func:`export_saved_model` (``export``), :func:`genome_accuracy` (``objective.accuracy``) and
  :func:`sgd_accuracy` (plain SGD on the same arrays, ``blur_keras.evaluation.baselines``).
"""

from blur_keras.evaluation.baselines import sgd_accuracy
from blur_keras.meta.objective.accuracy import genome_accuracy
from blur_keras.meta.run.checkpoint import RunCheckpoint
from blur_keras.meta.outer.cma_es import CMAESTrainer
from blur_keras.meta.run.experiment import Curriculum, MetaTrainingDiverged, meta_train
from blur_keras.meta.run.parts import Objective, Outer, Report, Schedule, Start
from blur_keras.rules.export import LearnedRule, export_saved_model
from blur_keras.meta.outer.adam import adam_update, species_norm
from blur_keras.meta.outer.base import OuterTrainer
from blur_keras.meta.outer.strategy import NoTPUError, choose_strategy
from blur_keras.meta.outer.gradient import GradientTrainer
from blur_keras.meta.objective.unroll import meta_loss, pm1_targets

__all__ = [
    "CMAESTrainer", "Curriculum", "GradientTrainer", "LearnedRule", "MetaTrainingDiverged",
    "NoTPUError", "Objective", "Outer", "OuterTrainer", "Report", "RunCheckpoint", "Schedule",
    "Start", "adam_update", "choose_strategy", "export_saved_model",
    "genome_accuracy", "meta_loss", "meta_train", "pm1_targets", "sgd_accuracy", "species_norm",
]
