"""docs/spec.md §8: the synapse-channel mix, and the k=3 momentum genome that makes a BLUR step
exactly a step of Keras's SGD with momentum."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core.step import step
from blur_keras.core.layout import pairs_in

try:
    from test_backprop import (BATCH, SIZES, HalfSquaredError, batches, dense_layers,
                               keras_network, stacked)
except ImportError:  # pragma: no cover
    from tests.test_backprop import (BATCH, SIZES, HalfSquaredError, batches, dense_layers,
                                     keras_network, stacked)

LR, BETA = 0.01, 0.9


def momentum_synapses(model):
    """Channels 0 and 1 the Keras weights, channel 2 (the velocity) 0."""
    pairs = []
    for d in dense_layers(model):
        w = stacked(d)[..., None]
        w = np.concatenate([w, w, np.zeros_like(w)], axis=-1)
        pairs.append((tf.constant(w), tf.constant(np.transpose(w[:-1], (1, 0, 2)))))
    return tuple(pairs)


@pytest.mark.parametrize("hidden,last,reduction", [
    ("tanh", "linear", "sum"), ("relu", "tanh", "sum"), ("sigmoid", "linear", "mean")])
def test_inner_step_is_sgd_with_momentum(hidden, last, reduction):
    model = keras_network(hidden, last, seed=3)
    keras_reduction = "sum" if reduction == "sum" else "sum_over_batch_size"
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=BETA),
                  loss=HalfSquaredError(reduction=keras_reduction))
    config = bk.BlurConfig.momentum(hidden, last, batch_reduction=reduction)
    params = bk.Genome.momentum(LR, BETA).params()
    run = tf.function(lambda s, x, y: bk.inner_step(params, s, x, y, config)[0], jit_compile=True)
    synapses = momentum_synapses(model)
    for t, (x, y) in enumerate(batches(seed=7)):
        model.train_on_batch(x, y)
        synapses = run(synapses, x, y)
        for d, (w, _) in zip(dense_layers(model), synapses):
            w = w.numpy()
            np.testing.assert_allclose(w[..., 0], stacked(d), atol=1e-5, rtol=0,
                                       err_msg=f"step {t}, layer {d.name}")
            np.testing.assert_array_equal(w[..., 1], w[..., 0])  # tied weight channels
    velocity = [v.numpy() for v in model.optimizer.variables if "momentum" in v.path]
    np.testing.assert_allclose(synapses[0][0].numpy()[:-1, :, 2], velocity[0], atol=1e-6)


def test_blur_model_with_the_momentum_genome_is_keras_momentum():
    """BlurModel from fresh layers: the velocity channel starts at 0 and fit follows Keras."""
    reference = keras_network("tanh", "linear", seed=5)
    reference.compile(optimizer=keras.optimizers.SGD(LR, momentum=BETA),
                      loss=HalfSquaredError(reduction="sum"))
    net = keras.Sequential([keras.Input((SIZES[0],))] + [bk.BlurDense(n, k=3) for n in SIZES[1:]])
    model = bk.BlurModel(net, bk.Genome.momentum(LR, BETA), bk.BlurConfig.momentum(),
                         targets="raw")
    assert all(np.all(l.forward_synapses.numpy()[..., 2] == 0) for l in model.blur_layers)
    model.assign_synapses(momentum_synapses(reference))
    model.compile(metrics=[], jit_compile=True)
    data = batches(seed=11, steps=10)
    x, y = np.concatenate([b[0] for b in data]), np.concatenate([b[1] for b in data])
    reference.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for d, layer in zip(dense_layers(reference), model.blur_layers):
        np.testing.assert_allclose(layer.forward_synapses.numpy()[..., 0], stacked(d),
                                   atol=1e-5, rtol=0)


def _np_mix_update(w, dw, t, f_syn, eta_syn):
    """``W[c] ← f̃ Σ_d T[c, d] W[d] + η̃ ΔW[c]`` in the public layout ``[n, m, k]``."""
    return f_syn * np.einsum("cd,nmd->nmc", t, w) + eta_syn * dw


def test_synapse_mix_against_numpy():
    """One update with a random transition, k = 3, no ties: the kept part is T W."""
    from blur_keras.core.synapses import hebbian_delta, update_pair
    from blur_keras.core.layout import states_in, synapses_in, synapses_out
    rng = np.random.default_rng(0)
    genome = bk.Genome.random(3, seed=1, transform_std=0.6)
    values = genome.numpy()
    values["syn_mix"] = rng.normal(size=(3, 3))
    values["f_syn"] = np.float32(0.9)
    params = {n: tf.constant(v, tf.float64) for n, v in values.items()}
    cfg = bk.BlurConfig(synapse_mix=True)
    w = rng.normal(size=(5, 4, 3))          # [n_lo + 1, n_up, k]
    v = rng.normal(size=(4, 4, 3))
    lo, up = rng.normal(size=(6, 4, 3)), rng.normal(size=(6, 4, 3))  # [B, n, k]
    new_w, new_v = update_pair(synapses_in(tf.constant(w)), synapses_in(tf.constant(v)),
                               states_in(tf.constant(lo)), states_in(tf.constant(up)), params, cfg)
    from blur_keras.core.states import with_bias_neuron
    dw, _ = hebbian_delta(with_bias_neuron(states_in(tf.constant(lo))),
                          states_in(tf.constant(up)), params)
    dv, _ = hebbian_delta(states_in(tf.constant(up)), states_in(tf.constant(lo)), params)
    f_syn, eta_syn = float(values["f_syn"]), float(values["eta_syn"])
    expected_w = _np_mix_update(w, synapses_out(dw).numpy(), values["syn_mix"], f_syn, eta_syn)
    expected_v = _np_mix_update(v, synapses_out(dv).numpy(), values["syn_mix"], f_syn, eta_syn)
    np.testing.assert_allclose(synapses_out(new_w).numpy(), expected_w, rtol=1e-10)
    np.testing.assert_allclose(synapses_out(new_v).numpy(), expected_v, rtol=1e-10)


@pytest.mark.parametrize("single_state", [False, True])
def test_hand_reverse_of_the_mix_equals_autodiff(single_state):
    """The meta-gradient through a step with the mix (and a velocity channel) by the
    hand-derived reverse equals TensorFlow's autodiff, syn_mix included."""
    rng = np.random.default_rng(2)
    values = bk.Genome.random(3, seed=2, species=2, transform_std=0.5).numpy()
    values["syn_mix"] = rng.normal(0.3, 0.2, size=(2, 3, 3))
    params = {n: tf.constant(v, tf.float64) for n, v in values.items()}
    cfg = bk.BlurConfig(synapse_mix=True, velocity_channel=True, single_state=single_state,
                        oja=True)
    synapses = pairs_in(bk.init_synapses(3, (5, 4, 3), 3, (2,), cfg, dtype=tf.float64))
    synapses = tuple((w + 0.1, v + 0.1) for w, v in synapses)  # a non-zero velocity channel
    x = tf.constant(rng.normal(size=(6, 5)))
    targets = tf.constant(np.sign(rng.normal(size=(6, 3))))

    def loss(hand):
        with tf.GradientTape() as tape:
            tape.watch(params)
            new, _ = step(params, synapses, x, targets, cfg,
                          reverse="hand" if hand else "autodiff")
            total = sum(tf.reduce_sum(tf.sin(t)) for pair in new for t in pair)
        return total, tape.gradient(total, params)

    (l_hand, g_hand), (l_auto, g_auto) = loss(True), loss(False)
    np.testing.assert_allclose(l_hand.numpy(), l_auto.numpy(), rtol=1e-12)
    for name in ("syn_mix", "f_syn", "eta_syn", "nu", "post", "oja"):
        np.testing.assert_allclose(g_hand[name].numpy(), g_auto[name].numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)
    assert np.any(g_hand["syn_mix"].numpy() != 0)


