"""Choosing the ``tf.distribute`` strategy of a meta-training run.

* ``"tpu"``: a TPU (``tpu`` names it: a name, a ``grpc://`` address, or
  ``""``/``"local"`` for the machine's own); the cluster is resolved and the
  TPU system initialised; an error when there is none.
* ``"mirrored"``: ``MirroredStrategy`` over the visible GPUs, or over the
  logical CPU devices when there is no GPU but several CPU devices.
* ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the workers that
  ``TF_CONFIG`` lists (every worker runs the same command; see docs/scale.md);
  without ``TF_CONFIG``, one worker (a warning).
* ``"default"``: the default (single-device) strategy.
* ``"auto"``: a TPU when one is configured (``tpu`` given, or ``TPU_NAME`` /
  ``COLAB_TPU_ADDR`` set) or visible, else mirrored over several GPUs, else
  the default strategy.
"""

import os

import tensorflow as tf
from absl import logging

__all__ = ["choose_strategy", "describe_strategy", "STRATEGY_NAMES", "NoTPUError"]

STRATEGY_NAMES = ("auto", "default", "mirrored", "multi_worker", "tpu")


class NoTPUError(RuntimeError):
    """A TPU was asked for and none could be found or initialised."""


def _tpu_configured(tpu):
    return tpu is not None or bool(os.environ.get("TPU_NAME")) or bool(
        os.environ.get("COLAB_TPU_ADDR"))


def _tpu_strategy(tpu):
    target = tpu if tpu not in (None, "local") else os.environ.get("TPU_NAME", "")
    if tpu == "local":
        target = "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=target)
        if target not in ("", "local"):
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        if not tf.config.list_logical_devices("TPU"):
            raise ValueError("no TPU devices after initialisation")
        return tf.distribute.TPUStrategy(resolver)
    except Exception as err:  # the resolver raises several types when there is no TPU
        raise NoTPUError(
            f"A TPU was requested (--strategy=tpu, tpu={tpu!r}) but none is available here: "
            f"{type(err).__name__}: {err}. Use --strategy=auto to run on the GPUs/CPU instead."
        ) from err


def _multi_worker_strategy():
    if not os.environ.get("TF_CONFIG"):
        logging.warning("--strategy=multi_worker without TF_CONFIG: a cluster of this one worker.")
    return tf.distribute.MultiWorkerMirroredStrategy()


def choose_strategy(name="auto", tpu=None):
    """Return a ``tf.distribute.Strategy`` (see the module docstring)."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGY_NAMES}.")
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "multi_worker":
        return _multi_worker_strategy()
    if name == "auto":
        if _tpu_configured(tpu) or tf.config.list_logical_devices("TPU"):
            try:
                return _tpu_strategy(tpu)
            except NoTPUError as err:
                logging.warning("%s Falling back to the GPUs/CPU.", err)
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    return tf.distribute.get_strategy()


def describe_strategy(strategy):
    kind = type(strategy).__name__
    if kind == "_DefaultDistributionStrategy":
        kind = "default strategy"
    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU"]
    return f"{kind} ({strategy.num_replicas_in_sync} replica(s) in sync; devices: {devices})"


def is_tpu(strategy):
    return isinstance(strategy, (tf.distribute.TPUStrategy,))
