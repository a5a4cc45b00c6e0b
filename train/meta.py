"""Meta-train a BLUR genome.

    python train/meta.py                                  # gin/default.gin: runs here, no internet
    python train/meta.py --gin_file=gin/tpu_fashion.gin --model_dir=/tmp/fashion
    python train/meta.py --gin_file=gin/toy2d.gin --gin_param='Schedule.num_steps=200'

Restarting with the same ``--model_dir`` resumes from its last readable checkpoint; a second
process on a ``--model_dir`` in use is refused (``run.lock``, blur_keras.meta.run.lock).
Several hosts (docs/scale.md): the same command on every worker, with ``TF_CONFIG`` and
``--strategy=multi_worker``; only the chief writes ``--model_dir``.
Every gin binding and flag is checked before any training starts.
"""

import importlib.resources
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # before TensorFlow creates its CPU device

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", None, "Gin config file(s); default: the packaged "
                          "blur_keras/meta/default.gin (gin/default.gin links to it).")
flags.DEFINE_multi_string("gin_param", None, "Gin bindings, e.g. 'Schedule.num_steps=100'.")
flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, logs, results); "
                    "default: /tmp/blur_meta/<gin file name>.")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy (multi_worker: MultiWorkerMirroredStrategy, TF_CONFIG).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (implies a TPU for --strategy=auto).")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many logical devices "
                     "(to try MirroredStrategy without GPUs).")
flags.DEFINE_integer("stop_after", None, "Stop (checkpointed) after this many meta-steps "
                     "(binds Schedule.stop_after).")


def parse_gin(gin_files, gin_params, stop_after=None):
    """Parse gin files and bindings (and ``--stop_after``: ``Schedule.stop_after``); raises on
    any unknown name or bad value."""
    import gin

    import blur_keras.data  # noqa: F401  (registers Task, Mixture, preset_task, ...)
    import blur_keras.meta.run.experiment  # noqa: F401  (registers meta_train, its parts, BlurConfig)
    from blur_keras.meta.run.gin_files import search_beside

    gin.clear_config()
    for path in gin_files or ():
        if not os.path.exists(path):
            raise FileNotFoundError(f"--gin_file {path} does not exist.")
    with importlib.resources.as_file(
            importlib.resources.files("blur_keras.meta") / "default.gin") as default:
        # absolute: gin tries a relative path under each search folder first, logging an ERROR
        gin_files = [os.path.abspath(p) for p in gin_files or [str(default)]]
        search_beside(gin_files)  # the packaged default includes the recipes beside it
        stop = [] if stop_after is None else [f"Schedule.stop_after = {int(stop_after)}"]
        gin.parse_config_files_and_bindings(gin_files, list(gin_params or []) + stop)


def check_stage_overrides(gin_params):
    """In a staged configuration (``meta_train.stages``), an unscoped ``--gin_param`` that every
    stage overrides with its own binding would be ignored: refuse it, naming the scoped ones."""
    import gin

    stages = _stages()
    for binding in gin_params or ():
        key = binding.split("=", 1)[0].strip()
        if "=" not in binding or "/" in key or "." not in key:
            continue
        scoped = []
        for stage in stages:
            try:
                gin.query_parameter(f"{stage}{key}")
                scoped.append(f"{stage}{key}")
            except ValueError:
                pass
        if stages and len(scoped) == len(stages):
            raise ValueError(f"--gin_param {key} would be ignored: this configuration runs in "
                             f"stages {[s[:-1] for s in stages]} and each sets its own "
                             f"({', '.join(scoped)}). Bind those instead, e.g. "
                             f"--gin_param='{scoped[0]} = ...'.")


def check_config_bindings(gin_params):
    """A ``--gin_param`` on ``BlurConfig`` or ``backprop_config`` that the configuration does
    not build its ``BlurConfig`` with (``Objective.blur_config``) would be ignored: refuse it,
    naming the one to bind."""
    import gin

    built = set()
    for scope in [""] + _stages():
        try:
            built.add(gin.query_parameter(f"{scope}Objective.blur_config").selector.split(".")[-1])
        except ValueError:  # unbound: a stage takes the unscoped binding; none: BlurConfig()
            if not scope:
                built.add("BlurConfig")
    for binding in gin_params or ():
        key = binding.split("=", 1)[0].strip()
        name = key.split("/")[-1].rsplit(".", 1)[0].split(".")[-1]
        other = {"BlurConfig": "backprop_config", "backprop_config": "BlurConfig"}.get(name)
        if other and name not in built:
            raise ValueError(f"--gin_param {key} would be ignored: this configuration's "
                             f"Objective.blur_config is @{other}(); bind "
                             f"{other}.{key.rsplit('.', 1)[-1]} instead.")


