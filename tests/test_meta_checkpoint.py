"""Checkpointing and resumption of a run: run_settings.json, its check, the run state."""

import json

import pytest
import tensorflow as tf

from blur_keras.core.config import BlurConfig
from blur_keras.meta.run.checkpoint import check_resumed_settings, open_run, run_settings
from blur_keras.meta.outer.base import OuterTrainer


class _Trainer(OuterTrainer):
    species = 2

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64)
        self.value = tf.Variable(1.0)
        self.restored = 0

    def checkpoint_items(self):
        return {"value": self.value, "step": self.step}

    def after_restore(self):
        self.restored += 1


def test_run_settings_are_plain_json():
    s = run_settings(sizes=(2, 3), config=BlurConfig(), d={"b": 1, "a": (1, 2)}, x=None)
    assert s["sizes"] == [2, 3] and s["d"] == {"a": [1, 2], "b": 1} and s["x"] is None
    assert isinstance(s["config"], dict)
    json.dumps(s)


def test_check_resumed_settings_names_every_difference(tmp_path):
    (tmp_path / "run_settings.json").write_text(json.dumps({"a": 1, "b": 2}))
    check_resumed_settings(str(tmp_path), {"a": 1, "b": 2})
    with pytest.raises(ValueError, match=r"a: 1 in the checkpointed run, now 3; c: '<unset>'"):
        check_resumed_settings(str(tmp_path), {"a": 3, "b": 2, "c": 4})
    check_resumed_settings(str(tmp_path / "old"), {"a": 3})  # no file: only a warning


def test_open_run_starts_then_resumes(tmp_path):
    d = str(tmp_path)
    trainer = _Trainer()
    ckpt, run_state, start = open_run(d, d, trainer, seed=3, unroll=5, settings={"a": 1}, keep=2)
    assert start == 0 and trainer.restored == 1
    assert json.loads((tmp_path / "run_settings.json").read_text()) == {"a": 1}
    assert run_state["nonfinite_streak"].shape == [2] and int(run_state["unroll"]) == 5
    trainer.step.assign(4)
    trainer.value.assign(7.0)
    ckpt.save(4)
    again = _Trainer()
    _, _, start = open_run(d, d, again, seed=3, unroll=5, settings={"a": 1}, keep=2)
    assert start == 4 and float(again.value.numpy()) == 7.0 and again.restored == 1
    with pytest.raises(ValueError, match="seed 3, not 4"):
        open_run(d, d, _Trainer(), seed=4, unroll=5, settings={"a": 1}, keep=2)
