"""Who writes the run directory in a cluster, and what a lost worker is told (no processes)."""

import os
import types

import tensorflow as tf

from blur_keras.meta.run import chief
def _strategy(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_worker_zero_or_the_chief_task():
    assert chief.is_chief(tf.distribute.get_strategy())  # one process: it writes
    workers = {"worker": ["localhost:1", "localhost:2"]}
    assert chief.is_chief(_strategy(workers, "worker", 0))
    assert not chief.is_chief(_strategy(workers, "worker", 1))
    with_chief = {"chief": ["localhost:0"], **workers}
    assert chief.is_chief(_strategy(with_chief, "chief", 0))
    assert not chief.is_chief(_strategy(with_chief, "worker", 0))
    assert not chief.is_chief(_strategy(with_chief, "evaluator", 0))


def test_non_chief_writes_a_temporary_directory_outside_the_run(tmp_path):
    run = str(tmp_path / "run")
    assert chief.write_dir(run, _strategy({"worker": ["a:1", "b:2"]}, "worker", 0)) == run
    temp = chief.write_dir(run, _strategy({"worker": ["a:1", "b:2"]}, "worker", 1))
    assert os.path.isdir(temp) and not temp.startswith(run) and "worker1" in temp
    chief.cleanup(run, run)  # the chief's directory stays
    chief.cleanup(temp, run)
    assert not os.path.exists(temp)


def test_lost_worker_message_names_the_checkpoint_to_resume_from(tmp_path):
    err = tf.errors.UnavailableError(None, None, "Collective ops is aborted by: peer down\nmore")
    message = chief.lost_worker_message(err, str(tmp_path))
    assert "worker of the cluster was lost" in message and "UnavailableError" in message
    assert "peer down" in message and "more" not in message
    assert "Restart every worker" in message and "from the start" in message
    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    path = ckpt.save(os.path.join(str(tmp_path), "checkpoints", "ckpt"))
    assert path in chief.lost_worker_message(err, str(tmp_path))
    assert isinstance(err, chief.LOST_WORKER_ERRORS)
