"""A layout trial docs/speed.md cites ("The state axis last"); not part of the library.

    python docs/results/speed/layout_trials.py bits

``bits``: one inner step's intermediates in ``[B, n, k]`` and ``[k, B, n]``
(``benchmarks/state_layout_step.py``'s restatement), eagerly and under XLA: the largest
difference of each.

The other trial docs/speed.md cites, ``flat_standardize``, patched the library's
``normalization.standardize`` of the core before stop 27, which kept the state axis last; it
measured that core and is kept in the history (``git show
0962f33:docs/results/speed/layout_trials.py``), not here, since the core it patched is gone.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import state_layout_step as S  # noqa: E402  (pools CPU memory on import)


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
    parser.add_argument("trial", choices=["bits"])
    parser.parse_args()
    bits()


if __name__ == "__main__":
    main()
