"""The run log: metrics.jsonl / eval.jsonl lines, their truncation on resume, the progress line."""

import json

import numpy as np

from blur_keras.meta.run.log import Progress, RunLog, fmt_time, truncate_jsonl


def _lines(path):
    return [json.loads(l) for l in open(path)]


def test_truncate_keeps_earlier_steps_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n{"step": 3')
    truncate_jsonl(str(path), 2)
    assert _lines(path) == [{"step": 0}, {"step": 1}]
    truncate_jsonl(str(path), 10)  # a cut line ends the kept part
    assert _lines(path) == [{"step": 0}, {"step": 1}]
    truncate_jsonl(str(tmp_path / "missing.jsonl"), 3)  # nothing to do


def test_fmt_time():
    assert fmt_time(65) == "1m05s" and fmt_time(3725) == "1h02m05s"
    assert fmt_time(float("nan")) == "?"


def test_progress_line_starts_after_compilation():
    p = Progress(10, 0)
    assert p.line(0) == "compiled"
    assert "meta-steps/s, ETA" in p.line(1)


def test_run_log_writes_steps_and_validations(tmp_path):
    metrics = {"accuracy": np.array([0.5, 0.25]), "applied": np.array([True, False]),
               "inner_accuracy": np.zeros([3, 2])}
    with RunLog(str(tmp_path), 0, 4) as log:
        for step in range(3):
            log.meta_step(step, 2, 0, metrics, {"x/mean": 1.0})
        log.progress_line(2, 2, "summary", {"norm": 3.0})
        log.validation(2, 2, np.array([0.1, 0.9]), 1, np.array([0.2, 0.4, 0.9]))
    lines = _lines(tmp_path / "metrics.jsonl")
    assert [l["step"] for l in lines] == [0, 1, 2]
    assert lines[0] == {"step": 0, "unroll": 2, "phase": 0, "accuracy": [0.5, 0.25],
                        "applied": [True, False]}
    assert _lines(tmp_path / "eval.jsonl") == [{"step": 2, "unroll": 2, "val_accuracy": [0.1, 0.9],
                                                "best_species": 1}]
    assert list((tmp_path / "tensorboard").iterdir())
    with RunLog(str(tmp_path), 1, 4):  # a resumed run from step 1 drops steps >= 1
        pass
    assert [l["step"] for l in _lines(tmp_path / "metrics.jsonl")] == [0]
    assert _lines(tmp_path / "eval.jsonl") == []
