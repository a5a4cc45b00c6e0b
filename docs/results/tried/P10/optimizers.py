"""P10: which part of Adam puts it ahead of `sgd_residual` at 50 steps?

Tuned SGD and Adam, and variants between them, on the unseen suite's one-hidden-layer pairs
(MNIST and Fashion-MNIST at 28x28, 784-64-10, tanh hidden layer, cross-entropy on linear
logits, batch 32, 8 seeds; the same batches and initial weights as `evaluate_suite`). Each
method's learning rate is chosen per horizon on the validation split; the test accuracy is
reported. The variants:
  stateless (what a BLUR step could compute from the current batch alone):
    layer_norm   w -= lr * g / rms(g)           (per layer)
    column_norm  w -= lr * g / rms(g[:, j])     (per upper neuron j)
    sign         w -= lr * sign(g)
  one of Adam's two slots:
    rmsprop      Adam with beta1 = 0 (a per-weight second moment, no momentum)
    momentum     Adam's first moment without the second (SGD+momentum, beta 0.9)

    python docs/results/tried/P10/optimizers.py docs/results/tried/P10/table.md
"""
import sys

import numpy as np
import tensorflow as tf

from blur_keras.evaluation import suite as ev
from blur_keras.data import Task

HORIZONS = (10, 20, 50, 100)
LRS = {"sgd": (1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0),
       "momentum": (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3),
       "adam": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
       "rmsprop": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
       "layer_norm": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
       "column_norm": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
       "sign": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}


def direction(method, g, m, v, t):
    """The step's direction (before −lr) and the new slots."""
    rms = lambda x, axes: tf.sqrt(tf.reduce_mean(tf.square(x), axes, keepdims=True) + 1e-12)  # noqa: E731
    if method == "sgd":
        return g, m, v
    if method == "layer_norm":
        return g / rms(g, [-2, -1]), m, v
    if method == "column_norm":
        return g / rms(g, [-2]), m, v
    if method == "sign":
        return tf.sign(g), m, v
    if method == "momentum":  # Keras SGD(momentum=0.9): velocity = 0.9 v + g
        m = 0.9 * m + g
        return m, m, v
    beta1 = 0.9 if method == "adam" else 0.0
    m = beta1 * m + (1 - beta1) * g
    v = 0.999 * v + 0.001 * tf.square(g)
    corr = tf.sqrt(1 - 0.999 ** t) / (1 - beta1 ** t)
    return corr * m / (tf.sqrt(v) + 1e-7), m, v


def forward(ws, x):
    """The suite's baseline network: tanh hidden layers, linear logits."""
    return ev._forward(ws, x, tf.tanh, tf.identity)


@tf.function(jit_compile=True)
def run(method, ws, lrs, pool_x, pool_y, idx, val_x, val_y, test_x, test_y):
    """``[records, 2 (val, test), lrs, seeds]`` at the steps of ``HORIZONS``."""
    ws = [tf.broadcast_to(w, [lrs.shape[0]] + w.shape.as_list()) for w in ws]
    ms, vs = [tf.zeros_like(w) for w in ws], [tf.zeros_like(w) for w in ws]
    lr = tf.reshape(lrs, [-1, 1, 1, 1])
    out = []
    for t in range(1, max(HORIZONS) + 1):
        x, y = tf.gather(pool_x, idx[t - 1]), tf.gather(pool_y, idx[t - 1])
        with tf.GradientTape() as tape:
            tape.watch(ws)
            logits = forward(ws, x)
            loss = tf.reduce_sum(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.broadcast_to(y, tf.shape(logits)[:-1]), logits=logits), -1))
        new = [direction(method, g, m, v, float(t))
               for g, m, v in zip(tape.gradient(loss, ws), ms, vs)]
        ws = [w - lr * d for w, (d, _, _) in zip(ws, new)]
        ms, vs = [m for _, m, _ in new], [v for _, _, v in new]
        if t in HORIZONS:
            out.append(tf.stack([ev._accuracy(forward(ws, val_x), val_y),
                                 ev._accuracy(forward(ws, test_x), test_y)]))
    return tf.stack(out)


def main(out_path):
    rule = ev.load_rule("sgd_residual")  # only for the initial weights' draw (as the suite)
    lines = []
    for dataset in ("mnist_5k", "fashion_mnist"):
        data = ev.task_data(Task(dataset=dataset, resolution=28), 500, 2000)
        sizes = (data.num_features, 64, data.num_classes)
        idx = ev.batch_indices(len(data.pool_y), max(HORIZONS), 8, 32)
        ws = [tf.constant(w) for w in ev.baseline_weights(ev.initial_synapses(rule, sizes, 8))]
        lines += [f"\n**{data.name} {'-'.join(map(str, sizes))}** (test accuracy, mean ± 95% "
                  "interval over 8 seeds; learning rate chosen on validation per horizon)\n",
                  "| method | " + " | ".join(f"{h} steps" for h in HORIZONS) + " |",
                  "|---" * (len(HORIZONS) + 1) + "|"]
        for method, lrs in LRS.items():
            acc = run(method, ws, tf.constant(lrs, tf.float32), tf.constant(data.pool_x),
                      tf.constant(data.pool_y), tf.constant(idx), tf.constant(data.val_x),
                      tf.constant(data.val_y), tf.constant(data.test_x),
                      tf.constant(data.test_y)).numpy()
            cells = []
            for r in range(len(HORIZONS)):
                best = int(np.argmax(acc[r, 0].mean(-1)))
                mean, half = ev.mean_ci(acc[r, 1, best])
                edge = " (edge of grid)" if best in (0, len(lrs) - 1) else ""
                cells.append(f"{mean:.3f} ± {half:.3f} (lr {lrs[best]:g}{edge})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
            print(data.name, lines[-1], flush=True)
    with open(out_path, "w") as f:
        f.write("\n".join(lines).lstrip() + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
