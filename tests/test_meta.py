"""Meta-training: meta-gradient, per-species Adam, the trainer, curriculum, faults, export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import BlurConfig, Genome
from blur_keras.data import make_task_stream, preset_task
from blur_keras.meta.outer.gradient import GradientTrainer
from blur_keras.meta.run.experiment import (Curriculum, MetaTrainingDiverged, Objective, Outer,
                                            Report, Schedule, Start, meta_train)
from blur_keras.meta.outer.adam import adam_update
from blur_keras.meta.outer.gradient import GradientTrainer
from blur_keras.meta.objective.unroll import meta_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (2, 6, 2)


def toy_batch(T=3, S=1, R=2, B=8, Bq=16, seed=0, dtype=np.float32):
    """An in-memory 2-D task: label = x0 + 0.5 x1 > 0."""
    rng = np.random.default_rng(seed)
    tx = rng.uniform(-1, 1, (T, S, R, B, 2)).astype(dtype)
    qx = rng.uniform(-1, 1, (S, R, Bq, 2)).astype(dtype)
    label = lambda x: (x[..., 0] + 0.5 * x[..., 1] > 0).astype(np.int32)  # noqa: E731
    return {"train_x": tx, "train_y": label(tx), "query_x": qx, "query_y": label(qx)}


# ------------------------------------------------------------------------- meta-gradient

def test_meta_gradient_matches_finite_differences():
    config = BlurConfig(activation_norm=False, oja=True)
    genome = Genome.random(2, seed=3, species=1, transform_std=0.7, synapse_update=-0.05)
    params = {n: tf.constant(v, tf.float64) for n, v in genome.numpy().items()}
    batch = toy_batch(dtype=np.float64)
    seed = tf.constant([5, 6], tf.int64)

    def loss_of(p, recompute=0):
        return tf.reduce_sum(meta_loss(p, seed, batch, config, SIZES, recompute=recompute,
                                       logit_scale=2.0)[0])

    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = loss_of(params)
    grads = tape.gradient(loss, params)
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss_rc = loss_of(params, recompute=2)
    grads_rc = tape.gradient(loss_rc, params)
    eps = 1e-6
    checked = 0
    for name, index in [("nu", (0, 0, 1)), ("mu", (0, 1, 0)), ("pre", (0, 1, 1)),
                        ("post", (0, 0, 0)), ("eta_syn", (0,)), ("f", (0,)), ("oja", (0,))]:
        base = params[name].numpy()
        plus, minus = base.copy(), base.copy()
        plus[index] += eps
        minus[index] -= eps
        fd = (loss_of({**params, name: tf.constant(plus)})
              - loss_of({**params, name: tf.constant(minus)})).numpy() / (2 * eps)
        analytic = grads[name].numpy()[index]
        assert abs(fd - analytic) <= 1e-5 * max(1.0, abs(fd)), (name, fd, analytic)
        # gradient checkpointing changes nothing but memory
        assert abs(grads_rc[name].numpy()[index] - analytic) <= 1e-9 * max(1.0, abs(analytic))
        checked += abs(analytic) > 1e-6
    assert checked >= 5  # most checked entries have a real gradient


def test_meta_loss_shapes_and_species_independence():
    genome = Genome.random(2, seed=0, species=3, same_start=False)
    batch = toy_batch(T=2, S=3)
    params = genome.params()
    loss, aux = meta_loss(params, tf.constant([1, 2], tf.int64), batch, BlurConfig(), SIZES)
    assert loss.shape == (3,) and aux["accuracy"].shape == (3,)
    assert aux["inner_accuracy"].shape == (2, 3) and aux["finite"].numpy().all()
    # species 1 alone gives the same loss as inside the population (per-replica seeds)
    seeds = tf.constant([[1, 2], [3, 4]], tf.int64)
    full = meta_loss(params, seeds, batch, BlurConfig(), SIZES, shared_synapses=True)[0]
    one = meta_loss({n: v[1:2] for n, v in params.items()}, seeds,
                    {k: v[:, 1:2] if k.startswith("train") else v[1:2] for k, v in batch.items()},
                    BlurConfig(), SIZES, shared_synapses=True)[0]
    np.testing.assert_allclose(full[1:2].numpy(), one.numpy(), rtol=1e-5)


# ------------------------------------------------------------------- per-species Adam

def test_adam_clips_per_species_and_skips_non_finite():
    params = {"a": tf.zeros([3, 2]), "b": tf.zeros([3])}
    grads = {"a": tf.constant([[3.0, 4.0], [300.0, 400.0], [np.nan, 1.0]]),
             "b": tf.constant([0.0, 0.0, 1.0])}
    zeros = {n: tf.zeros_like(v) for n, v in params.items()}
    new, m, v, count, norms, ok = adam_update(params, grads, zeros, zeros, tf.zeros([3]),
                                              learning_rate=0.1, clip_norm=10.0)
    np.testing.assert_allclose(norms.numpy()[:2], [5.0, 500.0], rtol=1e-6)
    assert ok.numpy().tolist() == [True, True, False]
    assert count.numpy().tolist() == [1.0, 1.0, 0.0]
    # species 1 was clipped to norm 10 by its own norm: the first moment is 0.1 * g * 10 / 500
    np.testing.assert_allclose(m["a"].numpy()[1], [0.1 * 300 * 10 / 500, 0.1 * 400 * 10 / 500],
                               rtol=1e-5)
    # species 0 (norm 5 < 10) is not clipped, and not affected by species 1
    np.testing.assert_allclose(m["a"].numpy()[0], [0.3, 0.4], rtol=1e-5)
    # the non-finite species is untouched
    assert np.all(new["a"].numpy()[2] == 0) and np.all(m["a"].numpy()[2] == 0)
    # first Adam step: -lr * sign(g)
    np.testing.assert_allclose(new["a"].numpy()[:2], -0.1 * np.ones([2, 2]), rtol=1e-4)


# ---------------------------------------------------------------------- trainer

@pytest.fixture(scope="module")
def and_task():
    return preset_task("and")


def _eval_losses(trainer, task, S, T, seeds=(11, 12, 13)):
    losses = []
    for s in seeds:
        batch = next(iter(make_task_stream(task, species=S, replicas=16, batch_size=32,
                                           unroll_steps=T, seed=s)))
        losses.append(trainer.evaluate(batch)["loss"])
    return np.array(losses)


def test_meta_training_lowers_meta_loss_for_every_species(and_task):
    S, T = 3, 3
    genome = Genome.random(2, seed=0, species=S)
    trainer = GradientTrainer(genome, BlurConfig(), (2, 8, 2), learning_rate=1e-2, seed=0,
                              logit_scale=3.0, jit_compile=False)
    before = _eval_losses(trainer, and_task, S, T)
    stream = iter(make_task_stream(and_task, species=S, replicas=4, batch_size=32,
                                   unroll_steps=T, seed=0))
    for _ in range(40):
        metrics = trainer.train_step(next(stream))
        assert metrics["applied"].all()
    after = _eval_losses(trainer, and_task, S, T)
    drop = before.mean(0) - after.mean(0)
    noise = np.maximum(before.std(0), after.std(0))
    assert np.all(drop > 3 * noise + 0.02), (before, after)
    assert int(trainer.step.numpy()) == 40


def test_non_finite_species_is_skipped():
    genome = Genome.random(2, seed=0, species=2)
    values = genome.numpy()
    values["eta_syn"][1] = 3e38  # species 1 overflows
    genome.assign(values)
    trainer = GradientTrainer(genome, BlurConfig(), SIZES, learning_rate=1e-2, jit_compile=False)
    before = trainer.genome_values()
    metrics = trainer.train_step(toy_batch(T=2, S=2))
    after = trainer.genome_values()
    assert metrics["applied"].tolist() == [True, False]
    assert not np.allclose(after["nu"][0], before["nu"][0])
    for name in after:
        np.testing.assert_array_equal(after[name][1], before[name][1])
    assert trainer.count.numpy().tolist() == [1.0, 0.0]


def test_repeated_non_finite_steps_stop_the_run(tmp_path, and_task):
    with pytest.raises(MetaTrainingDiverged, match="non-finite meta-gradients"):
        meta_train(str(tmp_path),
                   Objective(task=and_task, hidden_sizes=(4,), species=2, replicas=1,
                             batch_size=8, curriculum=Curriculum(unroll_start=2)),
                   Start(genome_values={"eta_syn": 3e38}),
                   schedule=Schedule(num_steps=10, max_nonfinite_in_a_row=3, checkpoint_every=1,
                                     jit_compile=False),
                   report=Report(final_eval=False, export=False))
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert len(lines) == 3 and not any(any(l["applied"]) for l in lines)
    # the checkpoints written before the stop are intact and restorable
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest is not None and latest.endswith("-2")


def test_curriculum_run_changes_unroll_and_task(tmp_path):
    """A run through two unroll counts and two tasks; checks the logged curriculum."""
    curriculum = Curriculum(unroll_start=1, unroll_delta=1, unroll_every=3,
                            task_phases=((4, preset_task("xor")),))
    results = meta_train(
        str(tmp_path), Objective(task=preset_task("and"), hidden_sizes=(4,), species=2,
                                 replicas=1, batch_size=8, curriculum=curriculum),
        outer=Outer(GradientTrainer, {"learning_rate": 1e-2}),
        schedule=Schedule(num_steps=6, jit_compile=False, checkpoint_every=3, eval_every=3),
        report=Report(final_eval=False, export=False, plots=False))
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["unroll"] for l in lines] == [1, 1, 1, 2, 2, 2]
    assert [l["phase"] for l in lines] == [0, 0, 0, 0, 1, 1]
    assert results["steps_done"] == 6 and results["target_unroll"] == 2
    learned = Genome.load_json(str(tmp_path / "genome.json"))
    assert learned.species is None and learned.k == 2
    assert os.listdir(tmp_path / "tensorboard")


# -------------------------------------------------------------------------- export

@pytest.mark.process
def test_saved_model_runs_without_blur_keras(tmp_path):
    from blur_keras.core.step import inner_step, predict
    from blur_keras.rules.export import export_saved_model
    from blur_keras.meta.objective.unroll import pm1_targets
    from blur_keras.core.synapses import init_synapses

    config = BlurConfig(activation_norm=True)
    genome = Genome.random(2, seed=1)
    path = export_saved_model(str(tmp_path / "rule"), genome.numpy(), config, (3, 5, 2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0], np.int32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({path!r})\n"
        "x = np.load(sys.argv[1]); y = np.load(sys.argv[2])\n"
        "s = m.init(tf.constant(7, tf.int64))\n"
        "for _ in range(3):\n"
        "    s = m.train_step(*s, x, y)\n"
        "np.save(sys.argv[3], m.predict_batch(*s[:4], x).numpy())\n"
        "assert m.predict(*s, x[:1]).shape == (1, 2)\n"
        "assert sorted(m.genome())[:2] == ['alpha', 'beta']\n"
        "assert set(m.signatures) == {'train_step', 'predict', 'predict_batch', 'init_moments'}\n"
        "assert not [k for k in sys.modules if k.startswith('blur_keras')]\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy"),
                           str(tmp_path / "y.npy"), str(tmp_path / "out.npy")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = genome.params()
    synapses = init_synapses(tf.constant(7, tf.int64), (3, 5, 2), 2, (), config)
    for _ in range(3):
        synapses, _ = inner_step(params, synapses, x, pm1_targets(y, 2), config)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               predict(params, synapses, x, config).numpy(), rtol=1e-5, atol=1e-6)
