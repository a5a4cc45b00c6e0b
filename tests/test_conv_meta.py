"""Meta-training through a network of layer specs (convolution, pooling, flatten, dense): the
population meta-loss against member-by-member inner steps, its gradient against finite
differences, XLA against eager, small gin runs with both outer trainers, errors at the door."""

import json
import re

import gin
import numpy as np
import pytest
import tensorflow as tf

from blur_keras.core import network
from blur_keras.core.config import BlurConfig, backprop_config
from blur_keras.core.feedback import pm1_targets
from blur_keras.core.layer_specs import Conv2D, Dense, Flatten, Pool2D
from blur_keras.meta.objective.chain import Chain
from blur_keras.meta.objective.chain_unroll import (member_batch, member_seeds, member_synapses,
                                                    population_loss)
from blur_keras.meta.objective.unroll import meta_loss
from blur_keras.rules.genome import Genome

SPECS = (Conv2D(3, 3), Pool2D("max"), Flatten(), Dense(4))
NET = Chain((6, 6, 1), SPECS)
SOFTMAX = backprop_config(feedback="softmax", batch_reduction="mean")


def population(species, k=2, seed=0, dtype=tf.float32, scale=0.05):
    """Backprop genomes with a different small perturbation per species."""
    values = Genome.backprop(0.3, k=k, species=species).numpy()
    rng = np.random.default_rng(seed)
    return {n: tf.constant(v + scale * rng.normal(size=v.shape), dtype) for n, v in values.items()}


def batch_of(steps, species, replicas, batch, query, features=36, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"train_x": rng.normal(size=(steps, species, replicas, batch, features)).astype("f4"),
            "train_y": rng.integers(0, classes, (steps, species, replicas, batch)),
            "query_x": rng.normal(size=(species, replicas, query, features)).astype("f4"),
            "query_y": rng.integers(0, classes, (species, replicas, query))}


def member_loop(params, seed, data, config, trajectory_weight, momentum=None):
    """The meta-loss member by member through ``core.network.inner_step`` and ``predict``;
    with ``momentum``, the query normalised with ``core.network.step_moments`` of every step
    folded in NumPy (from zeros and ones, ``normalization.track_moments``)."""
    steps, species, replicas = data["train_x"].shape[:3]
    fold = tf.random.experimental.stateless_fold_in
    loss, acc, inner = np.zeros([species]), np.zeros([species]), np.zeros([steps, species])
    for s in range(species):
        p = {n: v[s] for n, v in params.items()}
        for r in range(replicas):
            syn = network.init_synapses(fold(fold(seed, r), s), NET.input_shape, SPECS, 2, config)
            online, tracked = 0.0, None
            for t in range(steps):
                x = data["train_x"][t, s, r].reshape(-1, 6, 6, 1)
                y = data["train_y"][t, s, r]
                if momentum is not None:
                    batch = [tuple(np.asarray(m, np.float64) for m in pair)
                             for pair in network.step_moments(p, syn, x, SPECS, config)]
                    if tracked is None:
                        tracked = [(np.zeros_like(m), np.ones_like(v)) for m, v in batch]
                    a = max(1 - momentum, 1 / (t + 1))
                    tracked = [tuple(old + a * (new - old) for old, new in zip(pair, b))
                               for pair, b in zip(tracked, batch)]
                syn, states = network.inner_step(p, syn, x, pm1_targets(y, 4), SPECS, config)
                guess = states[-1][..., 0].numpy()
                online += np.mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, guess)) / steps
                inner[t, s] += np.mean(guess.argmax(-1) == y) / replicas
            moments = None if tracked is None else [
                tuple(tf.constant(m, tf.float32) for m in pair) for pair in tracked]
            out = network.predict(p, syn, data["query_x"][s, r].reshape(-1, 6, 6, 1), SPECS,
                                  config, moments=moments).numpy()
            y = data["query_y"][s, r]
            query = np.mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, out))
            loss[s] += ((1 - trajectory_weight) * query + trajectory_weight * online) / replicas
            acc[s] += np.mean(out.argmax(-1) == y) / replicas
    return loss, acc, inner


@pytest.mark.parametrize("config", [SOFTMAX, BlurConfig(activation_norm=True)],
                         ids=["softmax_sgd", "activation_norm"])
def test_population_meta_loss_is_the_member_by_member_loop(config):
    params = population(2)
    data = batch_of(3, 2, 2, 5, 7)
    seed = tf.constant([4, 9], tf.int64)
    loss, aux = tf.function(lambda p: meta_loss(p, seed, data, config, NET,
                                                 trajectory_weight=0.3))(params)
    want_loss, want_acc, want_inner = member_loop(params, seed, data, config, 0.3)
    np.testing.assert_allclose(loss, want_loss, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux["accuracy"], want_acc, atol=1e-6)
    np.testing.assert_allclose(aux["inner_accuracy"], want_inner, atol=1e-6)
    assert aux["finite"].numpy().all() and loss[0] != loss[1]


