"""Restart cost of a resumed meta-training run: the data stream at meta-step 10 vs 10,000.

A resumed ``meta_train`` rebuilds its task stream at the checkpoint's meta-step (experiment.py,
``stream(..., skip=step)``) and takes the first element. With ``make_task_stream(start_step=s)``
that costs the same at any ``s``; the old way (``ds.skip(s)``) replays every earlier element. The
shapes are those of ``gin/default.gin`` (mnist_5k 10x10, 8 species, 2 replicas, batch 32, T=5).

    python benchmarks/resume.py [--steps 10 10000 100000] [--rounds 3] [--no-skip]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from blur_keras import data  # noqa: E402

SHAPE = dict(species=8, replicas=2, batch_size=32, unroll_steps=5, seed=0)


def restart_seconds(task, step, old_way=False):
    """Seconds from building the stream at meta-step ``step`` to holding that step's batch."""
    t0 = time.perf_counter()
    if old_way:
        ds = data.make_task_stream(task, **SHAPE).skip(step)
    else:
        ds = data.make_task_stream(task, start_step=step, **SHAPE)
    next(iter(ds))["train_x"].numpy()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-skip", action="store_true", help="do not time the old ds.skip way")
    args = parser.parse_args()
    task = data.preset_task("mnist_5k_10x10")
    restart_seconds(task, 0)  # load and preprocess the pool, warm tf.data up
    for step in args.steps:
        times = sorted(restart_seconds(task, step) for _ in range(args.rounds))
        print(f"start_step={step:>7d}: restart {times[len(times) // 2] * 1e3:8.1f} ms "
              f"(median of {args.rounds}; min {times[0] * 1e3:.1f}, max {times[-1] * 1e3:.1f})",
              flush=True)
    if not args.no_skip:
        for step in [s for s in args.steps if s <= 10_000]:
            print(f"ds.skip({step:>6d}) (before): restart {restart_seconds(task, step, True) * 1e3:8.1f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
