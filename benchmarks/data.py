"""Throughput of the meta-training data stream against the inner step that consumes it.

Streams MNIST cropped to 20x20 and resized to 10x10 in batches of shape ``[8, 4, 128, 100]``
(species, replicas, batch, features), ``--unroll`` of them per meta-step, and prints batches per
second. When ``blur_keras.core.step.inner_step`` is importable, it also times one XLA-compiled inner
step on a batch of that shape (network ``100-<hidden>-10``, k states) and prints the ratio of the two
rates: the stream must feed at least ten times what the inner step consumes.

Without MNIST on the machine (no TFDS download, no local archives), Fashion-MNIST (same sizes: 60,000
training images of 28x28) stands in, and the output says so.

    python benchmarks/data.py [--unroll 10] [--meta-steps 20] [--rounds 5] [--hidden 32 128] [--k 2]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from blur_keras import data  # noqa: E402
S, R, B, SIDE = 8, 4, 128, 10
DRAIN = 8  # > prefetch buffer + parallel map calls in flight
F = SIDE * SIDE


def pick_task():
    for name in ("mnist", "fashion_mnist", "mnist_5k"):
        task = data.Task(dataset=name, crop=20, resolution=SIDE)
        try:
            data.task_arrays(task)
        except data.DatasetNotFoundError:
            continue
        return task
    raise SystemExit("no MNIST-like dataset available (see docs/data.md)")


def stream_timer(task, unroll, seed=0):
    """A function timing ``n`` meta-steps of the stream; returns (timer, setup seconds)."""
    # A small, fixed prefetch buffer: the buffer fills while the inner step is being timed, and
    # each round drains it before timing, so only elements produced during the round count.
    ds = data.make_task_stream(task, species=S, replicas=R, batch_size=B, unroll_steps=unroll, seed=seed,
                               prefetch=2)
    it = iter(ds)
    start = time.perf_counter()
    first = next(it)
    setup = time.perf_counter() - start
    assert first["train_x"].shape == (unroll, S, R, B, F), first["train_x"].shape
    for _ in range(3):  # warm up (fills the prefetch buffer)
        next(it)

    def timer(n):
        for _ in range(DRAIN):
            next(it)
        start = time.perf_counter()
        for _ in range(n):
            element = next(it)
        _ = element["train_x"].shape
        return (time.perf_counter() - start) / (n * unroll)  # seconds per batch

    return timer, setup


def inner_step_timer(hidden, k):
    """A function timing ``n`` XLA-compiled inner steps (seconds per step), or (None, reason)."""
    try:
        import blur_keras as bk
        from blur_keras.core.step import inner_step
    except Exception as e:  # noqa: BLE001 (the core may not exist yet)
        return None, f"unavailable ({type(e).__name__}: {e})"
    try:
        sizes = (F, hidden, 10)
        config = bk.BlurConfig()
        params = bk.Genome.random(k, seed=0, species=S).params()
        synapses = bk.init_synapses(tf.constant([0, 1], tf.int64), sizes, k, (S, R), config)
        rng = np.random.default_rng(0)
        x = tf.constant(rng.uniform(0, 1, (S, R, B, F)).astype(np.float32))
        targets = data.to_pm1_targets(tf.constant(rng.integers(0, 10, (S, R, B))), 10)

        @tf.function(jit_compile=True)
        def step(synapses):
            return inner_step(params, synapses, x, targets, config)[0]

        tf.nest.map_structure(lambda t: t.numpy(), step(synapses))  # compile

        def timer(n):
            start = time.perf_counter()
            for _ in range(n):
                out = step(synapses)
            tf.nest.map_structure(lambda t: t.numpy(), out)
            return (time.perf_counter() - start) / n

        return timer, None
    except Exception as e:  # noqa: BLE001
        return None, f"failed ({type(e).__name__}: {e})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unroll", type=int, default=10, help="inner steps (batches) per meta-step")
    parser.add_argument("--meta-steps", type=int, default=20, help="meta-steps per timing round")
    parser.add_argument("--inner-steps", type=int, default=20, help="inner steps per timing round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args()

    task = pick_task()
    note = "" if task.dataset == "mnist" else f"  (MNIST not available here: {task.dataset} stands in)"
    print(f"task: {task.describe()}{note}")
    print(f"device: {tf.config.list_logical_devices()[0].name}, CPU cores: {os.cpu_count()}")
    stream, setup = stream_timer(task, args.unroll)
    inner = {h: inner_step_timer(h, args.k) for h in args.hidden}
    # Alternate the measurements and keep each one's best round, so that other load on the
    # machine (2 shared cores here) does not favour whichever ran in a quiet moment.
    best_stream, best_inner = float("inf"), {h: float("inf") for h in args.hidden}
    for _ in range(args.rounds):
        best_stream = min(best_stream, stream(args.meta_steps))
        for h, (timer, _) in inner.items():
            if timer is not None:
                best_inner[h] = min(best_inner[h], timer(args.inner_steps))
    rate = 1.0 / best_stream
    print(f"stream [{S}, {R}, {B}, {F}] x {args.unroll} per meta-step: {rate:,.0f} batches/s "
          f"({rate / args.unroll:,.1f} meta-steps/s; first element {setup:.1f} s after the stream was built)")
    for h, (timer, why) in inner.items():
        label = f"inner step {F}-{h}-10, k={args.k}, batch [{S}, {R}, {B}, {F}]"
        if timer is None:
            print(f"{label}: {why}")
            continue
        consumed = 1.0 / best_inner[h]
        ratio = rate / consumed
        verdict = "OK" if ratio >= 10 else "TOO SLOW"
        print(f"{label}: {consumed:,.0f} batches/s consumed; stream/inner = {ratio:.1f}x  [{verdict}: need >= 10x]")

if __name__ == "__main__":
    main()
