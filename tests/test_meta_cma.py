"""CMA-ES as the outer optimiser: it improves fitness, and its state resumes exactly."""

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import BlurConfig, Genome
from blur_keras.data import make_task_stream, preset_task
from blur_keras.meta.run.checkpoint import RunCheckpoint
from blur_keras.meta.outer.cma_es import WORST_FITNESS, CMAESTrainer

SIZES = (2, 6, 2)


@pytest.fixture(scope="module")
def batches():
    stream = iter(make_task_stream(preset_task("two_moons"), species=1, replicas=4,
                                   batch_size=32, unroll_steps=3, seed=0,
                                   query_batch_size=128))
    return [next(stream) for _ in range(12)]


def make_trainer(**kwargs):
    genome = Genome.random(2, seed=0, transform_std=0.5, synapse_update=-0.01)
    return CMAESTrainer(genome, BlurConfig(activation_norm=True), SIZES, population_size=12,
                        sigma0=0.3, seed=1, jit_compile=False, logit_scale=2.0, **kwargs)


def test_cma_es_improves_mean_fitness(batches):
    trainer = make_trainer()
    means = [trainer.train_step(b)["mean_fitness"] for b in batches]
    # fitness is -accuracy: the last generations are clearly better than the first
    assert np.mean(means[-3:]) < np.mean(means[:3]) - 0.05, means
    # the population is one compiled evaluation along the species axis
    assert trainer.species == 12


def test_cma_es_non_finite_candidates_get_worst_fitness(batches):
    trainer = make_trainer()
    params = trainer.unflatten(np.stack([trainer.flatten(trainer.base)] * 2))
    params["eta_syn"][1] = 3e38
    acc, _ = trainer.fitness(params, batches[0], 0)
    assert np.isfinite(acc[0]) and np.isnan(acc[1])
    assert WORST_FITNESS > 0  # worse than any -accuracy


def test_trajectory_fitness_mixes_query_and_inner_accuracy_and_grades_divergence(batches):
    trainer = make_trainer(trajectory_weight=0.25)
    assert trainer.settings()["trajectory_weight"] == 0.25
    acc = np.array([0.8, np.nan, 0.6])
    inner = np.array([[0.2, 0.5, 0.1], [0.4, 0.3, 0.1]])  # [T, candidates]
    np.testing.assert_allclose(trainer.fitness_of(acc, inner),
                               [-(0.75 * 0.8 + 0.25 * 0.3), -0.25 * 0.4, -(0.75 * 0.6 + 0.25 * 0.1)])
    plain = make_trainer()
    np.testing.assert_allclose(plain.fitness_of(acc, inner), [-0.8, WORST_FITNESS, -0.6])
    # a diverged network's inner steps count as wrong once its outputs are non-finite
    params = trainer.unflatten(np.stack([trainer.flatten(trainer.base)] * 2))
    params["eta_syn"][1] = 3e38
    _, curve = trainer.fitness(params, batches[0], 0)
    assert curve[-1, 1] == 0.0 and curve[0, 1] > 0.0
    with pytest.raises(ValueError, match="trajectory_weight"):
        make_trainer(trajectory_weight=1.5)


def test_cma_es_state_resumes_from_checkpoint(tmp_path, batches):
    straight = make_trainer()
    ref = [straight.train_step(b) for b in batches[:5]]

    first = make_trainer()
    ckpt = RunCheckpoint(str(tmp_path), first.checkpoint_items())
    for b in batches[:3]:
        first.train_step(b)
    first.pack_state()
    ckpt.save(3)
    np.random.seed(123)  # global NumPy RNG use elsewhere must not matter

    resumed = make_trainer()
    RunCheckpoint(str(tmp_path), resumed.checkpoint_items()).restore()
    resumed.unpack_state()
    assert int(resumed.step.numpy()) == 3
    for b, r in zip(batches[3:5], ref[3:5]):
        out = resumed.train_step(b)
        np.testing.assert_array_equal(out["fitness"], r["fitness"])
    np.testing.assert_array_equal(resumed.es.mean, straight.es.mean)