def _stages():
    """``['fast/', ...]``: the gin scopes of a staged configuration (``meta_train.stages``)."""
    import gin

    try:
        return [f"{s}/" for s in gin.query_parameter("meta_train.stages")]
    except ValueError:
        return []


def verdict(comp):
    """One line from ``results.json["comparison"]``: the learned genome, its start and tuned
    SGD at the run's horizon, and the step counts at which it beats each tuned baseline."""
    line = (f"At {comp['unroll']} steps the {comp.get('rule', 'learned genome')} scores "
            f"{comp['learned']:.3f}; its "
            f"start ({comp['start_name']}) {comp['start']:.3f}, tuned SGD "
            f"{comp.get('sgd_best', float('nan')):.3f}.")
    names = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam"}
    wins = [f"tuned {names.get(m, m)} at {', '.join(map(str, h)) or 'no'} steps"
            for m, h in comp.get("beats", {}).items()]
    if wins:
        line += f" Of {', '.join(map(str, comp['horizons']))} steps, it beats " + \
            "; ".join(wins) + "."
    return line


def _log_cpu_memory():
    """Say whether TensorFlow pools CPU memory (``blur_keras.meta.run.runtime``); warn when it does not."""
    from blur_keras.meta.run.runtime import POOLED_CPU_ALLOCATOR, cpu_memory_pooled

    if cpu_memory_pooled():
        logging.info("CPU memory: pooled (%s=true)", POOLED_CPU_ALLOCATOR)
    else:
        logging.warning("CPU memory: TensorFlow's default allocator (%s=%s); meta-steps on CPU "
                        "run up to 1.3x slower (docs/benchmarks.md).", POOLED_CPU_ALLOCATOR,
                        os.environ.get(POOLED_CPU_ALLOCATOR))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    if FLAGS.strategy == "multi_worker":  # must exist before TensorFlow initialises its devices
        from blur_keras.meta.outer.strategy import choose_strategy

        early_strategy = choose_strategy("multi_worker")
    if FLAGS.cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices)
    import gin

    from blur_keras.meta.run.cli import one_line_errors
    from blur_keras.meta.run.experiment import meta_train
    from blur_keras.meta.outer.strategy import choose_strategy

    with one_line_errors("Bad gin configuration", FLAGS.verbosity >= 1):
        parse_gin(FLAGS.gin_file, FLAGS.gin_param, FLAGS.stop_after)
        check_stage_overrides(FLAGS.gin_param)
        check_config_bindings(FLAGS.gin_param)
    name = os.path.splitext(os.path.basename((FLAGS.gin_file or ["default"])[-1]))[0]
    model_dir = FLAGS.model_dir or os.path.join("/tmp/blur_meta", name)
    from blur_keras.meta.run import chief
    with one_line_errors("Error", FLAGS.verbosity >= 1):
        strategy = early_strategy if FLAGS.strategy == "multi_worker" else choose_strategy(
            FLAGS.strategy, FLAGS.tpu)
        logging.info("model_dir: %s", model_dir)
        _log_cpu_memory()
        try:
            results = meta_train(model_dir, strategy=strategy)
        except chief.LOST_WORKER_ERRORS as err:
            if not chief.is_multi_worker(strategy):
                raise
            raise SystemExit(chief.lost_worker_message(err, model_dir))
    if not chief.is_chief(strategy):
        logging.info("Worker %s: done (the chief wrote %s); removing %s.", chief.task_of(strategy),
                     model_dir, results["model_dir"])
        chief.cleanup(results["model_dir"], model_dir)
        gin.clear_config()
        return
    comp = results.get("comparison")
    if comp is not None:
        print(verdict(comp) + f" Results: {os.path.join(model_dir, 'results.json')}", flush=True)
    gin.clear_config()


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)
