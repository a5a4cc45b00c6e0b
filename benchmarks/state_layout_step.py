"""A whole meta-gradient in the two state layouts: what the state-leading core gains.

    python benchmarks/state_layout_step.py               # 30 rounds in turns
    python benchmarks/state_layout_step.py --rounds 60
    python benchmarks/state_layout_step.py --hidden 32 --k 2 --T 20   # the default run's network

``benchmarks/state_layout.py`` times single operations; this times the meta-gradient of issue
8's setting (100-256-10, k = 4, T = 10, batch 128, activation norm and synapse norm, the
default activations, target feedback, the additive backward rule) written twice:

* ``Last``: the public layout (the layout at the edges of the core), neuron states
  ``[B, n, k]`` and synapses ``[n_i, n_j, k]``;
* ``Lead``: the library's internal layout (``blur_keras.core.layout``), states ``[k, B, n]`` and
  synapses ``[k, n_i, n_j]``, so that per-state matmuls need no transposes and elementwise
  loops run along the neurons.

Both are a stand-alone restatement of that one configuration of the library's inner step, kept
here only to measure the layout; the script first checks it against
``blur_keras.core.step.inner_step``: ``Lead`` must give the same bits, ``Last`` the same numbers to
float32 round-off. It then differentiates ``T`` steps and a query (TensorFlow's autodiff in
both) under XLA. Beside them it runs the library's own meta-gradient of the same setting
(``meta_loss``, with the hand-derived reverse, from fresh seeded synapses), and the meta-loss
alone (no gradient, as a CMA-ES stage evaluates it) in both restated layouts. All are timed in one process, in turns,
after pooling CPU memory as ``train/meta.py`` does. It prints their first calls, their times
and each one's speed-up over the restated ``[B, n, k]`` of its kind (median over rounds, with
quartiles).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()

K, SIZES, B, T = 4, (100, 256, 10), 128, 10  # meta_step.py's setting; --k, --hidden, --T change it


class Last:
    """The public layout: states ``[B, n, k]``, synapses ``[n_i, n_j, k]``."""

    @staticmethod
    def vec(v):  # per-state vector [k] against states
        return v

    @staticmethod
    def mix(a, m):
        return tf.reduce_sum(a[..., :, None] * m, axis=-2)

    @staticmethod
    def psm(x, w):
        return tf.einsum("bic,ijc->bjc", x, w)

    @staticmethod
    def outer(p, q):
        return tf.transpose(tf.matmul(tf.transpose(p, (2, 1, 0)), tf.transpose(q, (2, 0, 1))),
                            (1, 2, 0))

    @staticmethod
    def bias(a):
        return tf.concat([a, tf.ones_like(a[:, :1, :])], axis=1)

    @staticmethod
    def input_matmul(x, w, m):
        n, nj = w.shape[0] - 1, w.shape[1]
        k = w.shape[-1]
        xw = tf.reshape(x @ tf.reshape(w[:n], [n, nj * k]), [-1, nj, k])
        return m[0] * xw + tf.reduce_sum(m, axis=0) * w[n]

    @staticmethod
    def input_outer(x, q, m):
        xb = tf.concat([x, tf.ones_like(x[:, :1])], axis=1)
        nj = q.shape[1]
        k = q.shape[-1]
        out = tf.reshape(tf.matmul(xb, tf.reshape(q, [-1, nj * k]), transpose_a=True),
                         [-1, nj, k])
        n = x.shape[1]
        scale = tf.where(tf.range(n + 1)[:, None] == n, tf.reduce_sum(m, 0)[None], m[0][None])
        return out * scale[:, None, :]

    BATCH_AXIS = SOURCE_AXIS = 0  # of states, of synapses

    @staticmethod
    def feedback(a, t):
        return tf.concat([a[..., :1], t[..., None], tf.zeros_like(a[..., 2:])], axis=-1)

    @staticmethod
    def state0(a):
        return a[..., 0]

    @staticmethod
    def synapses(ws):  # from [i, j, k]
        return ws


class Lead:
    """State-leading, the library's internal layout: states ``[k, B, n]``, synapses
    ``[k, n_i, n_j]``."""

    @staticmethod
    def vec(v):
        return v[:, None, None]

    @staticmethod
    def mix(a, m):
        return tf.add_n([m[d][:, None, None] * a[d] for d in range(a.shape[0])])

    @staticmethod
    def psm(x, w):
        return tf.matmul(x, w)

    @staticmethod
    def outer(p, q):
        return tf.matmul(p, q, transpose_a=True)

    @staticmethod
    def bias(a):
        return tf.concat([a, tf.ones_like(a[:, :, :1])], axis=2)

    @staticmethod
    def input_matmul(x, w, m):
        n = w.shape[1] - 1
        xw = tf.matmul(tf.broadcast_to(x, [w.shape[0]] + x.shape.as_list()), w[:, :n])
        return m[0][:, None, None] * xw + (tf.reduce_sum(m, axis=0)[:, None, None]
                                           * w[:, n:n + 1])

    @staticmethod
    def input_outer(x, q, m):
        xb = tf.concat([x, tf.ones_like(x[:, :1])], axis=1)
        out = tf.matmul(tf.broadcast_to(xb, [q.shape[0]] + xb.shape.as_list()), q,
                        transpose_a=True)
        n = x.shape[1]
        scale = tf.where(tf.range(n + 1)[None, :] == n, tf.reduce_sum(m, 0)[:, None],
                         m[0][:, None])  # [k, n+1]
        return out * scale[:, :, None]

    BATCH_AXIS = SOURCE_AXIS = 1  # of states, of synapses

    @staticmethod
    def feedback(a, t):
        return tf.concat([a[:1], t[None], tf.zeros_like(a[2:])], axis=0)

    @staticmethod
    def state0(a):
        return a[0]

    @staticmethod
    def synapses(ws):
        return tf.transpose(ws, (2, 0, 1))


def standardize(L, u, eps=1e-3):
    """Activation norm's standardisation over the batch axis."""
    mean, var = tf.nn.moments(u, axes=[L.BATCH_AXIS], keepdims=True)
    return (u - mean) * tf.math.rsqrt(var + eps)