def test_momentum_genome_round_trips_and_old_files_load(tmp_path):
    genome = bk.Genome.momentum(0.05, 0.8).with_metadata(config=bk.BlurConfig.momentum())
    path = str(tmp_path / "momentum.json")
    genome.save_json(path)
    loaded = bk.Genome.load_json(path)
    np.testing.assert_allclose(loaded.numpy()["syn_mix"], genome.numpy()["syn_mix"])
    assert loaded.config == bk.BlurConfig.momentum()
    old = bk.Genome.pretrained("sgd_residual_robust")  # written before syn_mix existed
    np.testing.assert_array_equal(old.numpy()["syn_mix"], np.eye(2))


def test_the_mix_flows_through_the_saved_model_and_meta_training(tmp_path):
    """A momentum rule's SavedModel trains like the library's step; meta-training a rule with
    the mix changes syn_mix (it is trainable by default under ``synapse_mix``)."""
    from blur_keras.core.step import inner_step
    from blur_keras.core.synapses import init_synapses
    from blur_keras.data import make_task_stream, preset_task
    from blur_keras.meta.objective.unroll import pm1_targets
    from blur_keras.meta.outer.gradient import GradientTrainer
    from blur_keras.rules.export import export_saved_model
    config = bk.BlurConfig.momentum("tanh", "tanh").replace(feedback="target",
                                                             backward_rule="additive")
    genome = bk.Genome.momentum(0.05, 0.9)
    rule = tf.saved_model.load(export_saved_model(str(tmp_path / "rule"), genome.numpy(),
                                                  config, (4, 6, 3)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("f4")
    y = rng.integers(0, 3, size=8).astype("i4")
    saved = rule.init(tf.constant(3, tf.int64))
    mine = init_synapses(tf.constant(3, tf.int64), (4, 6, 3), 3, (), config)
    assert np.all(mine[0][0].numpy()[..., 2] == 0)  # the velocity starts at 0
    for _ in range(3):
        saved = rule.train_step(*saved, x, y)
        mine, _ = inner_step(genome.params(), mine, x, pm1_targets(y, 3), config)
    np.testing.assert_allclose(saved[0].numpy(), mine[0][0].numpy(), rtol=1e-5, atol=1e-6)
    task = preset_task("and")
    species = bk.Genome(3, species=2, values=genome.numpy())
    trainer = GradientTrainer(species, config, (task.num_features, 6, task.num_classes),
                              learning_rate=1e-2, jit_compile=True)
    assert "syn_mix" in trainer.trainable
    stream = iter(make_task_stream(task, species=2, replicas=2, batch_size=8, unroll_steps=3,
                                   seed=0))
    before = trainer.params["syn_mix"].numpy().copy()
    trainer.train_step(next(stream))
    assert not np.allclose(trainer.params["syn_mix"].numpy(), before)
