"""The neuron-state layout and XLA:CPU: the library's ``[B, n, k]`` against ``[k, B, n]``.

    python benchmarks/state_layout.py
    python benchmarks/state_layout.py --batch 128 --neurons 256 --k 4 --passes 100 --rounds 5

The meta-step of ``benchmarks/meta_step.py`` spends most of its time outside its GEMMs, in elementwise fusions,
reductions and transposes over the first hidden layer's ``[B, n, k]`` states (docs/benchmarks.md).
This measures, in one process and in turns, the same operations in both layouts, each pass
inside a compiled ``while_loop`` of ``--passes`` iterations (so that it is one XLA fusion or
dot per iteration, with no dispatch between them):

* ``a*b+c``: a memory-bound elementwise pass over three state tensors;
* ``activation``: ``tanh`` of a per-state affine (activation norm's scale and shift);
* ``state mix``: ``Σ_d a[..., d] m[d, c]`` with a k×k matrix (every pass of the rule);
* ``batch moments``: the mean and variance over the batch (activation norm);
* ``per-state matmul``: ``Σ_i a[b, i, c] w[i, j, c]`` into 10 neurons (the hidden pair),
  then a rescale of ``a`` by its mean over them (so that every pass depends on the last).

A third column runs the elementwise passes and the moments on the library's own memory seen
as ``[B, n·k]`` (a free reshape; per-state vectors tiled over the neurons). It prints µs per
pass in each layout and the ratio library / other, median over rounds. Every layout computes
the same numbers (checked before timing).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _looped(step, passes):
    """A compiled function applying ``step`` ``passes`` times to its first argument."""

    @tf.function(jit_compile=True)
    def run(a, *rest):
        def body(i, a):
            return i + 1, step(a, *rest)

        return tf.while_loop(lambda i, _: i < passes, body, (0, a))[1]

    return run


def _ops(k):
    """name -> (step in [B, n, k], step in [k, B, n], extra operands' makers)."""
    last = dict(
        fma=lambda a, b, c: a * b + c,
        activation=lambda a, s, t: tf.tanh(a * s + t),
        mix=lambda a, m: tf.reduce_sum(a[..., :, None] * m, axis=-2),
        moments=lambda a: (a - tf.reduce_mean(a, axis=0)) * tf.math.rsqrt(
            tf.math.reduce_variance(a, axis=0) + 1e-5),
        matmul=lambda a, w: a * (1 + 1e-3 * tf.reduce_mean(
            tf.einsum("bic,ijc->bjc", a, w), axis=-2, keepdims=True)),
    )
    lead = dict(
        fma=lambda a, b, c: a * b + c,
        activation=lambda a, s, t: tf.tanh(a * s + t),
        mix=lambda a, m: tf.reduce_sum(a[:, None] * m[:, :, None, None], axis=0),
        moments=lambda a: (a - tf.reduce_mean(a, axis=1, keepdims=True)) * tf.math.rsqrt(
            tf.math.reduce_variance(a, axis=1, keepdims=True) + 1e-5),
        matmul=lambda a, w: a * (1 + 1e-3 * tf.reduce_mean(tf.matmul(a, w), axis=-1,
                                                             keepdims=True)),
    )
    flat = dict(fma=last["fma"], activation=last["activation"], moments=last["moments"])
    return last, lead, flat


def _operands(name, a, k, neurons, rng):
    """Extra operands of op ``name`` in the library layout, the state-leading one and the flat
    one (``[B, n·k]``: the library's memory seen without its state axis; None: not applicable)."""
    to_lead = lambda t: np.moveaxis(t, -1, 0)  # noqa: E731
    to_flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    if name == "fma":  # |b| < 1: bounded, no denormals over many passes
        b, c = rng.uniform(0.3, 0.9, size=a.shape), rng.normal(size=a.shape)
        return (b, c), (to_lead(b), to_lead(c)), (to_flat(b), to_flat(c))
    if name == "activation":  # per-state scale and shift; tiled over the neurons when flat
        s, t = rng.normal(size=k), rng.normal(size=k)
        return (s, t), (s[:, None, None], t[:, None, None]), (np.tile(s, neurons),
                                                              np.tile(t, neurons))
    if name == "mix":
        m = np.linalg.qr(rng.normal(size=(k, k)))[0]  # orthogonal: bounded, no denormals
        return (m,), (m,), None
    if name == "moments":
        return (), (), ()
    w = rng.normal(size=(neurons, 10, k)) / np.sqrt(neurons)
    return (w,), (np.moveaxis(w, -1, 0),), None


def _time(fn, args):
    """Seconds of one call of a compiled ``fn``."""
    t0 = time.perf_counter()
    fn(*args).numpy()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--neurons", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(args.batch, args.neurons, args.k)).astype(np.float32)
    layouts = dict(zip(("[B, n, k]", "[k, B, n]", "[B, n*k]"), _ops(args.k)))
    views = dict(zip(layouts, (lambda t: t, lambda t: np.moveaxis(t, -1, 0),
                               lambda t: t.reshape(t.shape[0], -1))))
    print(f"state layout, [B, n, k] = [{args.batch}, {args.neurons}, {args.k}] vs [k, B, n] and "
          f"the same memory as [B, n*k]; XLA on CPU ({os.cpu_count()} cores), {args.passes} "
          f"passes per call, median of {args.rounds} rounds in turns; ratio: [B, n, k] / other")
    for name in layouts["[B, n, k]"]:
        runs, ref = {}, None
        for (layout, ops), extra in zip(layouts.items(),
                                        _operands(name, a, args.k, args.neurons, rng)):
            if extra is None:  # no flat form of this operation
                continue
            inputs = [tf.constant(views[layout](a))] + [tf.constant(np.float32(e)) for e in extra]
            out = _looped(ops[name], 2)(*inputs).numpy()
            ref = out if ref is None else ref  # the library layout comes first
            np.testing.assert_allclose(out, views[layout](ref), rtol=1e-4, atol=1e-4)
            runs[layout] = (_looped(ops[name], args.passes), inputs)
            _time(*runs[layout])  # compiles it
        times = {layout: [] for layout in runs}
        for _ in range(args.rounds):  # in turns
            for layout, (fn, inputs) in runs.items():
                times[layout].append(_time(fn, inputs))
        base = np.array(times["[B, n, k]"])
        cells = [f"{layout} {np.median(t) / args.passes * 1e6:7.1f} us" +
                 ("" if layout == "[B, n, k]" else f" (ratio {np.median(base / np.array(t)):.2f})")
                 for layout, t in times.items()]
        print(f"  {name:10s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
