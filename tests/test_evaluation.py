"""The evaluation suite: a rule vs tuned SGD / SGD+momentum / Adam."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.evaluation import baselines as bl
from blur_keras.evaluation import suite as ev
SIZES = (6, 8, 3)
STEPS = 12
SEEDS = 3
BATCH = 8
LR = 0.05


@pytest.fixture(scope="module")
def data():
    return ev.synthetic_data("blobs", SIZES[0], SIZES[-1], pool=300, val=100, test=120, seed=3)


@pytest.fixture(scope="module")
def suite(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("suite"))
    genome = bk.Genome.random(2, seed=0, transform_std=0.5, synapse_update=-0.01)
    path = os.path.join(out, "genome.json")
    genome.with_metadata(bk.BlurConfig(activation_norm=True), provenance={"task": "test"}).save_json(path)
    rule = ev.load_rule(path)
    lrs = {"sgd": (1e-3, 1e-2, 0.1, 1.0), "momentum": (1e-3, 1e-2, 0.1, 1.0),
           "adam": (1e-4, 1e-3, 1e-2, 0.1)}
    summary = ev.run_suite(rule, [data], out, hidden_sizes=(SIZES[1:-1],), horizons=(5, 10),
                           seeds=SEEDS, batch_size=BATCH, learning_rates=lrs, record_every=5,
                           log=lambda *_: None)
    return out, summary


def test_suite_writes_every_file_with_sane_values(suite):
    out, summary = suite
    for name in ("points.csv", "summary.json", "summary.csv", "table.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert any(f.startswith("curves_") and f.endswith(".png") for f in os.listdir(out))
    entry = summary["results"][0]
    assert entry["sizes"] == list(SIZES) and entry["steps"] == [0, 5, 10]
    assert set(entry["methods"]) == {"blur", "sgd", "momentum", "adam"}
    for res in entry["methods"].values():
        assert all(0.0 <= m <= 1.0 for m in res["test_mean"])
        assert all(c >= 0 for c in res["test_ci95"])
    assert entry["methods"]["adam"]["test_mean"][-1] > 0.6  # blobs are easy for a tuned Adam
    table = open(os.path.join(out, "table.md")).read()
    assert "| BLUR |" in table and "**" in table and "10 steps" in table
    assert json.load(open(os.path.join(out, "summary.json")))["provenance"] == {"task": "test"}


def test_best_learning_rate_is_chosen_on_validation(suite):
    out, summary = suite
    rows = list(csv.DictReader(open(os.path.join(out, "points.csv"))))
    entry = summary["results"][0]
    for method in ("sgd", "adam"):
        for i, step in enumerate(entry["steps"]):
            means = {}
            for split in ("val", "test"):
                acc = {}
                for r in rows:
                    if r["method"] == method and int(r["step"]) == step and r["split"] == split:
                        acc.setdefault(float(r["learning_rate"]), []).append(float(r["accuracy"]))
                means[split] = {lr: np.mean(v) for lr, v in acc.items()}
            lrs = list(means["val"])
            best_val = lrs[int(np.argmax([means["val"][lr] for lr in lrs]))]
            assert entry["methods"][method]["best_learning_rate"][i] == best_val
            assert entry["methods"][method]["test_mean"][i] == pytest.approx(means["test"][best_val])


def test_select_uses_validation_not_test():
    curves = np.zeros((2, 1, 3, 2))
    curves[0, 0] = [[0.9, 0.9], [0.1, 0.1], [0.5, 0.5]]  # validation prefers lr index 0
    curves[1, 0] = [[0.2, 0.4], [1.0, 1.0], [0.7, 0.7]]  # test would prefer index 1
    best, test = bl.select(curves)
    assert best.tolist() == [0]
    np.testing.assert_allclose(test[0], [0.2, 0.4])
    mean, half = ev.mean_ci([0.2, 0.4])
    assert mean == pytest.approx(0.3) and half == pytest.approx(12.706 * 0.1 / 1.0, rel=1e-3)


def test_the_loop_evaluates_only_at_the_recorded_steps():
    """``run_loop`` records ``eval_fn`` at steps 0, 3 and 5 of 6, and calls it there only."""
    calls = tf.Variable(0)
    pool_x = tf.reshape(tf.range(12, dtype=tf.float32), [6, 2])
    pool_y = tf.zeros([6], tf.int32)

    def eval_fn(state):
        with tf.control_dependencies([calls.assign_add(1)]):
            return tf.identity(state)

    @tf.function(autograph=False)
    def run():
        return bl.run_loop(lambda state, x, y: state + tf.reduce_sum(x), eval_fn,
                           tf.constant(0.0), pool_x, pool_y, tf.range(6)[:, None],
                           bl.record_slots((0, 3, 5), 6), 3)

    out = run().numpy()
    np.testing.assert_allclose(out, [0.0, 15.0, 45.0])  # the sum of the first 0, 3, 5 rows
    assert int(calls.numpy()) == 3  # at the start (step 0's record), then at steps 3 and 5


def test_steps_to_reach_the_rule():
    steps = [0, 10, 20, 50]
    curves = np.array([[0.1, 0.1], [0.3, 0.5], [0.6, 0.55], [0.7, 0.9]])  # [records, lrs]
    # any learning rate may serve a target; the first recorded step where one reaches it
    assert ev.steps_to_reach(curves, [0.1, 0.5, 0.6, 0.95], steps) == [0, 10, 20, None]


def test_suite_reports_steps_to_reach_the_rule(suite):
    out, summary = suite
    methods = summary["results"][0]["methods"]
    rows = list(csv.DictReader(open(os.path.join(out, "points.csv"))))
    steps = summary["results"][0]["steps"]
    for method in ("sgd", "adam"):
        val = np.zeros((len(steps), 4))
        lrs = sorted({float(r["learning_rate"]) for r in rows if r["method"] == method})
        for i, step in enumerate(steps):
            for j, lr in enumerate(lrs):
                val[i, j] = np.mean([float(r["accuracy"]) for r in rows if r["method"] == method
                                     and int(r["step"]) == step and r["split"] == "val"
                                     and float(r["learning_rate"]) == lr])
        assert methods[method]["steps_to_reach_rule"] == ev.steps_to_reach(
            val, methods["blur"]["val_mean"], steps)
    assert "needs to reach the rule's" in open(os.path.join(out, "table.md")).read()


class HalfSquaredError(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return 0.5 * tf.reduce_sum(tf.square(y_pred - y_true), axis=-1)


def test_backprop_genome_and_keras_sgd_give_the_same_curve(data):
    rule = ev.load_rule(f"backprop:{LR}")
    assert rule.config == bk.BlurConfig.backprop("tanh", "linear")
    steps = ev.record_steps((STEPS,))
    idx = ev.batch_indices(len(data.pool_y), STEPS, SEEDS, BATCH, seed=1)
    synapses = ev.initial_synapses(rule, SIZES, SEEDS, seed=1)
    blur = ev.blur_curves(rule, synapses, data, idx, steps)
    weights = bl.baseline_weights(synapses)
    hidden, last = bl.baseline_activations(rule.config, "mse")
    assert (hidden, last) == ("tanh", "linear")
    sgd = bl.baseline_curves("sgd", [LR], weights, data, idx, steps, hidden, last, loss="mse",
                             reduction="sum")[:, :, 0]
    np.testing.assert_allclose(blur, sgd, atol=1.5 / len(data.test_y))  # ≤ 1 example flips
    # and Keras's own SGD on the same batches from the same weights
    for r in range(SEEDS):
        model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(SIZES[1], "tanh"),
                                  keras.layers.Dense(SIZES[2])])
        for layer, w in zip(model.layers, weights):
            w = w[r].numpy()
            layer.set_weights([w[:-1], w[-1]])
        model.compile(keras.optimizers.SGD(LR), HalfSquaredError(reduction="sum"))
        curve = [np.mean(np.argmax(model.predict(data.test_x, verbose=0), -1) == data.test_y)]
        for t in range(STEPS):
            x, y = data.pool_x[idx[t, r]], data.pool_y[idx[t, r]]
            model.train_on_batch(x, 2 * np.eye(SIZES[-1], dtype="f4")[y] - 1)
            curve.append(np.mean(np.argmax(model.predict(data.test_x, verbose=0), -1) == data.test_y))
        np.testing.assert_allclose(blur[1, :, r], curve, atol=1.5 / len(data.test_y))


def test_per_layer_rule_on_another_depth_is_a_clear_error(data):
    genome = bk.Genome.random(2, num_layers=1)
    rule = ev.Rule("per-layer", genome.numpy(), bk.BlurConfig(), per_layer=True)
    synapses = ev.initial_synapses(rule, SIZES, 1)
    with pytest.raises(ValueError, match="per-layer genome for 1 layer pairs; it cannot train a network with 2"):
        ev.blur_curves(rule, synapses, data, np.zeros((2, 1, 4), np.int32), (0, 2))


def test_backprop_rule_rejects_another_config():
    with pytest.raises(ValueError, match="backprop rule runs under BlurConfig.backprop"):
        ev.load_rule("backprop:0.1", config=bk.BlurConfig())
