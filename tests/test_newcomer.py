"""What a new user following the README sees: the model summary's counts and the progress of
the evaluation phases."""

import re

import keras
import numpy as np
import pytest

import blur_keras as bk
from blur_keras.core.genome_spec import NAMES, core_shape
from blur_keras.evaluation import stability as st
from blur_keras.evaluation import suite as ev


def _summary_counts(model):
    lines = []
    model.summary(print_fn=lambda line, *a, **kw: lines.append(line))
    text = "\n".join(lines)
    count = lambda label: int(re.search(label + r" params: ([\d,]+)", text).group(1)  # noqa: E731
                              .replace(",", ""))
    return count("Trainable"), count("Non-trainable"), count("Total")


@pytest.mark.parametrize("k", [2, 3])
def test_summary_counts_the_genome_as_non_trainable(k):
    sizes = (4, 3, 2)
    net = keras.Sequential([keras.Input((sizes[0],)), bk.BlurDense(sizes[1], k=k),
                            bk.BlurDense(sizes[2], k=k)])
    model = bk.BlurModel(net, bk.Genome.random(k, seed=0))
    model.compile()
    genome = sum(int(np.prod(core_shape(n, k))) for n in NAMES)
    assert genome == 4 * k * k + 4 + (2 * k + 3 + k * k)  # core, then gamma/beta/oja/alpha/...
    synapses = sum((n + 1) * m * k + m * n * k for n, m in zip(sizes[:-1], sizes[1:]))
    moving = 2 * sum(m * k for m in sizes[1:])
    assert _summary_counts(model) == (0, synapses + moving + genome,
                                      synapses + moving + genome)
    assert model.trainable_weights == [] and model.genome.trainable_weights == []
    assert all(not v.trainable for v in model.genome.weights)


def test_a_genome_saved_and_loaded_stays_non_trainable():
    genome = bk.Genome.random(2, seed=1)
    again = bk.Genome.from_config(genome.get_config())
    assert not again.trainable and again.trainable_weights == []


def test_the_suite_logs_each_method_it_runs(tmp_path):
    data = ev.synthetic_data("blobs", 5, 3, pool=100, val=30, test=30, seed=0)
    rule = ev.load_rule("backprop:0.1")
    lines = []
    lrs = {"sgd": (0.1, 1.0), "momentum": (0.1,), "adam": (0.01,)}
    ev.run_suite(rule, [data], str(tmp_path), hidden_sizes=((4,),), horizons=(3,),
                 seeds=2, batch_size=4, learning_rates=lrs, plot=False, log=lines.append)
    for name, what in (("BLUR", "the rule"), ("SGD", "a sweep of 2 learning rates"),
                       ("SGD+momentum", "a sweep of 1 learning rate..."),
                       ("Adam", "a sweep of 1 learning rate...")):
        assert any(f"] {name} (" in line and what in line for line in lines), (name, lines)
        assert any(f"] {name} done in " in line for line in lines), (name, lines)
    done = [line for line in lines if " done in " in line]
    assert [re.search(r"\((\d)/4 methods", line).group(1) for line in done] == list("1234")
    assert all("ETA" in line for line in done[:-1]) and "ETA" not in done[-1]
    assert all(line.startswith("[1/1 blobs 5-4-3]") for line in lines[1:-1])


def test_the_fit_check_lines_carry_an_eta():
    progress = {"done": 1, "total": 4, "start": 0.0}
    curve = {"nonfinite": None, "val_accuracy": [0.5], "seconds": 3.0}
    assert re.search(r"ETA [\d.]+ min\)$", st._progress_line(progress, "toy seed 0", curve))
    progress["done"] = 4
    assert "ETA" not in st._progress_line(progress, "toy seed 3", curve)