def syn_norm(L, w, s):
    """Synapse norm: each column over its source neurons, times the genome's scale."""
    return w * tf.math.rsqrt(tf.reduce_sum(tf.square(w), axis=L.SOURCE_AXIS, keepdims=True)
                             + 1e-8) * s


def relu_tanh(u):
    return tf.nn.relu(tf.tanh(u))


def step(L, p, ws, x, t):
    """One inner step in layout ``L``: new ``(W⁰, W¹, V¹)`` and the prediction (state 0)."""
    w0, w1, v1 = ws
    vec = L.vec

    def norm_act(u, act):
        return act(vec(p["gamma"]) * standardize(L, u) + vec(p["beta"]))

    s = p["syn_scale"]
    w0n, w1n, v1n = syn_norm(L, w0, s), syn_norm(L, w1, s), syn_norm(L, v1, s)
    a1 = norm_act(p["eta"] * L.input_matmul(x, w0n, p["nu"]), relu_tanh)
    a2 = norm_act(p["eta"] * L.psm(L.mix(L.bias(a1), p["nu"]), w1n), tf.tanh)
    pred = L.state0(a2)
    a2 = L.feedback(a2, t)
    g = L.psm(L.mix(a2, p["mu"]), v1n)
    a1 = norm_act(p["f"] * a1 + p["eta"] * g, relu_tanh)
    post = tf.transpose(p["post"])
    d0 = L.input_outer(x, L.mix(a1, post), p["pre"])
    d1 = L.outer(L.mix(L.bias(a1), p["pre"]), L.mix(a2, post))
    dv = L.outer(L.mix(a2, p["pre"]), L.mix(a1, post))
    upd = lambda w, d: p["f_syn"] * w + p["eta_syn"] * d  # noqa: E731
    return (upd(w0, d0), upd(w1, d1), upd(v1, dv)), pred


def meta_loss(L, p, ws, xs, ts, qx, qy):
    """``T`` inner steps, then the query's softmax cross-entropy (logit scale 3)."""
    def body(i, w0, w1, v1):
        new, _ = step(L, p, (w0, w1, v1), xs[i], ts[i])
        return (i + 1,) + new

    steps = xs.shape[0]
    _, *ws = tf.while_loop(lambda i, *_: i < steps, body, (0,) + tuple(ws),
                           maximum_iterations=steps)
    _, pred = step(L, p, ws, qx, tf.zeros_like(ts[0]))  # its forward part is the query
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(qy, 3.0 * pred))


def make(L, forward_only=False):
    """The compiled meta-gradient (loss and d loss / d genome) in layout ``L``, or with
    ``forward_only`` the meta-loss alone (what a CMA-ES stage evaluates)."""

    @tf.function(jit_compile=True)
    def grad(p, ws, xs, ts, qx, qy):
        if forward_only:
            return (meta_loss(L, p, ws, xs, ts, qx, qy),)
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = meta_loss(L, p, ws, xs, ts, qx, qy)
        return loss, tape.gradient(loss, p)

    return grad


def library_config():
    """The ``BlurConfig`` this restatement is of (``meta_step.py``'s)."""
    from blur_keras import BlurConfig
    return BlurConfig(activation_norm=True, synapse_norm=True)


