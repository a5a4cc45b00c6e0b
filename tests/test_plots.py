import json

import numpy as np
import pytest

import blur_keras as bk
from blur_keras.evaluation import plots
def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_and_genome(tmp_path):
    p = plots.plot_curves({"learned": [0.2, 0.5, 0.7], "sgd": [(1, 0.1), (3, 0.4)]},
                          str(tmp_path / "c.png"), title="t")
    assert _is_png(p)
    assert _is_png(plots.plot_genome(bk.Genome.random(3, seed=0), str(tmp_path / "g.png")))
    with pytest.raises(ValueError, match="pick a species"):
        plots.plot_genome(bk.Genome.random(2, species=2), str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="sequence of values or of \\(x, y\\) pairs"):
        plots.plot_curves({"bad": np.zeros((2, 3))}, str(tmp_path / "y.png"))


def test_plot_meta_history_from_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as fh:
        for step in range(5):
            fh.write(json.dumps({"step": step, "meta_loss": [1.0 / (step + 1), 2.0],
                                 "unroll": 5, "note": "x"}) + "\n")
    records = plots.read_jsonl(str(path))
    out = plots.plot_meta_history(records, str(tmp_path / "sub" / "m.png"))
    assert _is_png(out)


def test_plot_run_draws_every_picture_of_a_run(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as fh:
        for step in range(4):
            fh.write(json.dumps({"step": step, "unroll": 5, "loss": [2.0, 1.5],
                                 "accuracy": [0.1, 0.3]}) + "\n")
    with open(d / "eval.jsonl", "w") as fh:
        fh.write(json.dumps({"step": 3, "val_accuracy": [0.2, 0.4], "best_species": 1}) + "\n")
    bk.Genome.random(2, seed=1).save_json(str(d / "genome.json"))
    with open(d / "results.json", "w") as fh:
        json.dump({"comparison": {"unroll": 5, "learned": 0.7, "start": 0.1, "start_name": "random start", "sgd_best": 0.35,
                                  "sgd_best_learning_rate": 1.0,
                                  "sgd_sweep": {"0.1": 0.15, "1.0": 0.35}}}, fh)
    paths = plots.plot_run(str(d))
    assert [p.split("/")[-1] for p in paths] == ["meta_history.png", "validation.png", "genome.png",
                                                 "comparison.png"]
    assert all(_is_png(p) for p in paths)


@pytest.mark.parametrize("baselines", [{}, {"sgd_best": 0.35, "sgd_best_learning_rate": 1.0,
                                            "adam_best": 0.5, "adam_best_learning_rate": 0.01}])
def test_plot_comparison_draws_the_baselines_the_suite_ran(tmp_path, baselines):
    """A suite run with `evaluate_suite.baselines = []` has no SGD or Adam to draw."""
    comparison = {"rule": "final genome", "unroll": 5, "learned": 0.7, "start": 0.1, **baselines}
    path = plots.plot_comparison(comparison, str(tmp_path / "comparison.png"))
    assert _is_png(path)
