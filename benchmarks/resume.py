"""Restart cost of a resumed meta-training run: the data stream at meta-step 10 vs 10,000.

A resumed ``meta_train`` rebuilds its task stream at the checkpoint's meta-step (experiment.py,
``stream(..., skip=step)``) and takes the first element. With ``make_task_stream(start_step=s)``
that costs the same at any ``s``; the old way (``ds.skip(s)``) replays every earlier element. The
shapes are those of ``gin/general.gin``'s first stage (mnist_5k 10x10, 8 species, 2 replicas,
batch 32, T=5).

    python benchmarks/resume.py [--steps 10 10000 100000] [--rounds 3] [--no-skip] [--meta-train]

``--meta-train`` also times a whole resumed ``meta_train`` call (a tiny run: xor, 2-4-2, 2
species, T=2) from a checkpoint at meta-step 10 and one at 10,000 (the second made from the
first by rewriting its ``step``: no 10,000 steps are run), each running one more meta-step.
"""

import argparse
import dataclasses
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


def _checkpoint_at(model_dir, step):
    """Rewrite the run's latest checkpoint as one taken at meta-step ``step`` (same values)."""
    import tensorflow as tf

    ckpt_dir = os.path.join(model_dir, "checkpoints")
    reader = tf.train.load_checkpoint(ckpt_dir)
    keys = sorted(reader.get_variable_to_shape_map())
    values = [reader.get_tensor(k) for k in keys]
    values = [tf.constant(step, tf.int64) if k == "step/.ATTRIBUTES/VARIABLE_VALUE" else v
              for k, v in zip(keys, values)]
    prefix = os.path.join(ckpt_dir, f"ckpt-{step}")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys),
                      tensors=values)
    tf.compat.v1.train.update_checkpoint_state(ckpt_dir, prefix)


def meta_train_restart_seconds(root, step):
    """Seconds of a ``meta_train`` call resumed at ``step`` that runs one meta-step."""
    import gin

    from blur_keras.meta.run.experiment import Objective, Report, Schedule, meta_train

    model_dir = os.path.join(root, f"at_{step}")
    objective = Objective(task=data.preset_task("xor"), hidden_sizes=(4,), species=2, replicas=2,
                          batch_size=16)
    schedule = Schedule(num_steps=20_000, checkpoint_every=10, eval_every=10 ** 9,
                        log_every=10 ** 9, jit_compile=False)
    report = Report(final_eval=False, export=False)
    gin.clear_config()
    meta_train(model_dir, objective, schedule=dataclasses.replace(schedule, stop_after=10),
               report=report)  # a checkpoint at 10
    if step != 10:
        _checkpoint_at(model_dir, step)
    t0 = time.perf_counter()
    out = meta_train(model_dir, objective, schedule=dataclasses.replace(schedule, stop_after=1),
                     report=report)
    assert out["steps_done"] == step + 1, out
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-skip", action="store_true", help="do not time the old ds.skip way")
    parser.add_argument("--meta-train", action="store_true", help="also time resumed meta_train calls")
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
    if args.meta_train:
        import tempfile

        import tensorflow as tf
        from absl import logging

        logging.set_verbosity(logging.WARNING)
        tf.get_logger().setLevel("ERROR")
        with tempfile.TemporaryDirectory() as root:
            for step in (10, 10_000) * args.rounds:
                print(f"meta_train resumed at meta-step {step:>6d}, one more step: "
                      f"{meta_train_restart_seconds(root + f'/r{time.time_ns()}', step):6.2f} s",
                      flush=True)


if __name__ == "__main__":
    main()
