"""Several workers, one run directory: only the chief writes it.

Under ``MultiWorkerMirroredStrategy`` (``TF_CONFIG``) or a multi-host
``TPUStrategy`` every worker runs the same program.  The chief (task
``chief``, or ``worker`` 0 when the cluster has no ``chief`` job) writes the
run directory (checkpoints, ``metrics.jsonl``, summaries, the exports); every
other worker writes the same files to a temporary directory of its own (as
TensorFlow recommends for checkpoints: all workers must take part in saving),
removed at the end.  Every worker restores from the run directory's latest
checkpoint, so a restarted cluster resumes where the chief last saved.
"""

import os
import shutil
import tempfile

import tensorflow as tf

__all__ = ["task_of", "is_chief", "write_dir", "cleanup", "is_multi_worker",
           "LOST_WORKER_ERRORS", "lost_worker_message"]

# what a collective raises when a peer worker died or stopped answering
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                      tf.errors.CancelledError, tf.errors.AbortedError)


def task_of(strategy):
    """``(task_type, task_id)`` of this process in the strategy's cluster (``(None, None)`` alone)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return getattr(resolver, "task_type", None), getattr(resolver, "task_id", None)


def is_chief(strategy):
    """Whether this process writes the run directory."""
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    if task_type != "worker":
        return False  # evaluators, parameter servers
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return "chief" not in spec and int(task_id or 0) == 0


def is_multi_worker(strategy):
    """More than one worker process takes part in every step."""
    return bool(getattr(getattr(strategy, "extended", None), "_in_multi_worker_mode",
                        lambda: False)())


def write_dir(model_dir, strategy):
    """``model_dir`` on the chief; a fresh temporary directory on any other worker."""
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task_of(strategy)
    return tempfile.mkdtemp(prefix=f"blur_{task_type}{task_id}_")


def cleanup(directory, model_dir):
    """Remove a non-chief worker's temporary directory (nothing on the chief)."""
    if os.path.abspath(directory) != os.path.abspath(model_dir):
        shutil.rmtree(directory, ignore_errors=True)


def lost_worker_message(err, model_dir):
    """What to tell the user when a collective failed because a worker went away."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return (f"A worker of the cluster was lost or stopped answering ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Restart every worker with the same "
            f"command, TF_CONFIG and --model_dir: the run resumes from the last checkpoint "
            f"({latest or 'none yet: from the start'}).")
