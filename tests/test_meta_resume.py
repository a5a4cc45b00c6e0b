"""train/meta.py as a process: SIGKILL mid-run and resume; bad configuration fails early."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

import helpers

SCRIPT = helpers.META_SCRIPT

TINY_GIN = helpers.tiny_gin("""
Objective.replicas = 2
Objective.batch_size = 16
Schedule.num_steps = 24
Objective.curriculum = @Curriculum()
Curriculum.unroll_start = 2
Curriculum.unroll_delta = 1
Curriculum.unroll_every = 12
GradientTrainer.learning_rate = 0.01
Objective.logit_scale = 3.0
Schedule.seed = 7
Schedule.checkpoint_every = 5
Schedule.keep_checkpoints = 2
Schedule.eval_every = 12
Schedule.log_every = 6
""")


def _env():
    return helpers.subprocess_env()


def _cmd(gin_file, model_dir, *extra):
    return [sys.executable, SCRIPT, f"--gin_file={gin_file}", f"--model_dir={model_dir}",
            "--strategy=default", *extra]


def _checkpoint_step(model_dir):
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    if state is None or not state.model_checkpoint_path:
        return -1
    return int(state.model_checkpoint_path.rsplit("-", 1)[1])


def _metrics(model_dir):
    out = []
    with open(os.path.join(model_dir, "metrics.jsonl")) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by the kill
                break
    return out


@pytest.mark.process
def test_sigkill_and_resume_repeats_the_uninterrupted_run(tmp_path):
    gin_file = tmp_path / "tiny.gin"
    gin_file.write_text(TINY_GIN)
    killed_dir, straight_dir = str(tmp_path / "killed"), str(tmp_path / "straight")
    with open(tmp_path / "straight.log", "w") as log:  # a file: a full pipe would block it
        straight = subprocess.Popen(_cmd(gin_file, straight_dir), env=_env(),  # beside: 2 cores
                                    stdout=subprocess.DEVNULL, stderr=log)
    proc = subprocess.Popen(_cmd(gin_file, killed_dir), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    try:
        while _checkpoint_step(killed_dir) < 10:
            assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(_metrics(killed_dir))
    assert 10 <= killed_at < 24  # really mid-way
    resumed = subprocess.run(_cmd(gin_file, killed_dir), env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr
    assert "CPU memory: pooled" in resumed.stderr  # blur_keras.meta.run.runtime, as every entry point

    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    a, b = _metrics(straight_dir), _metrics(killed_dir)
    assert [r["step"] for r in a] == list(range(24)) == [r["step"] for r in b]
    assert [r["unroll"] for r in b][10:14] == [2, 2, 3, 3]  # the curriculum position resumed
    for ra, rb in zip(a, b):
        assert ra == rb, (ra, rb)
    with open(os.path.join(straight_dir, "eval.jsonl")) as fa, \
            open(os.path.join(killed_dir, "eval.jsonl")) as fb:
        assert fa.read() == fb.read()
    # only the last few checkpoints are kept
    index = os.listdir(os.path.join(killed_dir, "checkpoints"))
    assert len([f for f in index if f.endswith(".index")]) == 2


def test_bad_flag_and_bad_value_fail_before_training(tmp_path):
    from blur_keras.meta.run.experiment import Objective, Outer, meta_train
    from blur_keras.data import preset_task

    with pytest.raises(ValueError, match="Outer.trainer='sgd'"):
        meta_train(str(tmp_path / "a"), Objective(task=preset_task("and")), outer=Outer("sgd"))
    with pytest.raises(ValueError, match="Objective.species must be an int"):
        meta_train(str(tmp_path / "b"), Objective(task=preset_task("and"), species=0))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    from absl import flags

    with pytest.raises(flags.IllegalFlagValueError, match="strategy"):
        helpers.run_meta_cli("--strategy=bogus")
