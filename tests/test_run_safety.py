"""Runs that cannot lose their results: atomic result files, one process per run directory,
and a resume that survives an unreadable latest checkpoint."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from blur_keras.files import PARTIAL_SUFFIX, write_atomic, write_json
from blur_keras.meta.run import checkpoint as checkpoint_mod
from blur_keras.meta.run.checkpoint import UnreadableCheckpoint, checkpoint_candidates
from blur_keras.meta.run.lock import LOCK_NAME, RunDirLock, RunDirLocked

import helpers

REPO = helpers.REPO
SCRIPT = helpers.META_SCRIPT


def tiny_run(model_dir, **overrides):
    return helpers.tiny_run(model_dir, **{"num_steps": 4, "keep_checkpoints": 5, **overrides})


def genome_values(model_dir):
    with open(os.path.join(model_dir, "genome.json")) as fh:
        return json.load(fh)["values"]


# -- one helper writes every result file atomically ---------------------------------------------
def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    write_atomic(str(path), b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"

    def killed(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json(str(path), {"b": 2})
    assert path.read_bytes() == b"\x00bytes"  # the old file, whole
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind
    with pytest.raises(TypeError, match="expected str or bytes"):
        write_atomic(str(path), {"not": "text"})


def test_no_result_writer_opens_a_file_for_writing_in_place():
    """Every writer under blur_keras/ and train/ goes through ``blur_keras.files``."""
    offenders = []
    for root in ("blur_keras", "train"):
        for folder, _, names in os.walk(os.path.join(REPO, root)):
            for name in names:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path.endswith(os.path.join("meta", "run", "lock.py")):
                    continue
                with open(path) as fh:
                    text = fh.read()
                for needle in ('"w")', '"wb")', "json.dump(", ".savefig(path"):
                    if needle in text and not path.endswith(os.path.join("blur_keras", "files.py")):
                        offenders.append(f"{os.path.relpath(path, REPO)}: {needle}")
    assert not offenders, offenders


def test_result_files_are_written_through_write_atomic(tmp_path, monkeypatch):
    import blur_keras.files as files

    written = []
    real = files.os.replace

    def spy(src, dst):
        written.append(os.path.relpath(dst, tmp_path))
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    tiny_run(tmp_path / "run", num_steps=2)
    for name in ("run_settings.json", "operative_config.gin", "genome.json",
                 "genome_population.json", "results.json"):
        assert os.path.join("run", name) in written, (name, written)


def test_an_unreadable_results_file_is_written_again(tmp_path):
    run = tmp_path / "run"
    first = tiny_run(run, num_steps=2)
    (run / "results.json").write_text("")  # what a kill inside open("w") used to leave
    again = tiny_run(run, num_steps=2)
    assert again["steps_done"] == 2 == first["steps_done"]
    assert json.loads((run / "results.json").read_text())["steps_done"] == 2
    assert not list(run.rglob("*.png"))  # helpers.TINY_RUN: Report.plots = False


# -- a lock on the run directory ----------------------------------------------------------------
def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_is_refused_in_one_line_and_released_at_the_end(tmp_path):
    run = tmp_path / "run"
    with RunDirLock(str(run)) as held:
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunDirLocked) as info:
            RunDirLock(str(run)).acquire()
        message = str(info.value)
        assert "\n" not in message
        assert f"process {os.getpid()} on host {socket.gethostname()}" in message
        assert held.held
    assert not (run / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "start": None, "time": "then"}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    (run / f".results.json.abc{PARTIAL_SUFFIX}").write_text("{")  # a killed write_atomic's file
    result = tiny_run(run, num_steps=2)
    assert result["steps_done"] == 2
    assert not (run / LOCK_NAME).exists()
    assert not [n for n in os.listdir(run) if n.endswith(PARTIAL_SUFFIX)]


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    """The pid is alive but is another process (started at another time): stale."""
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": os.getpid(), "host": socket.gethostname(), "start": -1, "time": "then"}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    with RunDirLock(str(run)):
        assert json.loads((run / LOCK_NAME).read_text())["start"] != -1


def test_a_lock_held_on_another_host_is_refused_naming_the_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    other = {"pid": 1234, "host": "elsewhere.example", "start": 5, "time": "2030-01-01"}
    (run / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(RunDirLocked, match=r"in use by process 1234 on host elsewhere.example "
                                           r"since 2030-01-01 .*if that run is gone, delete"):
        tiny_run(run, num_steps=2)
    assert not (run / "checkpoints").exists()


TINY_GIN = helpers.tiny_gin("""
Objective.batch_size = 8
Schedule.eval_every = 1000
Schedule.log_every = 1000
""")


def _cli(model_dir, *extra):
    gin_file = os.path.join(os.path.dirname(model_dir), "tiny.gin")
    with open(gin_file, "w") as fh:
        fh.write(TINY_GIN)
    return [sys.executable, SCRIPT, "--strategy=default", f"--model_dir={model_dir}",
            f"--gin_file={gin_file}", *extra]


@pytest.mark.slow
@pytest.mark.process
def test_two_processes_cannot_run_in_one_directory(tmp_path):
    run = tmp_path / "run"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(_cli(run, "--gin_param=Schedule.num_steps = 100000",
                                      "--gin_param=Schedule.checkpoint_every = 100000"),
                                 env=helpers.subprocess_env(), stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 240
        while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "the first run did not start training in time"
            time.sleep(0.2)
        second = subprocess.run(_cli(run, "--gin_param=Schedule.num_steps = 3"),
                                env=helpers.subprocess_env(), capture_output=True, text=True,
                                timeout=300)
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait(timeout=60)
    assert second.returncode != 0
    assert "Traceback" not in second.stderr
    lines = [line for line in second.stderr.splitlines() if "is in use by" in line]
    assert len(lines) == 1 and lines[0].startswith("Error: RunDirLocked: "), second.stderr[-3000:]
    assert f"process {first.pid} on host {socket.gethostname()}" in lines[0]
    assert not (run / "results.json").exists()
    # the killed first run left its lock behind, naming a dead process: stale (a new run takes
    # it over: test_a_stale_lock_of_a_dead_process_is_taken_over here, and a new process in
    # test_run_kill_at_write.py)
    holder = json.loads((run / LOCK_NAME).read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()


# -- resuming from an unreadable latest checkpoint ----------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run stopped after 4 of 6 meta-steps, with checkpoints 1..4 kept."""
    base = tmp_path_factory.mktemp("resume")
    run = base / "run"
    tiny_run(run, num_steps=6, stop_after=4)
    straight = base / "straight"
    tiny_run(straight, num_steps=6)
    return run, genome_values(straight)


