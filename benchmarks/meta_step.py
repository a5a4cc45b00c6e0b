"""Meta-step speed and memory.

    python benchmarks/meta_step.py                 # the reference setting, CPU or GPU
    python benchmarks/meta_step.py --quick         # a smaller network, for a smoke run
    python benchmarks/meta_step.py --species 1 --replicas 1 --no-memory   # speed only
    python benchmarks/meta_step.py --no-memory --no-autodiff --recompute-T 0 --species-ratio
    python benchmarks/meta_step.py --species 1 --no-memory --no-autodiff --recompute-T 0 \
        --keras-ratio

Setting: MNIST 10x10 -> 256 hidden -> 10, k = 4, batch 128 (query 128), 8 species,
1 replica. Reports

* meta-steps/s at T = 10 (a full meta-step: fresh synapses, T inner steps, query, gradient
  through the unroll, per-species Adam), compiled with XLA;
* peak memory of one meta-step at T = 10, 50, 200, without and with recomputation (gradient
  checkpointing, segment length ceil(sqrt(T))): the TensorFlow allocator's peak during a
  meta-step after the compiling one (on a CPU the pooled allocator, ``TF_CPU_ALLOCATOR_USE_BFC``,
  keeps statistics; XLA's buffers come from it), each configuration in a fresh process. The
  process's peak resident set (compilation included) is reported beside it.

* the cost of recomputation: one process, meta-steps at T = 50 without and with recomputation
  (segment ceil(sqrt(T))), timed in turns, median over rounds of the per-round time ratio;
* the speed-up of the hand-derived reverse of a whole step (``blur_keras.core.step_reverse``)
  over TensorFlow's autodiff of the same formulas (``GradientTrainer(step_gradient="autodiff")``):
  one process, T = 10, in turns, median of the per-round time ratio, and both first calls;
* with ``--species-ratio``, the time per genome of ``--species`` species against one species:
  one process, T = 10, in turns, median of the per-round ratio;
* with ``--keras-ratio``, the meta-step's time over the faster Keras SGD train step of
  784-256-10, batch 128 (``inner_step.py``'s baseline): one process, in turns, median of the
  per-round ratio. The machine's speed (which moves by 1.2-1.6x on a shared host) moves both
  alike, so this number compares across machines. The authors' TF meta-step measured 151.6 ms
  beside a 0.952 ms Keras step on one machine: 159x; three times faster is <= 53x.

Every configuration runs with pooled CPU memory, as ``train/meta.py`` does
(``blur_keras.meta.run.runtime``); ``TF_CPU_ALLOCATOR_USE_BFC=false python benchmarks/meta_step.py ...``
measures TensorFlow's default allocator instead (no memory statistics then).

The data are random tensors of MNIST 10x10's shapes (speed and memory depend on shapes only).
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _available_mb():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def make_batch(tf, T, S, R, B, F, C, seed=0):
    g = tf.random.Generator.from_seed(seed)
    return {"train_x": g.uniform([T, S, R, B, F]), "train_y": g.uniform([T, S, R, B], 0, C, tf.int32),
            "query_x": g.uniform([S, R, B, F]), "query_y": g.uniform([S, R, B], 0, C, tf.int32)}


def add_setting_arguments(parser, species):
    """The network and population flags ``build`` reads (shared with profile_meta_step.py)."""
    parser.add_argument("--species", type=int, default=species)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--classes", type=int, default=10)


def build(args, T, recompute, step_gradient="hand"):
    from blur_keras.meta.run.runtime import pool_cpu_memory

    pool_cpu_memory()  # as train/meta.py does, before TensorFlow's first op
    import tensorflow as tf

    from blur_keras import BlurConfig, Genome
    from blur_keras.meta.outer.gradient import GradientTrainer

    sizes = (args.features, args.hidden, args.classes)
    genome = Genome.random(args.k, seed=0, species=args.species, transform_std=0.5,
                           synapse_update=-0.01)
    trainer = GradientTrainer(genome, BlurConfig(activation_norm=True, synapse_norm=True), sizes,
                              recompute=recompute, jit_compile=True, step_gradient=step_gradient)
    batch = make_batch(tf, T, args.species, args.replicas, args.batch, args.features, args.classes)
    return tf, trainer, batch


def child(args):
    """One (T, recompute) configuration: prints a JSON line."""
    from blur_keras.meta.run.runtime import cpu_memory_pooled

    tf, trainer, batch = build(args, args.T, args.recompute)
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    t0 = time.time()
    trainer.train_step(batch)
    first = time.time() - t0
    times, peak = [], None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(max(1, args.steps)):
        try:
            tf.config.experimental.reset_memory_stats(device)
        except ValueError:
            pass
        t0 = time.time()
        trainer.train_step(batch)
        times.append(time.time() - t0)
        try:
            info = tf.config.experimental.get_memory_info(device)
            peak = max(peak or 0, info["peak"])
        except ValueError:  # no allocator statistics on this device
            pass
    after, steps = resource.getrusage(resource.RUSAGE_SELF), max(1, args.steps)
    out = {"T": args.T, "recompute": args.recompute, "first_call_s": round(first, 2),
           "page_faults_per_step": round((after.ru_minflt - usage.ru_minflt) / steps),
           "kernel_ms_per_step": round((after.ru_stime - usage.ru_stime) / steps * 1e3, 1),
           "pooled": cpu_memory_pooled(),
           "step_s": round(min(times), 4), "steps_per_s": round(1 / min(times), 3),
           "peak_mb": None if peak is None else round(peak / 2**20, 1),
           "memory": f"{device} allocator peak during a meta-step",
           "process_peak_rss_mb": round(_peak_rss_mb(), 1)}
    print("RESULT " + json.dumps(out), flush=True)


def _in_turns(runs, steps):
    """Time ``trainer.train_step(batch)`` of every ``name: (trainer, batch)`` in turns, ``steps``
    rounds; returns ``name -> [seconds]``."""
    times = {name: [] for name in runs}
    for _ in range(max(1, steps)):
        for name, (trainer, batch) in runs.items():
            t0 = time.time()
            trainer.train_step(batch)
            times[name].append(time.time() - t0)
    return times


def _median_ratio(slow, fast):
    import numpy as np

    return round(float(np.median(np.array(slow) / np.array(fast))), 3)


def _median(times):
    import numpy as np

    return round(float(np.median(times)), 4)


def recompute_child(args):
    """Time ratio recompute / plain at ``args.T`` in one process (turns, median over rounds)."""
    seg = int(math.ceil(math.sqrt(args.T)))
    runs = {}
    for recompute in (0, seg):
        tf, trainer, batch = build(args, args.T, recompute)
        trainer.train_step(batch)  # compile
        runs[recompute] = (trainer, batch)
    times = _in_turns(runs, args.steps)
    print("RESULT " + json.dumps({"T": args.T, "recompute": seg,
                                  "ratio": _median_ratio(times[seg], times[0]),
                                  "plain_s": _median(times[0]),
                                  "recompute_s": _median(times[seg])}), flush=True)


def autodiff_child(args):
    """Time ratio autodiff / hand-derived gradients at ``args.T`` in one process."""
    runs, first = {}, {}
    for name in ("hand", "autodiff"):
        tf, trainer, batch = build(args, args.T, 0, step_gradient=name)
        t0 = time.time()
        trainer.train_step(batch)  # traced and compiled on the first call
        first[name] = time.time() - t0
        runs[name] = (trainer, batch)
    times = _in_turns(runs, args.steps)
    print("RESULT " + json.dumps({"T": args.T,
                                  "ratio": _median_ratio(times["autodiff"], times["hand"]),
                                  "hand_s": _median(times["hand"]),
                                  "autodiff_s": _median(times["autodiff"]),
                                  "hand_first_s": round(first["hand"], 2),
                                  "autodiff_first_s": round(first["autodiff"], 2)}), flush=True)


def species_child(args):
    """Time per genome of ``args.species`` species against one species at T = 10, in one
    process, in turns (median over rounds of the per-round ratio)."""
    import numpy as np

    runs, many = {}, args.species
    for species in (1, many):
        tf, trainer, batch = build(argparse.Namespace(**{**vars(args), "species": species}), 10, 0)
        trainer.train_step(batch)  # compile
        runs[species] = (trainer, batch)
    times = _in_turns(runs, args.steps)
    per_genome = np.array(times[many]) / many
    ratio = per_genome / np.array(times[1])
    print("RESULT " + json.dumps({"species": many, "ratio": round(float(np.median(ratio)), 3),
                                  "q25": round(float(np.percentile(ratio, 25)), 3),
                                  "q75": round(float(np.percentile(ratio, 75)), 3),
                                  "one_s": _median(times[1]),
                                  "per_genome_s": _median(per_genome)}), flush=True)


AUTHORS_MS, AUTHORS_KERAS_MS = 151.6, 0.952  # the authors' TF meta-step and a Keras step beside it


def keras_child(args):
    """The meta-step's time over the faster Keras SGD train step (784-256-10, batch 128), in
    one process: per round two meta-steps and 20 steps of each Keras variant, in turns."""
    import numpy as np

    _, trainer, batch = build(args, args.T, 0)
    import inner_step  # after build(): TensorFlow's allocator is chosen

    x, y = inner_step.make_inputs()
    keras_steps = [inner_step.keras_sgd_step(x, y, jit) for jit in (False, True)]
    trainer.train_step(batch)  # compile
    for step in keras_steps:
        step().numpy()
    meta, keras = [], []
    for _ in range(max(1, args.steps)):
        t0 = time.perf_counter()
        for _ in range(2):
            trainer.train_step(batch)
        meta.append((time.perf_counter() - t0) / 2)
        best = None
        for step in keras_steps:
            t0 = time.perf_counter()
            for _ in range(20):
                out = step()
            out.numpy()
            t = (time.perf_counter() - t0) / 20
            best = t if best is None else min(best, t)
        keras.append(best)
    ratio = np.array(meta) / np.array(keras)
    print("RESULT " + json.dumps({"ratio": round(float(np.median(ratio)), 1),
                                  "q25": round(float(np.percentile(ratio, 25)), 1),
                                  "q75": round(float(np.percentile(ratio, 75)), 1),
                                  "meta_ms": round(1e3 * float(np.median(meta)), 2),
                                  "keras_ms": round(1e3 * float(np.median(keras)), 3)}),
          flush=True)


def run_child(args, T, recompute, steps, mode="--child"):
    cmd = [sys.executable, os.path.abspath(__file__), mode, f"--T={T}",
           f"--recompute={recompute}", f"--steps={steps}", f"--species={args.species}",
           f"--replicas={args.replicas}", f"--batch={args.batch}", f"--hidden={args.hidden}",
           f"--k={args.k}", f"--features={args.features}", f"--classes={args.classes}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)  # build() pools CPU memory
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"T": T, "recompute": recompute, "error": (proc.stderr or proc.stdout)[-500:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recompute-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--autodiff-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--species-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--species-ratio", action="store_true",
                        help="also time --species species against one, per genome, in turns")
    parser.add_argument("--keras-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keras-ratio", action="store_true",
                        help="also time the meta-step against a Keras SGD step, in turns")
    parser.add_argument("--no-autodiff", action="store_true",
                        help="skip the hand-derived vs autodiff comparison")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--recompute-T", type=int, default=50,
                        help="T of the recomputation-cost measurement (0: skip)")
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--recompute", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5, help="timed meta-steps at T=10")
    add_setting_arguments(parser, species=8)
    parser.add_argument("--unrolls", default="10,50,200", help="T values for the memory table")
    parser.add_argument("--quick", action="store_true", help="hidden 32, k 2, 2 species")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.k, args.species = 32, 2, 2
    if args.child:
        return child(args)
    if args.recompute_child:
        return recompute_child(args)
    if args.autodiff_child:
        return autodiff_child(args)
    if args.species_child:
        return species_child(args)
    if args.keras_child:
        return keras_child(args)
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"meta-step benchmark on {device}: {args.features}->{args.hidden}->{args.classes}, "
          f"k={args.k}, batch {args.batch}, {args.species} species x {args.replicas} replica(s)",
          flush=True)
    speed = run_child(args, 10, 0, args.steps)
    print(f"T=10: {speed.get('steps_per_s')} meta-steps/s ({speed.get('step_s')} s/step; "
          f"first call incl. compilation {speed.get('first_call_s')} s; "
          f"{speed.get('page_faults_per_step')} page faults and "
          f"{speed.get('kernel_ms_per_step')} ms kernel time per meta-step; CPU memory "
          f"{'pooled' if speed.get('pooled') else 'not pooled'})", flush=True)
    if args.recompute_T:
        rc = run_child(args, args.recompute_T, 0, args.steps, mode="--recompute-child")
        print(f"T={args.recompute_T}: recomputation (segment {rc.get('recompute')}) costs "
              f"{rc.get('ratio')}x the plain meta-step ({rc.get('recompute_s')} s vs "
              f"{rc.get('plain_s')} s, median of {args.steps} turns)", flush=True)
    if not args.no_autodiff:
        ad = run_child(args, 10, 0, args.steps, mode="--autodiff-child")
        print(f"T=10: hand-derived gradients {ad.get('ratio')}x faster than autodiff "
              f"({ad.get('hand_s')} s vs {ad.get('autodiff_s')} s per meta-step, median of "
              f"{args.steps} turns; first call {ad.get('hand_first_s')} s vs "
              f"{ad.get('autodiff_first_s')} s)", flush=True)
    if args.species_ratio and args.species > 1:
        sp = run_child(args, 10, 0, args.steps, mode="--species-child")
        print(f"T=10: {sp.get('species')} species take {sp.get('ratio')}x the time per genome of "
              f"one species (quartiles {sp.get('q25')}-{sp.get('q75')}; {sp.get('per_genome_s')} "
              f"s vs {sp.get('one_s')} s, median of {args.steps} turns)", flush=True)
    if args.keras_ratio:
        kr = run_child(args, 10, 0, args.steps, mode="--keras-child")
        print(f"T=10: a meta-step takes {kr.get('ratio')}x the faster Keras SGD train step of "
              f"784-256-10, batch 128 (quartiles {kr.get('q25')}-{kr.get('q75')}; "
              f"{kr.get('meta_ms')} ms vs {kr.get('keras_ms')} ms, median of {args.steps} "
              f"rounds). The authors' TF meta-step was {AUTHORS_MS} ms = "
              f"{AUTHORS_MS / AUTHORS_KERAS_MS:.0f}x its {AUTHORS_KERAS_MS} ms Keras step; 3x "
              f"faster is <= {AUTHORS_MS / AUTHORS_KERAS_MS / 3:.0f}x", flush=True)
    if args.no_memory:
        return
    rows = []
    per_step = {}  # recompute on/off -> measured MB per inner step (largest T so far)
    on_cpu = not tf.config.list_physical_devices("GPU")
    for T in [int(t) for t in args.unrolls.split(",")]:
        for recompute in (0, int(math.ceil(math.sqrt(T)))):
            predicted = per_step.get(recompute > 0, 0) * T
            avail = _available_mb() if on_cpu else None
            if avail is not None and predicted > 0.7 * avail:
                res = {"T": T, "recompute": recompute, "peak_mb": None,
                       "memory": f"skipped: about {predicted:.0f} MB predicted (linear in T "
                                 f"from the previous row) > 70% of the {avail:.0f} MB available"}
                rows.append(res)
                print(f"T={T:4d} recompute={recompute:3d}: {res['memory']}", flush=True)
                continue
            res = speed if (T == 10 and recompute == 0) else run_child(args, T, recompute, 1)
            if res.get("peak_mb"):
                per_step[recompute > 0] = res["peak_mb"] / T
            rows.append(res)
            print(f"T={T:4d} recompute={recompute:3d}: peak {res.get('peak_mb')} MB "
                  f"({res.get('memory', res.get('error'))}; process peak RSS "
                  f"{res.get('process_peak_rss_mb')} MB), {res.get('step_s')} s/step",
                  flush=True)
    print(json.dumps({"device": device, "speed_T10": speed, "memory": rows}))


if __name__ == "__main__":
    main()