def test_the_query_with_tracked_statistics_is_the_member_by_member_loop():
    """``inference="moving"``: the query is normalised as ``BlurModel`` predicts, with the
    statistics of the T steps tracked (here at momentum 0.5, so that the last steps weigh
    more than a plain mean), not over the query batch."""
    config, params = BlurConfig(activation_norm=True), population(2)
    data = batch_of(4, 2, 2, 5, 7)
    seed = tf.constant([4, 9], tf.int64)
    loss, aux = tf.function(lambda p: meta_loss(p, seed, data, config, NET, inference="moving",
                                                 inference_momentum=0.5))(params)
    want_loss, want_acc, want_inner = member_loop(params, seed, data, config, 0.0, momentum=0.5)
    np.testing.assert_allclose(loss, want_loss, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux["accuracy"], want_acc, atol=1e-6)
    np.testing.assert_allclose(aux["inner_accuracy"], want_inner, atol=1e-6)
    batch_loss, _ = meta_loss(params, seed, data, config, NET)
    assert np.all(np.abs(loss.numpy() - batch_loss.numpy()) > 1e-4)
    # a rule without activation_norm has nothing to track: the same loss in both modes
    plain = meta_loss(params, seed, data, SOFTMAX, NET, inference="moving")[0]
    np.testing.assert_array_equal(plain, meta_loss(params, seed, data, SOFTMAX, NET)[0])


def test_shared_synapses_and_a_shared_data_species_axis():
    """CMA-ES's evaluation: every species from the same synapses, on the same batches."""
    params = population(1)
    params = {n: tf.concat([v, v], 0) for n, v in params.items()}
    data = batch_of(2, 1, 2, 4, 6)
    loss, _ = meta_loss(params, tf.constant([1, 2], tf.int64), data, SOFTMAX, NET,
                        shared_synapses=True)
    np.testing.assert_allclose(loss[0], loss[1], rtol=1e-6)
    unshared, _ = meta_loss(params, tf.constant([1, 2], tf.int64), data, SOFTMAX, NET)
    assert abs(float(unshared[0] - unshared[1])) > 1e-6


def test_a_per_layer_genome_reads_each_layer_pair_its_own_entries():
    shared, data = population(2), batch_of(2, 2, 1, 4, 5)
    net = Chain((6, 6, 1), (Conv2D(3, 3), Pool2D("max"), Flatten(), Dense(5), Dense(4)))
    per_layer = {n: tf.stack([v, v, v], axis=1) for n, v in shared.items()}

    def loss(p, flag):
        return meta_loss(p, tf.constant([5, 6], tf.int64), data, SOFTMAX, net, per_layer=flag)[0]

    np.testing.assert_allclose(loss(per_layer, True), loss(shared, False), rtol=1e-6)
    other = dict(per_layer, eta_syn=per_layer["eta_syn"] * tf.constant([1.0, 1.0, 0.5]))
    assert np.all(np.abs(loss(other, True) - loss(shared, False)) > 1e-6)


def test_meta_gradient_is_finite_differences_in_float64():
    params = population(2, dtype=tf.float64)
    data = batch_of(2, 2, 1, 4, 5)
    seed = tf.constant([3, 1], tf.int64)

    def total(p):
        return tf.reduce_sum(meta_loss(p, seed, data, SOFTMAX, NET, trajectory_weight=0.5)[0])

    with tf.GradientTape() as tape:
        tape.watch(params)
        value = total(params)
    grads = tape.gradient(value, params)
    for name, index in (("mu", (1, 0, 1)), ("eta_syn", (0,)), ("pre", (1, 1, 0))):
        eps = 1e-6
        bump = np.zeros(params[name].shape)
        bump[index] = eps
        plus = total(dict(params, **{name: params[name] + bump}))
        minus = total(dict(params, **{name: params[name] - bump}))
        numeric = float(plus - minus) / (2 * eps)
        assert abs(numeric) > 1e-6, name
        np.testing.assert_allclose(grads[name].numpy()[index], numeric, rtol=1e-5, atol=1e-9)


