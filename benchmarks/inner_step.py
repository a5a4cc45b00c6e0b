"""Time one BLUR inner step against a Keras SGD train step of the same network.

784-256-10, batch 128, k = 2 and 4.  Both steps are XLA-compiled tf.functions
called in the same process on the same inputs.  Prints both times, their
ratio, the analytic FLOP ratio, and measured-ratio / FLOP-ratio (goal ≤ 1.25
for k = 4: the BLUR step costs what its arithmetic costs).

    python benchmarks/inner_step.py [--steps 200] [--repeats 5]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import blur_keras as bk  # noqa: E402

SIZES = (784, 256, 10)
BATCH = 128


def blur_flops(sizes, batch, k, symmetric=False):
    """Multiply-adds ×2 of one inner step (contractions only; elementwise work is O(B·n·k))."""
    total = 0
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for l, (n, m) in enumerate(pairs):
        total += 2 * batch * (n + 1) * k * k          # ν mixing of ā^l
        total += 2 * batch * (n + 1) * m * k          # forward per-state matmul
        total += 2 * batch * ((n + 1) + m) * k * k    # ν̃, μ̃ mixing for ΔW
        total += 2 * batch * (n + 1) * m * k          # ΔW outer products
        if not symmetric:
            total += 2 * batch * (n + m) * k * k      # ν̃, μ̃ mixing for ΔV
            total += 2 * batch * n * m * k            # ΔV outer products
        if l >= 1:                                    # backward into hidden layer l
            total += 2 * batch * m * k * k + 2 * batch * m * n * k
    return total


def sgd_flops(sizes, batch):
    """Forward, weight gradients, and input gradients of all but the first layer."""
    total = 0
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2 * batch * (n + 1) * m       # forward (bias as an extra row)
        total += 2 * batch * (n + 1) * m       # weight + bias gradient
        if l >= 1:
            total += 2 * batch * n * m         # gradient w.r.t. the layer's input
    return total


def time_interleaved(fns, steps, repeats):
    """Seconds per call of each function: the fastest of ``repeats`` runs of ``steps`` calls.

    The functions take turns within each repeat, so load from other processes
    hits them alike; the minimum is the least disturbed measurement.
    """
    for fn in fns.values():
        fn()  # compile
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = fn()
            tf.nest.map_structure(lambda t: t.numpy(), out)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: float(np.min(t)) for name, t in times.items()}


def keras_sgd_step(x, y):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(SIZES[1], activation="tanh"),
                              keras.layers.Dense(SIZES[2])])
    opt = keras.optimizers.SGD(0.01)
    opt.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def blur_step(x, y, k):
    config = bk.BlurConfig()
    params = bk.Genome.random(k, seed=0).params()
    synapses = [[tf.Variable(t) for t in pair] for pair in bk.init_synapses(0, SIZES, k)]
    targets = 2.0 * y - 1.0

    @tf.function(jit_compile=True)
    def step():
        current = tuple((w.read_value(), v.read_value()) for w, v in synapses)
        new, states = bk.inner_step(params, current, x, targets, config)
        for (w, v), (nw, nv) in zip(synapses, new):
            w.assign(nw)
            v.assign(nv)
        return states[-1][..., 0]

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(BATCH, SIZES[0])).astype("f4"))
    y = tf.one_hot(rng.integers(0, SIZES[-1], BATCH), SIZES[-1])
    print(f"network {'-'.join(map(str, SIZES))}, batch {BATCH}, {args.steps} steps x "
          f"{args.repeats} repeats (fastest), XLA on {tf.config.list_logical_devices()[0].device_type}")
    fns = {"sgd": keras_sgd_step(x, y), 2: blur_step(x, y, 2), 4: blur_step(x, y, 4)}
    times = time_interleaved(fns, args.steps, args.repeats)
    t_sgd = times["sgd"]
    print(f"Keras SGD train step: {t_sgd * 1e3:.3f} ms  ({sgd_flops(SIZES, BATCH) / 1e6:.1f} MFLOP)")
    for k in (2, 4):
        t = times[k]
        measured = t / t_sgd
        flop_ratio = blur_flops(SIZES, BATCH, k) / sgd_flops(SIZES, BATCH)
        print(f"BLUR inner step k={k}: {t * 1e3:.3f} ms  ({blur_flops(SIZES, BATCH, k) / 1e6:.1f} MFLOP)  "
              f"time ratio {measured:.2f}  FLOP ratio {flop_ratio:.2f}  "
              f"time/FLOP ratio {measured / flop_ratio:.2f}")


if __name__ == "__main__":
    main()
