"""Where a meta-step's time goes: XLA op events of `GradientTrainer.train_step`, by category.

    python benchmarks/profile_meta_step.py                    # the issue's setting, one species
    python benchmarks/profile_meta_step.py --top 30 --calls 5

Same setting and trainer as ``benchmarks/meta_step.py`` (100-256-10, k = 4, T = 10, batch 128,
XLA, pooled CPU memory as in ``train/meta.py``). Runs the TensorFlow profiler over ``--calls``
meta-steps after the compiling one, with ``--xla_cpu_enable_xprof_traceme`` so that every XLA
op (fusion, dot, copy, ...) is an event, and prints per meta-step:

* the number of op events and their duration percentiles (is it launch overhead or work?);
* thread time by category (dots, copies/transposes, loop accumulators, reductions, other
  fusions) and the largest single ops.

Durations are thread time on this machine's cores, not wall time; under load they stretch,
the counts do not.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import meta_step  # noqa: E402  (the same trainer and flags)

_OP = re.compile(r"^[a-z][a-z0-9_\-]*(\.\d+)?$")
_CONTAINERS = ("while", "call", "conditional", "python")  # their time is their ops' time


def category(op):
    """The category of an XLA op name (``dot.3``, ``copy_bitcast_fusion.2``, ...)."""
    if op.startswith("dot") or "dot_fusion" in op:
        return "dot"
    if "dynamic" in op:  # dynamic-slice / dynamic-update-slice (fusions)
        return "loop accumulators (dynamic slices)"
    if op.startswith("copy") or "transpose" in op:
        return "copy / transpose"
    if "reduce" in op:
        return "reduction"
    return "other fusion / elementwise"


def op_events(xspace):
    """``(op name, duration µs)`` of every XLA op event in a profile."""
    out = []
    for plane in xspace.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if _OP.match(name) and not name.startswith(_CONTAINERS):
                    out.append((name, event.duration_ps / 1e6))
    return out


def summarise(events, calls, top):
    import numpy as np

    durations = np.array([d for _, d in events])
    print(f"XLA op events per meta-step: {len(events) / calls:.0f}; thread time "
          f"{durations.sum() / calls / 1e3:.1f} ms")
    print("  duration percentiles (us): " + ", ".join(
        f"p{q} {np.percentile(durations, q):.1f}" for q in (10, 50, 90, 99)))
    small = durations[durations < 20]
    print(f"  events under 20 us: {len(small) / calls:.0f} per meta-step, "
          f"{small.sum() / calls / 1e3:.1f} ms")
    by_cat, by_op = collections.Counter(), collections.Counter()
    for name, d in events:
        by_cat[category(name)] += d / calls / 1e3
        by_op[name] += d / calls / 1e3
    print("thread time per meta-step by category (ms):")
    for name, ms in by_cat.most_common():
        print(f"  {ms:8.2f}  {name}")
    print(f"largest {top} ops (ms per meta-step):")
    for name, ms in by_op.most_common(top):
        print(f"  {ms:8.2f}  {name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5, help="profiled meta-steps")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--T", type=int, default=10)
    meta_step.add_setting_arguments(parser, species=1)
    args = parser.parse_args()
    if args.calls < 1:
        parser.error(f"--calls={args.calls}; expected at least 1")

    tf, trainer, batch = meta_step.build(args, args.T, 0)
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    trainer.train_step(batch)  # compile
    trainer.train_step(batch)
    logdir = tempfile.mkdtemp(prefix="profile_meta_step_")
    tf.profiler.experimental.start(logdir)
    for _ in range(args.calls):
        trainer.train_step(batch)
    tf.profiler.experimental.stop()
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    xspace = xplane_pb2.XSpace()
    with open(files[-1], "rb") as fh:
        xspace.ParseFromString(fh.read())
    print(f"{args.features}-{args.hidden}-{args.classes}, k={args.k}, T={args.T}, batch "
          f"{args.batch}, {args.species} species x {args.replicas} replicas; profile: {logdir}")
    summarise(op_events(xspace), args.calls, args.top)


if __name__ == "__main__":
    main()