def test_recomputed_segments_give_the_same_loss_and_gradient():
    """``recompute=2`` over T = 5 (two recomputed segments and a remainder of one step), with
    the tracked statistics carried through the segments: the loss, the accuracies and the
    meta-gradient of the run that keeps every step's intermediates, in a graph (``tf.map_fn``
    over members around the segments' loop) and under XLA (from given synapses, as XLA draws
    others from a seed)."""
    config, momentum = BlurConfig(activation_norm=True), 0.9
    params, data = population(2), batch_of(5, 2, 1, 4, 6)
    seed = tf.constant([2, 8], tf.int64)
    synapses = member_synapses(member_seeds(seed, 2, 1), NET, 2, config)
    members = member_batch(data, 2, NET.input_shape, tf.float32)

    def loss_and_grad(p, recompute):
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss, aux = population_loss(p, synapses, members, config, NET, recompute=recompute,
                                        trajectory_weight=0.5, inference_momentum=momentum)
            total = tf.reduce_sum(loss)
        return loss, aux, tape.gradient(total, p,
                                        unconnected_gradients=tf.UnconnectedGradients.ZERO)

    kept, recomputed = (tf.function(lambda p, c=c: loss_and_grad(p, c))(params) for c in (0, 2))
    jitted = tf.function(lambda p: loss_and_grad(p, 2), jit_compile=True)(params)
    np.testing.assert_allclose(recomputed[0], kept[0], rtol=1e-6)
    np.testing.assert_allclose(jitted[0], kept[0], rtol=1e-5)
    for key in ("accuracy", "inner_accuracy"):
        np.testing.assert_array_equal(recomputed[1][key], kept[1][key])
    assert kept[1]["inner_accuracy"].shape == (5, 2)
    # the tracked statistics are in play: the query normalised over its batch scores otherwise
    over_batch = tf.function(lambda p: population_loss(p, synapses, members, config, NET,
                                                       trajectory_weight=0.5)[0])(params)
    assert np.all(np.abs(kept[0].numpy() - over_batch.numpy()) > 1e-5)
    for name in ("nu", "mu", "pre", "post", "eta_syn"):
        assert np.abs(kept[2][name].numpy()).max() > 0, name
    for name in params:
        np.testing.assert_allclose(recomputed[2][name], kept[2][name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)
        np.testing.assert_allclose(jitted[2][name], kept[2][name], rtol=2e-4, atol=1e-5,
                                   err_msg=name)


def test_xla_compiles_the_meta_loss_and_its_gradient_from_a_seed():
    """Synapses drawn from a seed inside the compiled function (XLA's Philox draws other
    numbers than TensorFlow's kernels do; XLA against eager from given synapses:
    ``test_recomputed_segments_give_the_same_loss_and_gradient``), with activation_norm and
    the query normalised with the tracked statistics."""
    params, data = population(2), batch_of(2, 2, 1, 5, 7)
    seed = tf.constant([4, 9], tf.int64)

    def loss_and_grad(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = meta_loss(p, seed, data, BlurConfig(activation_norm=True), NET,
                             reverse="autodiff", inference="moving")[0]
            total = tf.reduce_sum(loss)
        return loss, tape.gradient(total, p, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    loss, grads = tf.function(loss_and_grad, jit_compile=True)(params)
    assert np.isfinite(loss.numpy()).all() and loss.shape == (2,)
    assert all(np.isfinite(g.numpy()).all() for g in grads.values())
    assert np.abs(grads["eta_syn"].numpy()).min() > 0


def test_hand_reverse_and_shapes_fail_at_the_door():
    from blur_keras.meta.outer.gradient import GradientTrainer

    params, data, seed = population(2), batch_of(2, 2, 1, 4, 5), tf.constant([1, 2], tf.int64)
    genome = Genome.backprop(0.3, species=2)
    for call, match in (
            (lambda: meta_loss(params, seed, data, SOFTMAX, NET, reverse="hand"),
             "reverse='hand'"),
            (lambda: meta_loss(params, seed, batch_of(2, 2, 1, 4, 5, features=25), SOFTMAX,
                               NET), "input shape"),
            (lambda: GradientTrainer(genome, SOFTMAX, NET), "step_gradient='hand'"),
            (lambda: Chain((6, 6, 1), (Conv2D(3, 3), Pool2D("max"))), "ends in"),
            (lambda: Chain((6, 6, 1), (Conv2D(3, 3), Conv2D(2, 1))), "last layer"),
            (lambda: Chain((4, 4, 1), (Conv2D(3, 5), Flatten(), Dense(4))), "larger than")):
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


TASK = ["import blur_keras.data", "import blur_keras.meta.run.experiment",
        "Objective.task = @Task()", "Task.dataset = 'mnist_5k'", "Task.resolution = 8"]
GIN_RUN = TASK + [
    "Objective.specs = @conv_chain()", "conv_chain.filters = (4,)", "conv_chain.kernel_size = 3",
    "Objective.blur_config = @backprop_config()", "backprop_config.feedback = 'softmax'",
    "backprop_config.batch_reduction = 'mean'", "Start.genome_init = 'backprop'",
    "Start.backprop_learning_rate = 0.3", "Objective.species = 2", "Objective.replicas = 2",
    "Objective.batch_size = 8", "Curriculum.unroll_start = 3", "Schedule.num_steps = 2",
    "Schedule.eval_every = 2", "Schedule.eval_replicas = 2", "Schedule.checkpoint_every = 2",
    "Schedule.log_every = 1", "Report.final_eval = False", "Objective.curriculum = @Curriculum()",
    "GradientTrainer.step_gradient = 'autodiff'", "GradientTrainer.learning_rate = 0.01",
    "CMAESTrainer.population_size = 4", "CMAESTrainer.sigma0 = 0.02",
    "Schedule.jit_compile = False"]


def gin_run(path, bindings):
    from blur_keras.meta.run.experiment import meta_train

    gin.clear_config()
    gin.parse_config(bindings)
    try:
        return meta_train(str(path))
    finally:
        gin.clear_config()


@pytest.mark.parametrize("bindings, match", [
    (["Objective.hidden_sizes = (4,)"], "Objective.hidden_sizes and Objective.specs"),
    (["Objective.input_shape = (4, 4, 3)", "conv_chain.kernel_size = 2"],
     "Objective.input_shape"),
    (["conv_chain.classes = 5"], "5 units"),
    (["Outer.trainer = @GradientTrainer", "GradientTrainer.step_gradient = 'hand'"],
     "GradientTrainer: step_gradient='hand'"),
    (["conv_chain.kernel_size = 9"], "Objective.specs on inputs of shape \\(8, 8, 1\\)")])
def test_a_run_through_a_conv_network_checks_its_bindings(tmp_path, bindings, match):
    with pytest.raises(ValueError, match=match) as err:
        gin_run(tmp_path, GIN_RUN + bindings)
    assert re.search(match, str(err.value).splitlines()[0])  # gin adds where it was called
    assert not (tmp_path / "genome.json").exists()


def test_meta_train_from_gin_through_a_conv_network_in_stages_of_both_trainers(tmp_path):
    """A gradient stage (recomputing its segments), then a CMA-ES stage, each of 2 meta-steps
    through a conv network; the final genome, edited, is exported on its chain and judged by
    the evaluation suite on the same chain against the baselines."""
    staged = GIN_RUN + ["meta_train.stages = ['fast', 'long']",
                        "fast/Outer.trainer = @GradientTrainer",
                        "long/Outer.trainer = @CMAESTrainer",
                        "fast/Objective.recompute = 2",
                        "Report.final_values = {'eta_syn': -0.25}",
                        "long/Report.final_eval = True", "Report.final_eval_replicas = 1",
                        "Report.final_eval_examples = 200",
                        "evaluate_suite.horizons = (2, 10)",
                        "evaluate_suite.baselines = ['sgd']",
                        "evaluate_suite.learning_rates = {'sgd': (0.3,)}"]
    results = gin_run(tmp_path, staged)
    assert [r["steps_done"] for r in results["stages"]] == [2, 2]
    for stage, outer in zip(("fast", "long"), ("adam", "cma")):
        assert np.isfinite(results["stages"][0 if stage == "fast" else 1]["val_accuracy"]).all()
        assert json.load(open(tmp_path / stage / "run_settings.json"))["outer"] == outer
        sizes = json.load(open(tmp_path / stage / "genome.json"))["provenance"]["sizes"]
        assert sizes["input_shape"] == [8, 8, 1]
        assert [s["layer"] for s in sizes["specs"]] == ["Conv2D", "Pool2D", "Flatten", "Dense"]
        assert len(open(tmp_path / stage / "metrics.jsonl").readlines()) == 2
    final = json.load(open(tmp_path / "genome.json"))
    assert final["values"]["eta_syn"] == -0.25
    saved = tf.saved_model.load(str(tmp_path / "saved_model"))
    assert float(saved.genome()["eta_syn"].numpy()) == -0.25
    out = saved.predict(*saved.init(tf.constant(1, tf.int64)), tf.zeros([3, 8, 8, 1]))
    assert out.shape == (3, 10)
    comparison = results["comparison"]
    assert comparison["rule"] == "final genome" and comparison["unroll"] == 3
    assert "64-8x8x1-conv4x3x3-maxpool2x2-flatten-10" in comparison["task"], comparison["task"]
    assert 0.0 <= comparison["sgd_best"] <= 1.0 and comparison["sgd_best_learning_rate"] == 0.3
