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


# -- what a person sees in a run's pictures -------------------------------------------------------

@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _comparison(**extra):
    steps = [0, 1, 2, 5, 10, 20, 50]
    curve = lambda a: [min(0.1 + a * s, 0.95) for s in steps]  # noqa: E731
    return {"rule": "final genome (with its schedule)", "unroll": 20, "learned": 0.71,
            "start": 0.12, "start_name": "start genome (cma_short)", "sgd_best": 0.55,
            "sgd_best_learning_rate": 0.3, "momentum_best": 0.6,
            "momentum_best_learning_rate": 0.03, "adam_best": 0.66,
            "adam_best_learning_rate": 0.003,
            "curves": {"steps": steps, "blur": curve(0.03), "sgd": curve(0.02),
                       "momentum": curve(0.025), "adam": curve(0.028)}, **extra}


def _boxes_overlap(fig, texts):
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in texts if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_comparison_bars_have_readable_labels_and_every_baseline():
    fig = plots.comparison_figure(_comparison())
    bars = fig.axes[0]
    labels = [t.get_text().replace("\n", " ") for t in bars.get_xticklabels()]
    assert labels == ["final genome (with its schedule)", "start genome (cma_short)",
                      "SGD (lr=0.3)", "SGD+momentum (lr=0.03)", "Adam (lr=0.003)"]
    assert [round(p.get_height(), 3) for p in bars.patches] == [0.71, 0.12, 0.55, 0.6, 0.66]
    assert not _boxes_overlap(fig, bars.get_xticklabels())


def test_comparison_side_panel_shows_the_curves_or_is_left_out():
    fig = plots.comparison_figure(_comparison())
    assert len(fig.axes) == 2
    side = fig.axes[1]
    assert {line.get_label() for line in side.get_lines()} >= {
        "final genome (with its schedule)", "SGD", "SGD+momentum", "Adam"}
    bare = _comparison()
    del bare["curves"]
    assert len(plots.comparison_figure(bare).axes) == 1  # no empty panel
    old = dict(bare, sgd_sweep={"0.1": 0.2, "1.0": 0.5})  # a results.json of an older run
    assert len(plots.comparison_figure(old).axes[1].get_lines()) == 2


def test_cma_es_history_plots_what_it_logs():
    """CMA-ES logs fitness and a population's accuracy, not a loss."""
    records = [{"step": s, "unroll": 10, "phase": 0, "accuracy": [0.1 * (i % 5) for i in range(12)],
                "fitness": [-0.1] * 12, "applied": [True] * 12, "mean_fitness": -0.01 * s,
                "sigma": 0.1 / (s + 1)} for s in range(6)]
    fig = plots.meta_history_figure(records, keys=plots._HISTORY_KEYS)
    assert [ax.get_ylabel() for ax in fig.axes] == ["mean_fitness", "accuracy", "sigma", "unroll"]
    assert all(ax.get_lines() for ax in fig.axes)


def test_a_single_validation_is_a_visible_point(tmp_path):
    fig = plots.meta_history_figure([{"step": 29, "val_accuracy": [0.42], "best_species": 0}],
                                    keys=["val_accuracy"])
    (line,) = fig.axes[0].get_lines()
    assert line.get_marker() not in (None, "None", "", " ")
    d = tmp_path / "run"
    d.mkdir()
    (d / "eval.jsonl").write_text(json.dumps({"step": 3, "val_accuracy": [0.4]}) + "\n")
    (d / "metrics.jsonl").write_text(json.dumps({"step": 3, "mean_fitness": -0.4}) + "\n")
    assert [p.split("/")[-1] for p in plots.plot_run(str(d))] == ["meta_history.png",
                                                                  "validation.png"]


def test_the_final_report_records_momentum_and_the_curves_it_draws():
    from blur_keras.meta.run.report import _baselines_at

    steps = [0, 5, 10]
    res = {m: {"test_mean": [0.1, 0.3 + i / 10, 0.5 + i / 10], "best_learning_rate": [None, lr, lr]}
           for i, (m, lr) in enumerate((("blur", None), ("sgd", 0.3), ("momentum", 0.03),
                                         ("adam", 0.003)))}
    out = _baselines_at(res, 1, steps)
    assert out["momentum_best"] == pytest.approx(0.5) and out["momentum_best_learning_rate"] == 0.03
    assert out["curves"]["steps"] == steps and set(out["curves"]) == {"steps", *res}
    fig = plots.comparison_figure({"unroll": 5, "learned": 0.3, "start": 0.1, **out})
    assert "SGD+momentum\n(lr=0.03)" in [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(fig.axes[1].get_lines()) == 5  # four methods and T


def test_a_run_draws_its_pictures(tmp_path):
    import helpers

    helpers.tiny_run(tmp_path / "drawn", plots=True)
    drawn = sorted(p.name for p in (tmp_path / "drawn").glob("*.png"))
    assert drawn == ["genome.png", "meta_history.png", "validation.png"], drawn
    assert all(_is_png(tmp_path / "drawn" / name) for name in drawn)
    # helpers.TINY_RUN has plots=False: tests/test_run_safety.py checks that such a run draws none