def library_meta_gradient(xs, ts, qx, qy):
    """The library's own compiled meta-gradient of the same setting (``meta.unroll.meta_loss``:
    fresh synapses from a seed, then the same T steps and query) and its inputs."""
    from blur_keras.meta.objective.unroll import meta_loss

    config = library_config()
    params = {n: v[None] for n, v in genome_params().items()}  # one species
    labels = tf.argmax(ts, axis=-1, output_type=tf.int32)
    batch = {"train_x": xs[:, None, None], "train_y": labels[:, None, None],
             "query_x": qx[None, None], "query_y": qy[None, None]}

    @tf.function(jit_compile=True)
    def grad(params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = tf.reduce_sum(meta_loss(params, tf.constant([1, 2], tf.int64), batch, config,
                                           SIZES, logit_scale=3.0)[0])
        return loss, tape.gradient(loss, params)

    return grad, (params,)


def genome_params():
    """The genome entries this configuration reads, from ``meta_step.py``'s random genome."""
    from blur_keras import Genome
    genome = Genome.random(K, seed=0, transform_std=0.5, synapse_update=-0.01)
    return {n: tf.constant(v) for n, v in genome.params().items()
            if n in ("nu", "mu", "pre", "post", "gamma", "beta", "eta", "f", "f_syn", "eta_syn",
                     "syn_scale")}


def check_against_library(p, rng):
    """One step of ``Last`` and ``Lead`` against ``blur_keras.core.step.inner_step``."""
    from blur_keras.core.step import inner_step
    from blur_keras.core.synapses import init_synapses

    config = library_config()
    synapses = init_synapses(tf.constant([1, 2], tf.int64), SIZES, K, (), config)
    x = tf.constant(np.float32(rng.uniform(size=(B, SIZES[0]))))
    t = tf.constant(np.float32(2 * np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], B)] - 1))
    new, states = inner_step(p, synapses, x, t, config)
    ws = (synapses[0][0], synapses[1][0], synapses[1][1])
    expected = (new[0][0], new[1][0], new[1][1], states[-1][..., 0])
    for L, to_last, atol in ((Last, lambda w: w, 1e-5),
                             (Lead, lambda w: tf.transpose(w, (1, 2, 0)), 0.0)):
        got, pred = step(L, p, tuple(L.synapses(w) for w in ws), x, t)
        for a, b in zip([to_last(w) for w in got] + [pred], expected):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=atol)


def main():
    global K, SIZES, T  # the setting every function here reads
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=SIZES[1])
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--T", type=int, default=T)
    args = parser.parse_args()
    K, SIZES, T = args.k, (SIZES[0], args.hidden, SIZES[2]), args.T
    rng = np.random.default_rng(0)
    p = genome_params()
    check_against_library(p, rng)
    f32 = lambda a: tf.constant(np.float32(a))  # noqa: E731
    w = [rng.normal(size=(n + 1, m, K)) / np.sqrt(n) for n, m in zip(SIZES[:-1], SIZES[1:])]
    w.append(rng.normal(size=(SIZES[2], SIZES[1], K)) / np.sqrt(SIZES[2]))  # V¹
    xs = f32(rng.uniform(size=(T, B, SIZES[0])))
    ts = f32(2 * np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], size=(T, B))] - 1)
    qx = f32(rng.uniform(size=(B, SIZES[0])))
    qy = tf.constant(rng.integers(0, SIZES[-1], size=B), tf.int32)
    print(f"meta-gradient, {'-'.join(map(str, SIZES))}, k={K}, T={T}, batch {B}, XLA on CPU "
          f"({os.cpu_count()} cores); one step checked against blur_keras.core.step.inner_step")
    runs = {}
    for name, L in (("[B, n, k]", Last), ("[k, B, n]", Lead)):
        inputs = (p, [L.synapses(f32(a)) for a in w], xs, ts, qx, qy)
        runs[f"restated, autodiff, {name}"] = (make(L), inputs)
        runs[f"restated, forward only, {name}"] = (make(L, forward_only=True), inputs)
    runs["library, hand-derived reverse, [k, B, n]"] = library_meta_gradient(xs, ts, qx, qy)
    for name, (fn, inputs) in runs.items():
        t0 = time.perf_counter()
        loss = fn(*inputs)[0].numpy()
        print(f"  {name}: first call {time.perf_counter() - t0:.2f} s, meta-loss {loss:.6f}")
    times = {name: [] for name in runs}
    for _ in range(args.rounds):  # in turns
        for name, (fn, inputs) in runs.items():
            t0 = time.perf_counter()
            fn(*inputs)[0].numpy()
            times[name].append(time.perf_counter() - t0)
    print(f"per call, median of {args.rounds} in turns; ratio: restated [B, n, k] (gradient, or "
          f"forward only) / this (quartiles)")
    for name, t in times.items():
        base = times["restated, forward only, [B, n, k]" if "forward" in name else
                     "restated, autodiff, [B, n, k]"]
        ratio = np.array(base) / np.array(t)
        print(f"  {name:42s} {np.median(t) * 1e3:6.1f} ms   ratio {np.median(ratio):.3f} "
              f"({np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f})")

if __name__ == "__main__":
    main()
