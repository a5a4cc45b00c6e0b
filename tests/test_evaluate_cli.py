"""train/evaluate.py and train/analyze.py end to end on tiny synthetic settings."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.process
def test_evaluate_cli_writes_the_suite(tmp_path):
    proc = run(["train/evaluate.py", "--rule=backprop:0.1", f"--out_dir={tmp_path}",
                "--gin_param=evaluate_suite.tasks = [@Task()]",
                "--gin_param=Task.dataset = 'two_moons'",
                "--gin_param=evaluate_suite.hidden_sizes = [(4,)]",
                "--gin_param=evaluate_suite.horizons = (3,)",
                "--gin_param=evaluate_suite.seeds = 2",
                "--gin_param=evaluate_suite.batch_size = 4",
                "--gin_param=evaluate_suite.baselines = ('sgd',)",
                "--gin_param=evaluate_suite.learning_rates = {'sgd': (0.01, 0.1, 1.0, 10.0)}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| BLUR |" in proc.stdout and "| SGD |" in proc.stdout
    for name in ("points.csv", "summary.json", "table.md"):
        assert os.path.exists(tmp_path / name)


@pytest.mark.process
def test_evaluate_cli_bad_rule_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    proc = run(["train/evaluate.py", f"--rule={bad}", f"--out_dir={tmp_path}"])
    assert proc.returncode != 0
    assert "Bad configuration: ValueError:" in proc.stderr and "JSON object" in proc.stderr
    assert "Traceback" not in proc.stderr
