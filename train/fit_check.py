"""Leave a learned rule running: ``model.fit`` for many epochs, validation accuracy per epoch.

    python train/fit_check.py --rule=docs/genomes/default.json --out_dir=/tmp/fit_default
    python train/fit_check.py --rule=genome.json --gin_param='fit_check.epochs=5'
    python train/fit_check.py --rule=sgd_residual_robust \
        --gin_param="fit_check.baselines={'sgd': (0.1, 0.3, 1.0), 'adam': (1e-3, 3e-3, 1e-2)}"

``--rule``: a genome ``.json`` file (it carries its config). Tasks, architectures, seeds,
epochs and examples are gin bindings of ``fit_check`` (``blur_keras.evaluation.stability``; default:
gin/eval/fit.gin). A curve that goes non-finite is recorded (epoch, step) and counted as a
failure; the check goes on. ``fit_check.baselines`` runs tuned SGD / SGD+momentum / Adam
through the same check beside the rule (the learning rate with the best mean final accuracy is
reported). Writes fit.json, table.md and fit_curves.png to ``--out_dir`` and prints the table.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # before TensorFlow creates its CPU device

from absl import app, flags, logging  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIN = os.path.join(REPO, "gin", "eval", "fit.gin")

FLAGS = flags.FLAGS
flags.DEFINE_string("rule", None, "Genome .json file or a pretrained genome's name.")
flags.DEFINE_string("out_dir", None, "Output directory (default: /tmp/blur_fit/<rule name>).")
flags.DEFINE_multi_string("gin_file", None, "Gin file(s); default: gin/eval/fit.gin.")
flags.DEFINE_multi_string("gin_param", None, "Gin bindings, e.g. 'fit_check.epochs=5'.")
flags.mark_flag_as_required("rule")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import gin

    import blur_keras.data  # noqa: F401  (registers Task, preset_task, ...)
    from blur_keras.evaluation import stability
    from blur_keras.meta.run.cli import one_line, one_line_errors
    from blur_keras.meta.run.gin_files import search_beside

    try:
        search_beside(FLAGS.gin_file or [DEFAULT_GIN])
        gin.parse_config_files_and_bindings(FLAGS.gin_file or [DEFAULT_GIN], FLAGS.gin_param or [])
        stability.load_genome(FLAGS.rule)
    except Exception as err:  # one clear line; the traceback with --verbosity=1
        if logging.level_debug():
            logging.exception("Configuration error")
        raise SystemExit(f"Bad configuration: {type(err).__name__}: {one_line(err)} "
                         "(run with --verbosity=1 for the traceback)")
    name = "".join(c if c.isalnum() else "_" for c in os.path.basename(FLAGS.rule))
    out_dir = FLAGS.out_dir or os.path.join("/tmp/blur_fit", name)
    logging.info("Fit check of %s -> %s", FLAGS.rule, out_dir)
    start = time.time()
    with one_line_errors("Error"):
        report = stability.fit_check(FLAGS.rule, out_dir,
                                     log=lambda line: logging.info("%s", line))
    print(stability.format_table(report, report["tolerance"]), flush=True)
    print(f"Files: {out_dir}/fit.json, table.md, fit_curves.png ({time.time() - start:.0f}s)",
          flush=True)


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)
