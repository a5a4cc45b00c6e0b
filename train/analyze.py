"""Is a rule a gradient? The Jacobian of one inner step's synapse update (paper §3.5).

    python train/analyze.py --rule=docs/genomes/default.json --out_dir=/tmp/analyze
    python train/analyze.py --rule=backprop:0.1 --sizes=6,5,3

``--rule``: a genome ``.json`` (with its config), a SavedModel directory, or
``backprop[:lr[:σ]]``. A shared genome trains any sizes, so a small network
(``--sizes``) keeps J small (P × P, P = number of free synapses). Prints
``‖J − Jᵀ‖/‖J‖`` (mean and range over ``--batches`` random batches) and writes
``jacobian.png`` (J and J − Jᵀ of the first batch) and ``jacobian.json``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # before TensorFlow creates its CPU device

from absl import app, flags, logging  # noqa: E402

from blur_keras.files import write_json  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("rule", None, "Genome .json, SavedModel directory, backprop[:lr[:σ]] or a "
                    "pretrained genome's name.")
flags.DEFINE_list("sizes", ["8", "6", "4"], "Layer sizes n_0,...,n_L of the probe network.")
flags.DEFINE_integer("batch_size", 16, "Examples in the probe batch.")
flags.DEFINE_integer("batches", 5, "Random batches / synapse draws to average over.")
flags.DEFINE_integer("seed", 0, "Seed of inputs, labels and synapses.")
flags.DEFINE_string("out_dir", "/tmp/blur_analyze", "Where jacobian.png / .json go.")
flags.mark_flag_as_required("rule")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import numpy as np

    from blur_keras.evaluation.analysis import plot_jacobian, relative_asymmetry, update_jacobian
    from blur_keras.evaluation.suite import load_rule

    try:
        sizes = tuple(int(s) for s in FLAGS.sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"--sizes needs at least two positive ints, got {FLAGS.sizes}.")
        rule = load_rule(FLAGS.rule)
        rule.check_depth(len(sizes) - 1)
    except (ValueError, OSError) as err:
        raise SystemExit(f"Bad arguments: {err}")
    rng = np.random.default_rng(FLAGS.seed)
    values, first = [], None
    for b in range(FLAGS.batches):
        x = rng.normal(size=(FLAGS.batch_size, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], FLAGS.batch_size).astype(np.int32)
        j = update_jacobian(rule.values, rule.config, sizes, x, y, seed=FLAGS.seed + b,
                            init_scale=rule.init_scale, per_layer=rule.per_layer)
        first = j if first is None else first
        values.append(relative_asymmetry(j))
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    png = plot_jacobian(first, os.path.join(FLAGS.out_dir, "jacobian.png"),
                        f"{rule.name}, sizes {'-'.join(map(str, sizes))}")
    report = {"rule": rule.name, "sizes": list(sizes), "batch_size": FLAGS.batch_size,
              "free_synapses": int(first.shape[0]), "relative_asymmetry": values,
              "mean": float(np.mean(values)), "min": float(np.min(values)),
              "max": float(np.max(values))}
    write_json(os.path.join(FLAGS.out_dir, "jacobian.json"), report, indent=1)
    print(f"{rule.name}: ||J - J^T|| / ||J|| = {report['mean']:.3g} (min {report['min']:.3g}, "
          f"max {report['max']:.3g}; {FLAGS.batches} batches, P={first.shape[0]} free synapses, "
          f"sizes {sizes}). Heat map: {png}", flush=True)


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
