"""Time one BLUR inner step against a Keras SGD train step of the same network.

784-256-10, batch 128, k = 2 and 4.  The baseline is the faster of two Keras
SGD train steps, a plain tf.function and an XLA-compiled one (on this CPU the
plain one wins at small inputs, XLA at 784); the BLUR step is XLA-compiled.
All run in the same process on the same inputs, taking turns within each
round.  Prints every time, and for each k the time ratio against the faster
Keras step (median over rounds of the per-round ratio; goals k=4 ≤ 4.5,
k=2 ≤ 2.5), the analytic FLOP ratio, and time ratio / FLOP ratio.

    python benchmarks/inner_step.py [--steps 200] [--repeats 5] [--sizes 784,256,10]
                                    [--case dense|conv|all]

The conv case (``--case conv``): 28×28×1 → 32 3×3 → max pool 2 → 64 3×3 → max pool 2 →
10, batch 128; the BLUR step (``blur_keras.core.network``, with and without XLA) at k = 2
and 4 against the faster Keras ``Conv2D`` SGD step (goals k=2 ≤ 2.5, k=4 ≤ 4.5).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # as train/meta.py does, before TensorFlow's first op (both sides alike)

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
        mixed_in = (n + 1) if l >= 1 else 0          # the input layer is not mixed (states 1… are 0)
        total += 2 * batch * mixed_in * k * k         # ν mixing of ā^l
        total += 2 * batch * (n + 1) * m * k          # forward per-state matmul
        total += 2 * batch * (mixed_in + m) * k * k   # ν̃, μ̃ mixing for ΔW
        total += 2 * batch * (n + 1) * m * k          # ΔW outer products
        if not symmetric and l >= 1:                  # V⁰ is never read, never updated
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
    """Seconds per call of each function in each of ``repeats`` rounds of ``steps`` calls.

    The functions take turns within each round, so load from other processes
    hits them alike.  Returns name -> list of per-round times.
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
    return times


def make_inputs():
    """A fixed batch ``(x [BATCH, n_0], one-hot y [BATCH, n_L])`` for the network ``SIZES``."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(BATCH, SIZES[0])).astype("f4"))
    return x, tf.one_hot(rng.integers(0, SIZES[-1], BATCH), SIZES[-1])


def keras_sgd_step(x, y, jit_compile):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZES[0],)), keras.layers.Dense(SIZES[1], activation="tanh"),
                              keras.layers.Dense(SIZES[2])])
    return _sgd_step(model, x, y, jit_compile)


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


IMAGE = (28, 28, 1)


def conv_specs():
    from blur_keras.core import layer_specs as ls
    return (ls.Conv2D(32, 3), ls.Pool2D("max"), ls.Conv2D(64, 3), ls.Pool2D("max"),
            ls.Flatten(), ls.Dense(10))


def conv_inputs():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(BATCH,) + IMAGE).astype("f4"))
    return x, tf.one_hot(rng.integers(0, 10, BATCH), 10)


def keras_conv_step(x, y, jit_compile):
    """A Keras SGD train step of the conv network (tanh convolutions, cross-entropy)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(IMAGE), keras.layers.Conv2D(32, 3, activation="tanh"),
        keras.layers.MaxPooling2D(2), keras.layers.Conv2D(64, 3, activation="tanh"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10)])
    return _sgd_step(model, x, y, jit_compile)


def _sgd_step(model, x, y, jit_compile):
    opt = keras.optimizers.SGD(0.01)
    opt.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def blur_conv_step(x, y, k, jit_compile):
    """The BLUR inner step of the conv network (random genome, default switches)."""
    from blur_keras.core import network
    config, specs = bk.BlurConfig(), conv_specs()
    params = bk.Genome.random(k, seed=0).params()
    synapses = [[tf.Variable(t) for t in pair]
                for pair in network.init_synapses(0, IMAGE, specs, k, config)]
    targets = 2.0 * y - 1.0

    @tf.function(jit_compile=jit_compile)
    def step():
        current = tuple((w.read_value(), v.read_value()) for w, v in synapses)
        new, states = network.inner_step(params, current, x, targets, specs, config)
        for (w, v), (nw, nv) in zip(synapses, new):
            w.assign(nw)
            v.assign(nv)
        return states[-1][..., 0]

    return step


def conv_main(steps, repeats):
    x, y = conv_inputs()
    print(f"conv network 28x28x1 -> 32 3x3 -> pool 2 -> 64 3x3 -> pool 2 -> 10, batch {BATCH}, "
          f"{steps} steps x {repeats} rounds (median)")
    fns = {"sgd": keras_conv_step(x, y, False), "sgd_xla": keras_conv_step(x, y, True)}
    for k in (2, 4):
        fns[k], fns[(k, "no XLA")] = blur_conv_step(x, y, k, True), blur_conv_step(x, y, k, False)
    times = time_interleaved(fns, steps, repeats)
    best = np.minimum(times["sgd"], times["sgd_xla"])
    for name, label in (("sgd", "no XLA"), ("sgd_xla", "XLA")):
        print(f"Keras Conv2D SGD train step ({label}): median {np.median(times[name]) * 1e3:.3f} ms")
    for k in (2, 4):
        fastest = np.minimum(times[k], times[(k, "no XLA")])
        ratios = fastest / best
        print(f"BLUR conv inner step k={k}: XLA median {np.median(times[k]) * 1e3:.3f} ms, "
              f"no XLA {np.median(times[(k, 'no XLA')]) * 1e3:.3f} ms; time ratio (faster BLUR "
              f"vs faster Keras) {np.median(ratios):.2f} (rounds {np.round(ratios, 2).tolist()})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="784,256,10")
    parser.add_argument("--case", choices=("dense", "conv", "all"), default="all")
    args = parser.parse_args()
    if args.case != "dense":
        conv_main(args.steps, args.repeats)
    if args.case == "conv":
        return
    global SIZES
    SIZES = tuple(int(s) for s in args.sizes.split(","))
    x, y = make_inputs()
    print(f"network {'-'.join(map(str, SIZES))}, batch {BATCH}, {args.steps} steps x "
          f"{args.repeats} rounds (median), XLA on {tf.config.list_logical_devices()[0].device_type}")
    fns = {"sgd": keras_sgd_step(x, y, False), "sgd_xla": keras_sgd_step(x, y, True),
           2: blur_step(x, y, 2), 4: blur_step(x, y, 4)}
    times = time_interleaved(fns, args.steps, args.repeats)
    best = np.minimum(times["sgd"], times["sgd_xla"])  # the faster Keras step, per round
    for name, label in (("sgd", "no XLA"), ("sgd_xla", "XLA")):
        print(f"Keras SGD train step ({label}): median {np.median(times[name]) * 1e3:.3f} ms  "
              f"({sgd_flops(SIZES, BATCH) / 1e6:.1f} MFLOP)")
    for k in (2, 4):
        ratios = np.array(times[k]) / best
        measured = float(np.median(ratios))
        flop_ratio = blur_flops(SIZES, BATCH, k) / sgd_flops(SIZES, BATCH)
        print(f"BLUR inner step k={k}: median {np.median(times[k]) * 1e3:.3f} ms  "
              f"({blur_flops(SIZES, BATCH, k) / 1e6:.1f} MFLOP)  "
              f"time ratio vs faster Keras {measured:.2f} (rounds {np.round(ratios, 2).tolist()})  "
              f"FLOP ratio {flop_ratio:.2f}  time/FLOP ratio {measured / flop_ratio:.2f}")


if __name__ == "__main__":
    main()
