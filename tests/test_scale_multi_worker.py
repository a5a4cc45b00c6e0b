"""Two local worker processes (MultiWorkerMirroredStrategy over localhost ports, one CPU device
each, TF_CONFIG) train the genome one process trains (as does one process splitting the replicas
over 2 logical CPU devices); the chief alone writes the run directory; a cluster stopped at a
checkpoint and restarted resumes from it.

The workers run ``train/meta.py --strategy=multi_worker`` exactly as on a GPU cluster: the
strategy's ``run``, cross-worker all-reduce (species sharded, one block per worker), per-worker
input pipelines (``distribute_datasets_from_function``), chief-only writing.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers

SCRIPT = helpers.META_SCRIPT

TINY_GIN = helpers.tiny_gin("""
Objective.replicas = 2
GradientTrainer.shard_axis = 'species'
Objective.batch_size = 8
Schedule.num_steps = 4
Objective.curriculum = @Curriculum()
Curriculum.unroll_start = 2
GradientTrainer.learning_rate = 0.01
Objective.logit_scale = 3.0
Schedule.seed = 11
Schedule.checkpoint_every = 2
Schedule.eval_every = 4
Schedule.eval_replicas = 1
Schedule.log_every = 2
""")


def _env(**extra):
    return helpers.subprocess_env(**extra)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start(gin_file, model_dir, strategy, tf_config=None, *extra):
    env = _env(**({"TF_CONFIG": json.dumps(tf_config)} if tf_config else {}))
    return subprocess.Popen([sys.executable, SCRIPT, f"--gin_file={gin_file}",
                             f"--model_dir={model_dir}", f"--strategy={strategy}", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_all(procs, timeout):
    """Wait for every process (bounded); kill them all on a failure or a timeout."""
    deadline, outs = time.time() + timeout, []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
            outs.append(out)
            assert p.returncode == 0, out[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    return outs


def _cluster(ports):
    return [{"cluster": {"worker": [f"localhost:{p}" for p in ports]},
             "task": {"type": "worker", "index": i}} for i in range(len(ports))]


def _genome(model_dir):
    from blur_keras import Genome
    return Genome.load_json(os.path.join(model_dir, "genome_population.json")).numpy()


@pytest.mark.process
def test_two_workers_equal_one_process_and_only_the_chief_writes(tmp_path):
    gin_file = tmp_path / "tiny.gin"
    gin_file.write_text(TINY_GIN)
    single_dir, cluster_dir = str(tmp_path / "single"), str(tmp_path / "cluster")
    single = _start(gin_file, single_dir, "default")
    # one process, 2 logical CPU devices splitting the replicas: the same genome again
    mirrored_dir = str(tmp_path / "mirrored")
    mirrored = _start(gin_file, mirrored_dir, "mirrored", None, "--cpu_devices=2",
                      "--gin_param=GradientTrainer.shard_axis = 'replicas'")
    # the cluster stops (checkpointed) after 2 of 4 meta-steps, then is restarted and resumes
    configs = _cluster(_free_ports(2))
    first = _wait_all([_start(gin_file, cluster_dir, "multi_worker", c, "--stop_after=2")
                       for c in configs], timeout=400)
    assert sorted(os.listdir(os.path.join(cluster_dir, "checkpoints")))  # the chief saved
    configs = _cluster(_free_ports(2))
    second = _wait_all([_start(gin_file, cluster_dir, "multi_worker", c) for c in configs],
                       timeout=400)
    _wait_all([single, mirrored], timeout=400)
    assert "Resumed from" in second[0] and "Resumed from" in second[1], second[1][-3000:]
    assert "meta-step 2" in second[0]

    a = _genome(single_dir)
    for other in (cluster_dir, mirrored_dir):
        b = _genome(other)
        assert a.keys() == b.keys()
        print(other, "max |genome difference|",
              max(float(np.max(np.abs(b[n] - v))) for n, v in a.items()))
        for name, value in a.items():
            np.testing.assert_allclose(b[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
    with open(os.path.join(cluster_dir, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    # the chief alone wrote the run directory: one line per meta-step, not one per worker
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    with open(os.path.join(single_dir, "metrics.jsonl")) as fh:
        single_rows = [json.loads(line) for line in fh]
    for ra, rb in zip(single_rows, rows):
        np.testing.assert_allclose(ra["loss"], rb["loss"], rtol=1e-5, atol=1e-6)
    assert rows[0]["loss"] != rows[-1]["loss"]
    # the other worker wrote to a temporary directory of its own, outside the run directory,
    # and removed it at the end
    for out in (first[1], second[1]):
        line = next(l for l in out.splitlines() if "removing" in l and "the chief wrote" in l)
        temp = line.rsplit("removing ", 1)[1].strip().rstrip(".")
        assert not temp.startswith(cluster_dir) and not os.path.exists(temp), line
    assert not any("removing" in l for l in second[0].splitlines() if "the chief wrote" in l)


@pytest.mark.process
def test_a_lost_worker_is_reported_with_the_checkpoint_to_resume_from(tmp_path):
    gin_file = tmp_path / "long.gin"
    gin_file.write_text(TINY_GIN.replace("num_steps = 4", "num_steps = 100000"))
    run_dir = str(tmp_path / "cluster")
    procs = [_start(gin_file, run_dir, "multi_worker", c) for c in _cluster(_free_ports(2))]
    try:
        deadline = time.time() + 400
        while not os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint")):
            assert all(p.poll() is None for p in procs), "a worker ended early"
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.5)
        procs[1].kill()
        out, _ = procs[0].communicate(timeout=300)  # the coordination service's heartbeat timeout
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert procs[0].returncode != 0
    assert "A worker of the cluster was lost" in out, out[-3000:]
    assert "resumes from the last checkpoint (" + os.path.join(run_dir, "checkpoints", "ckpt-") in out
