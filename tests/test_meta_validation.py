"""Validation batches (drawn once per curriculum position) and best-species selection."""

import numpy as np

from blur_keras.meta.run.curriculum import Curriculum
from blur_keras.meta.run.validation import VALIDATION_SEED_OFFSET, Validation, best_species, inner_curve


class _Trainer:
    data_species = 3

    def __init__(self):
        self.seen = []

    def validate(self, batch):
        self.seen.append(batch)
        return np.array([0.2, np.nan, 0.7]), np.arange(6.0).reshape(2, 3)


def test_best_species_and_inner_curve():
    assert best_species(np.array([0.1, 0.8, 0.3])) == 1
    inner = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(inner_curve(inner, 2), [2.0, 5.0])
    np.testing.assert_array_equal(inner_curve(np.array([0.5, 0.6]), 0), [0.5, 0.6])


def test_validation_draws_each_curriculum_position_once():
    calls = []

    def make_stream(t, phase, species, replicas, seed, skip):
        calls.append((t, phase, species, replicas, seed, skip))
        return iter([{"id": len(calls)}])

    validation = Validation(make_stream, Curriculum(unroll_start=2, unroll_delta=1,
                                                    unroll_every=10), replicas=4, seed=5)
    trainer = _Trainer()
    acc, _ = validation(trainer, 0)
    validation(trainer, 9)
    validation(trainer, 10)
    np.testing.assert_array_equal(acc, [0.2, 0.0, 0.7])  # NaN counts as 0
    assert calls == [(2, 0, 3, 4, 5 + VALIDATION_SEED_OFFSET, 0),
                     (3, 0, 3, 4, 5 + VALIDATION_SEED_OFFSET, 0)]
    assert [b["id"] for b in trainer.seen] == [1, 1, 2]
