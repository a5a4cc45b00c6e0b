"""Two layout trials docs/speed.md cites ("The state axis last"); not part of the library.

    python docs/results/speed/layout_trials.py flat_standardize [--rounds 30]
    python docs/results/speed/layout_trials.py bits

* ``flat_standardize``: the issue-8 meta-step (``benchmarks/meta_step.py``'s trainer) with
  ``normalization.standardize`` patched to compute the activation norm's statistics over the
  flat ``[B, n·k]`` view, forward and reverse, against the unpatched one: whether the first
  meta-step's metrics keep their bits, and the time ratio (one process, in turns, median and
  quartiles).
* ``bits``: one inner step's intermediates in ``[B, n, k]`` and ``[k, B, n]``
  (``benchmarks/state_layout_step.py``'s restatement), eagerly and under XLA: the largest
  difference of each.
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import meta_step  # noqa: E402  (pools CPU memory in build())
import state_layout_step as S  # noqa: E402


def _trainer():
    parser = argparse.ArgumentParser()
    meta_step.add_setting_arguments(parser, species=1)
    return meta_step.build(parser.parse_args([]), 10, 0)[1:]


def _standardize_flat(u, epsilon=1e-3):
    shape = tf.shape(u)
    flat = tf.reshape(u, tf.concat([shape[:-2], [-1]], 0))
    mean, var = tf.nn.moments(flat, axes=[-2], keepdims=True)
    rstd = tf.math.rsqrt(var + epsilon)
    return (tf.reshape((flat - mean) * rstd, shape),
            tf.reshape(rstd, tf.concat([shape[:-3], [1], shape[-2:]], 0)))


def flat_standardize(rounds):
    from blur_keras import normalization, step_gradient

    runs = {"unpatched": _trainer()}
    first = {"unpatched": runs["unpatched"][0].train_step(runs["unpatched"][1])}
    original = normalization.standardize
    normalization.standardize = step_gradient.standardize = _standardize_flat
    try:  # traced (and so patched) on its first call
        runs["flat"] = _trainer()
        first["flat"] = runs["flat"][0].train_step(runs["flat"][1])
    finally:
        normalization.standardize = step_gradient.standardize = original
    same = all(np.array_equal(first["unpatched"][k], first["flat"][k]) for k in first["flat"])
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (trainer, batch) in runs.items():
            t0 = time.perf_counter()
            trainer.train_step(batch)
            times[name].append(time.perf_counter() - t0)
    ratio = np.array(times["unpatched"]) / np.array(times["flat"])
    print(f"first meta-step's metrics identical: {same}; unpatched "
          f"{np.median(times['unpatched']) * 1e3:.1f} ms, flat {np.median(times['flat']) * 1e3:.1f}"
          f" ms; speed-up {np.median(ratio):.3f} (quartiles {np.percentile(ratio, 25):.3f}-"
          f"{np.percentile(ratio, 75):.3f}, {rounds} rounds)")


def bits():
    p, rng = S.genome_params(), np.random.default_rng(0)
    x = tf.constant(np.float32(rng.uniform(size=(S.B, S.SIZES[0]))))
    w = [tf.constant(np.float32(rng.normal(size=(n + 1, m, S.K)) / np.sqrt(n)))
         for n, m in zip(S.SIZES[:-1], S.SIZES[1:])]

    def stages(L, w0, w1):
        w0n, w1n = S.syn_norm(L, w0, p["syn_scale"]), S.syn_norm(L, w1, p["syn_scale"])
        z1 = L.input_matmul(x, w0n, p["nu"])
        u1 = S.standardize(L, p["eta"] * z1)
        a1 = S.relu_tanh(L.vec(p["gamma"]) * u1 + L.vec(p["beta"]))
        mix = L.mix(L.bias(a1), p["nu"])
        return dict(synapse_norm=w0n, drive=z1, activation_norm=u1, states=a1, mix=mix,
                    hidden_matmul=L.psm(mix, w1n),
                    delta_w1=L.outer(L.mix(L.bias(a1), p["pre"]), L.mix(a1, p["post"])),
                    delta_w0=L.input_outer(x, L.mix(a1, p["post"]), p["pre"]))

    for jit in (False, True):
        last = tf.function(lambda *w: stages(S.Last, *w), jit_compile=True) if jit else \
            lambda *w: stages(S.Last, *w)
        lead = tf.function(lambda *w: stages(S.Lead, *w), jit_compile=True) if jit else \
            lambda *w: stages(S.Lead, *w)
        a, b = last(*w), lead(*[S.Lead.synapses(t) for t in w])
        diffs = {k: float(np.max(np.abs(a[k].numpy() - np.moveaxis(b[k].numpy(), 0, -1))))
                 for k in a}
        print("XLA  " if jit else "eager", ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trial", choices=["flat_standardize", "bits"])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    flat_standardize(args.rounds) if args.trial == "flat_standardize" else bits()


if __name__ == "__main__":
    main()
