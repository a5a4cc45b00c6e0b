"""Evaluate a learned rule against tuned SGD, SGD+momentum and Adam (blur_keras.evaluation.suite).

    python train/evaluate.py --rule=/tmp/blur_meta/default/genome.json --out_dir=/tmp/eval
    python train/evaluate.py --rule=backprop:0.1 --gin_param='evaluate_suite.horizons=(10, 50)'
    python train/evaluate.py --rule=/tmp/run/saved_model --gin_file=gin/eval/transfer.gin

``--rule``: a genome ``.json`` file (it carries its config; for an old values-only file bind
``rule_config.config = @BlurConfig()`` and ``BlurConfig.<option> = ...``), an exported
SavedModel directory, or ``backprop[:lr[:hidden σ]]``. Tasks, architectures, horizons and seeds are gin bindings of
``evaluate_suite`` (default: gin/eval/transfer.gin). Writes points.csv, summary.json/csv,
table.md and curves_*.png to ``--out_dir`` and prints the table.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # before TensorFlow creates its CPU device

from absl import app, flags, logging  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIN = os.path.join(REPO, "gin", "eval", "transfer.gin")

FLAGS = flags.FLAGS
flags.DEFINE_string("rule", None, "Genome .json, SavedModel directory, backprop[:lr[:σ]] or a "
                    "pretrained genome's name (blur_keras.pretrained_genomes()).")
flags.DEFINE_string("out_dir", None, "Output directory (default: /tmp/blur_eval/<rule name>).")
flags.DEFINE_multi_string("gin_file", None, "Gin file(s); default: gin/eval/transfer.gin.")
flags.DEFINE_multi_string("gin_param", None, "Gin bindings, e.g. 'evaluate_suite.seeds=4'.")
flags.mark_flag_as_required("rule")


def _rule_config(config=None, init_scale=None):
    return config, init_scale


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import gin

    import blur_keras.data  # noqa: F401  (registers Task, preset_task, ...)
    from blur_keras.evaluation import suite as evaluation
    from blur_keras.meta.run.cli import one_line, one_line_errors
    from blur_keras.meta.run.gin_files import search_beside
    from blur_keras.core.config import BlurConfig

    try:
        gin.external_configurable(BlurConfig, name="BlurConfig", module="blur_keras")
    except ValueError:
        pass
    rule_config = gin.configurable("rule_config", module="blur_keras")(_rule_config)
    try:
        search_beside(FLAGS.gin_file or [DEFAULT_GIN])
        gin.parse_config_files_and_bindings(FLAGS.gin_file or [DEFAULT_GIN], FLAGS.gin_param or [])
        config, init_scale = rule_config()
        rule = evaluation.load_rule(FLAGS.rule, config=config, init_scale=init_scale)
    except Exception as err:  # one clear line; the traceback with --verbosity=1
        if logging.level_debug():
            logging.exception("Configuration error")
        raise SystemExit(f"Bad configuration: {type(err).__name__}: {one_line(err)} "
                         "(run with --verbosity=1 for the traceback)")
    name = "".join(c if c.isalnum() else "_" for c in rule.name)
    out_dir = FLAGS.out_dir or os.path.join("/tmp/blur_eval", name)
    logging.info("Evaluating %s (config %s) -> %s", rule.name, rule.config, out_dir)
    with one_line_errors("Error"):
        summary = evaluation.evaluate_suite(rule, out_dir,
                                            log=lambda line: logging.info("%s", line))
    print(evaluation.format_table(summary), flush=True)
    print(f"Files: {out_dir}/points.csv, summary.json, summary.csv, table.md, curves_*.png",
          flush=True)


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)
