"""What the first meta-step's time is made of: tracing (Python) apart from the first call
(XLA compilation plus one step), then the meta-step itself (min and median of 10); then the
same for the next T of a curriculum (``--next-T``, default T + 5), which retraces and
recompiles in the same process, as ``train/meta.py`` does when its curriculum moves on.

    python benchmarks/first_call.py                      # the issue's setting, 1 species, T = 10
    XLA_FLAGS=--xla_llvm_disable_expensive_passes=true python benchmarks/first_call.py
    TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=/tmp/xla_cache python benchmarks/first_call.py

Run it twice with the persistent cache to see a compilation served from the cache.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import meta_step  # noqa: E402  (the benchmark's setting and builder)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    meta_step.add_setting_arguments(parser, species=1)
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--next-T", type=int, default=None,
                        help="the curriculum's next T (default T + 5; 0: skip)")
    args = parser.parse_args()
    tf, trainer, batch = meta_step.build(args, args.T, 0)
    _measure(trainer, batch, args.T, args.species)
    next_t = args.T + 5 if args.next_T is None else args.next_T
    if next_t:
        batch = meta_step.make_batch(tf, next_t, args.species, args.replicas, args.batch,
                                     args.features, args.classes)
        _measure(trainer, batch, next_t, args.species)


def _measure(trainer, batch, T, species):
    t0 = time.time()
    trainer._step_fn.get_concrete_function(trainer._distribute(batch))
    t1 = time.time()
    trainer.train_step(batch)
    t2 = time.time()
    times = []
    for _ in range(10):
        start = time.time()
        trainer.train_step(batch)
        times.append(time.time() - start)
    times.sort()
    print(f"T={T}, {species} species: tracing {t1 - t0:.2f} s, first call after "
          f"tracing {t2 - t1:.2f} s, meta-step {times[0] * 1e3:.1f} ms (median "
          f"{times[5] * 1e3:.1f} ms)", flush=True)


if __name__ == "__main__":
    main()
