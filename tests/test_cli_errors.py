"""User errors of the train/ command lines: one line before anything is written, the traceback
with --verbosity=1; layer sizes that are not whole numbers >= 1 are refused."""

import os
import subprocess
import sys

import pytest

from blur_keras.core.checks import check_layer_sizes
from blur_keras.data import preset_task
from blur_keras.meta.run.cli import one_line_errors
from blur_keras.meta.run.experiment import Objective, meta_train

import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META = os.path.join(REPO, "train", "meta.py")
EVALUATE = os.path.join(REPO, "train", "evaluate.py")
FIT_CHECK = os.path.join(REPO, "train", "fit_check.py")

BAD_SIZES = {"zero": "(0,)", "negative": "(-3,)", "fraction": "(16.5,)", "boolean": "(True,)",
             "not_a_tuple": "32"}


@pytest.mark.parametrize("sizes", [(0,), (-3,), (16.5,), (True,), ("16",), 32])
def test_meta_train_refuses_bad_layer_sizes_before_writing(tmp_path, sizes):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"Objective.hidden_sizes.*whole number"):
        meta_train(str(run), Objective(task=preset_task("and"), hidden_sizes=sizes, species=2,
                                       batch_size=8))
    assert not run.exists()


def test_layer_sizes_check():
    assert check_layer_sizes((4, 3)) == (4, 3)
    assert check_layer_sizes(()) == ()
    with pytest.raises(ValueError, match=r"^w=\(4, 0\): every layer width must be a whole "
                                          r"number >= 1; got 0\.$"):
        check_layer_sizes((4, 0), "w")


@pytest.mark.parametrize("scale", [0.0, -1.0, 1e30])
def test_meta_train_refuses_absurd_scales(tmp_path, scale):
    with pytest.raises(ValueError, match=r"Objective.init_scale=.*positive scale"):
        meta_train(str(tmp_path / "run"), Objective(task=preset_task("and"), init_scale=scale))
    assert not (tmp_path / "run").exists()


def test_one_line_errors_joins_lines_and_keeps_the_traceback_when_verbose():
    with pytest.raises(SystemExit) as info:
        with one_line_errors("Bad gin configuration", verbose=False):
            raise SyntaxError("malformed binding\n  In bindings string line 1")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Bad gin configuration: SyntaxError: malformed binding In "
                              "bindings string line 1")
    with pytest.raises(SyntaxError):
        with one_line_errors("Bad gin configuration", verbose=True):
            raise SyntaxError("malformed")
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        with one_line_errors("Error", verbose=False):
            raise ZeroDivisionError("bug")


def _start(script, model_dir, *args):
    return subprocess.Popen([sys.executable, script, f"--model_dir={model_dir}",
                             "--strategy=default", *args], env=helpers.subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_error_line(proc, expected):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if expected in line]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(("Error: ", "Bad gin configuration: ")), lines[0]
    assert lines[0].endswith("(run with --verbosity=1 for the traceback)"), lines[0]
    return lines[0]


def test_meta_cli_refuses_bad_sizes_and_gin_syntax_in_one_line(tmp_path):
    """train/meta.py's own code, in this process (the process boundary: the tests below)."""
    bad_file = tmp_path / "bad.gin"
    bad_file.write_text("Schedule.num_steps = 3\nObjective.k = = 2\n")
    cases = {name: ([f"--gin_param=Objective.hidden_sizes = {v}"], "hidden_sizes")
             for name, v in BAD_SIZES.items()}
    cases["unclosed"] = (["--gin_param=Schedule.num_steps = ("], "SyntaxError")
    cases["bad_file"] = ([f"--gin_file={bad_file}"], "bad.gin")
    for name, (args, expected) in cases.items():
        message = helpers.run_meta_cli(f"--model_dir={tmp_path / name}", *args)
        line = helpers.cli_one_line(message, expected)
        if name in BAD_SIZES:
            assert "whole number" in line, line
        assert not (tmp_path / name).exists(), name  # nothing written


@pytest.mark.process
def test_meta_cli_prints_one_line_and_exits_non_zero(tmp_path):
    proc = _start(META, tmp_path / "run", "--gin_param=Objective.hidden_sizes = (0,)")
    line = _one_error_line(proc, "hidden_sizes")
    assert "whole number" in line and not (tmp_path / "run").exists()


@pytest.mark.process
def test_meta_cli_shows_the_traceback_with_verbosity(tmp_path):
    proc = _start(META, tmp_path / "run", "--verbosity=1",
                  "--gin_param=Schedule.num_steps = (")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" in err


@pytest.mark.process
def test_evaluate_and_fit_check_refuse_bad_sizes_in_one_line(tmp_path):
    common = ["--rule=backprop:0.1", "--gin_param=Task.dataset = 'two_moons'",
              "--gin_param=evaluate_suite.tasks = [@Task()]",
              "--gin_param=evaluate_suite.hidden_sizes = [(0,)]"]
    evaluate = subprocess.Popen([sys.executable, EVALUATE, f"--out_dir={tmp_path / 'eval'}",
                                 *common], env=helpers.subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    fit = subprocess.Popen([sys.executable, FIT_CHECK, f"--out_dir={tmp_path / 'fit'}",
                            "--rule=sgd_residual_deep", "--gin_param=fit_check.hidden_sizes = [(16.5,)]"],
                           env=helpers.subprocess_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    line = _one_error_line(evaluate, "hidden_sizes")
    assert "evaluate_suite.hidden_sizes entry=(0,)" in line
    line = _one_error_line(fit, "hidden_sizes")
    assert "fit_check.hidden_sizes entry=(16.5,)" in line
    assert not (tmp_path / "eval").exists() and not (tmp_path / "fit").exists()
