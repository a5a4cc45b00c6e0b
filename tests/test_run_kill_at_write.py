"""A staged run killed while it writes its result files (at the write, not by time), once at
each kind of write, resumes and ends with valid files and the genome of an uninterrupted run."""

import json
import os
import subprocess
import sys

import pytest

import helpers

SCRIPT = helpers.META_SCRIPT
KILLED = 57  # the exit code of a process killed at the write

# train/meta.py with os.replace (the rename that ends every write_atomic) ending the process
# when it would put the file named by $KILL_AT in place: the file is written to its temporary
# name, the process dies, the rename never happens.
CHILD = f"""
import os, runpy, sys
target, real = os.environ["KILL_AT"], os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.abspath(dst) == target:
        os._exit({KILLED})
    return real(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = [{SCRIPT!r}] + sys.argv[1:]
runpy.run_path({SCRIPT!r}, run_name="__main__")
"""

TINY_STAGED_GIN = helpers.tiny_gin("""
meta_train.stages = ['a', 'b']
Objective.replicas = 1
Objective.batch_size = 8
Schedule.num_steps = 3
b/Schedule.num_steps = 2
Schedule.checkpoint_every = 1
Schedule.eval_every = 1000
Schedule.log_every = 1000
Schedule.seed = 3
""")

# in the order the run writes them; each kill is resumed by the next process. One write of
# each kind and of each place in the run: a stage's start (its settings, the operative gin),
# its end (the population, the results after its genome), the next stage's start, and the
# run's final genome and results.
KILL_POINTS = ("a/operative_config.gin", "a/genome_population.json", "a/results.json",
               "b/run_settings.json", "genome.json", "results.json")


def _command(gin_file, model_dir, kill_at=None):
    """``(argv, extra environment)`` of train/meta.py, or of it killed at the write of
    ``kill_at``."""
    cmd, env = [sys.executable, SCRIPT], {}
    if kill_at is not None:
        env["KILL_AT"] = os.path.join(os.path.abspath(model_dir), kill_at)
        cmd = [sys.executable, "-c", CHILD]
    return cmd + [f"--gin_file={gin_file}", f"--model_dir={model_dir}", "--strategy=default"], env


def _run(gin_file, model_dir, kill_at=None):
    cmd, env = _command(gin_file, model_dir, kill_at)
    return subprocess.run(cmd, env=helpers.subprocess_env(**env), capture_output=True, text=True,
                          timeout=600)


def _json_files_are_valid(model_dir):
    for folder, _, names in os.walk(model_dir):
        for name in names:
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as fh:
                    json.load(fh)  # raises on an empty or cut file


def _values(path):
    with open(path) as fh:
        return json.load(fh)["values"]


@pytest.mark.slow
@pytest.mark.process
def test_kills_at_every_result_write_resume_to_the_uninterrupted_genome(tmp_path):
    gin_file = tmp_path / "tiny_staged.gin"
    gin_file.write_text(TINY_STAGED_GIN)
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_log = tmp_path / "straight.log"
    with open(straight_log, "w") as log:  # the uninterrupted run goes on beside the kills
        straight = subprocess.Popen(_command(gin_file, straight_dir)[0],
                                    env=helpers.subprocess_env(), stdout=log, stderr=log)
    for target in KILL_POINTS:
        path = killed_dir / target
        before = path.read_bytes() if path.exists() else None
        proc = _run(gin_file, killed_dir, kill_at=target)
        assert proc.returncode == KILLED, (target, proc.stderr[-3000:])
        assert (path.read_bytes() if path.exists() else None) == before, target  # untouched
        _json_files_are_valid(killed_dir)
    assert straight.wait(timeout=600) == 0, straight_log.read_text()[-3000:]
    resumed = _run(gin_file, killed_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Taking over the stale lock" in resumed.stderr
    _json_files_are_valid(killed_dir)
    assert not [n for _, _, names in os.walk(killed_dir) for n in names
                if n.endswith(".partial")]
    for name in ("a/genome.json", "b/genome.json", "genome.json"):
        assert _values(killed_dir / name) == _values(straight_dir / name), name
    with open(killed_dir / "results.json") as fh:
        results = json.load(fh)
    assert results["steps_done"] == 2 and [s["steps_done"] for s in results["stages"]] == [3, 2]
    with open(killed_dir / "a" / "metrics.jsonl") as fa, \
            open(straight_dir / "a" / "metrics.jsonl") as fb:
        assert fa.read() == fb.read()
