"""Validation of a run and best-species selection.

The validation batch of a curriculum position ``(T, phase)`` is drawn once from the
run's stream with its own seed (``seed + 1_000_003``) and reused, so successive
validations compare the genomes on the same data.
"""

import numpy as np

__all__ = ["VALIDATION_SEED_OFFSET", "Validation", "best_species", "inner_curve"]

VALIDATION_SEED_OFFSET = 1_000_003


def best_species(accuracy):
    """The index of the best validation accuracy."""
    return int(np.argmax(accuracy))


def inner_curve(inner, best):
    """The inner accuracy curve ``[T]`` of species ``best`` (``inner``: ``[T, V]`` or ``[T]``)."""
    return inner[:, best] if inner.ndim == 2 else inner


class Validation:
    """Validation batches by curriculum position and the trainer's accuracies on them.

    ``make_stream(unroll, phase, species, replicas, seed, skip)`` is the run's stream.
    """

    def __init__(self, make_stream, curriculum, replicas, seed):
        self.make_stream, self.curriculum = make_stream, curriculum
        self.replicas, self.seed = replicas, seed + VALIDATION_SEED_OFFSET
        self._cache = {}

    def batch(self, unroll, phase, species):
        key = (unroll, phase)
        if key not in self._cache:
            self._cache[key] = next(self.make_stream(unroll, phase, species, self.replicas,
                                                     self.seed, 0))
        return self._cache[key]

    def __call__(self, trainer, step):
        """``(accuracy [V] with NaN as 0, inner curves)`` of the trainer's genomes at ``step``."""
        t, phase = self.curriculum.unroll_at(step), self.curriculum.phase_at(step)
        acc, inner = trainer.validate(self.batch(t, phase, trainer.data_species))
        return np.nan_to_num(acc), inner