def _copy(run, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def _data_file(ckpt_dir, step):
    return next(ckpt_dir / n for n in os.listdir(ckpt_dir)
                if n.startswith(f"ckpt-{step}.data"))


@pytest.mark.parametrize("damage", ["data_cut", "index_cut", "data_deleted", "index_deleted",
                                    "state_cut"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(finished_run, tmp_path, damage,
                                                            caplog):
    run, straight = finished_run
    run = _copy(run, tmp_path)
    ckpt = run / "checkpoints"
    data, index = _data_file(ckpt, 4), ckpt / "ckpt-4.index"
    if damage == "data_cut":
        data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])
    elif damage == "index_cut":
        index.write_bytes(index.read_bytes()[:len(index.read_bytes()) // 2])
    elif damage == "data_deleted":
        data.unlink()
    elif damage == "index_deleted":
        index.unlink()
    else:  # the "checkpoint" state file cut: the .index files still name the checkpoints
        state = ckpt / "checkpoint"
        state.write_bytes(state.read_bytes()[:17])
    caplog.set_level("WARNING")
    result = tiny_run(run, num_steps=6)
    assert result["steps_done"] == 6
    unreadable = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
    if damage not in ("index_deleted", "state_cut"):
        assert len(unreadable) == 1 and "ckpt-4" in unreadable[0] and "\n" not in unreadable[0]
    assert genome_values(run) == straight  # resumed from step 3 (or 4) and repeated the run


def test_resume_refuses_clearly_when_no_checkpoint_is_readable(finished_run, tmp_path):
    run = _copy(finished_run[0], tmp_path)
    ckpt = run / "checkpoints"
    for name in os.listdir(ckpt):
        if ".data" in name:
            (ckpt / name).write_bytes(b"")
    with pytest.raises(UnreadableCheckpoint) as info:
        tiny_run(run, num_steps=6)
    message = str(info.value).splitlines()[0]  # gin adds a line naming the configurable
    assert "No checkpoint in" in message and "ckpt-4:" in message
    assert "ckpt-1:" in message and "Move that folder away" in message


def test_checkpoint_candidates_newest_first(finished_run):
    names = [os.path.basename(p) for p in checkpoint_candidates(
        str(finished_run[0] / "checkpoints"))]
    assert names == ["ckpt-4", "ckpt-3", "ckpt-2", "ckpt-1"]
    assert checkpoint_mod.unreadable(str(finished_run[0] / "checkpoints" / "ckpt-4")) is None
