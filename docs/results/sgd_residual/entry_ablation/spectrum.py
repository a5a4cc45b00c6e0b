"""The output synapses' spectrum while a rule trains (docs/RESULTS.md, "one entry").

    python docs/results/sgd_residual/entry_ablation/spectrum.py RULE.json [RULE.json ...]

For each rule: `model.fit` on Fashion-MNIST 28x28, 784-64-10, batch 32, 40 epochs, seed 0 (the
fit check's setting); after every epoch the validation accuracy and the singular values of the
output layer's forward synapses (channel 0, bias row dropped: the 64 x 10 matrix the hidden
states meet). Prints, per epoch, the share of the leading singular direction s1^2 / sum s^2
and the ratio s1 / s10; writes spectrum_<rule>.json and spectrum.png (every rule of the call)
beside the script.
"""
import json
import os
import sys

import numpy as np

import keras

from blur_keras.data import Task
from blur_keras.evaluation.suite import task_data
from blur_keras.evaluation.stability import build_model, load_genome, train_subset, val_accuracy

HERE = os.path.dirname(os.path.abspath(__file__))


def spectrum(model):
    w = np.asarray(model.blur_layers[-1].forward_synapses)[:-1, :, 0]
    return np.linalg.svd(w, compute_uv=False)


def run(rule, epochs=40):
    data = task_data(Task(dataset="fashion_mnist", resolution=28), 1000, 1)
    train = train_subset(data, 4000, 0)
    model = build_model(load_genome(rule), (784, 64, 10), seed=0, steps_per_execution=10)
    keras.utils.set_random_seed(0)
    rows = []
    for epoch in range(1, epochs + 1):
        model.fit(train[0], train[1], batch_size=32, epochs=1, shuffle=True, verbose=0)
        s = spectrum(model)
        acc = val_accuracy(model, data.val_x, data.val_y)
        rows.append({"epoch": epoch, "val_accuracy": acc, "singular_values": s.tolist()})
        print(f"{os.path.basename(rule)} epoch {epoch:2d}: val {acc:.3f} | "
              f"s1^2/sum {s[0] ** 2 / np.sum(s ** 2):.3f} | s1/s10 {s[0] / s[-1]:.1f}", flush=True)
    name = os.path.splitext(os.path.basename(rule))[0]
    with open(os.path.join(HERE, f"spectrum_{name}.json"), "w") as f:
        json.dump(rows, f)
    return name, rows


def plot(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in runs:
        epochs = [r["epoch"] for r in rows]
        s = [np.asarray(r["singular_values"]) for r in rows]
        left.plot(epochs, [r["val_accuracy"] for r in rows], label=name)
        right.plot(epochs, [v[0] / v[-1] for v in s], label=name)
    left.set(xlabel="epoch (125 steps)", ylabel="validation accuracy")
    right.set(xlabel="epoch (125 steps)", ylabel="s1 / s10 of the output synapses")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "spectrum.png"), dpi=90)


if __name__ == "__main__":
    plot([run(path) for path in sys.argv[1:]])
