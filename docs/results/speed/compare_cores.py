"""One meta-loss and its gradient at the default run's setting, from two checkouts of the core.

docs/speed.md ("The core in the state-leading layout", "Not the same bits") cites it:

    git worktree add /tmp/core_before 0962f33
    python docs/results/speed/compare_cores.py /tmp/core_before save /tmp/cores.npz
    python docs/results/speed/compare_cores.py . check /tmp/cores.npz

Setting: k = 2, 100-32-10, the default recipe's ``backprop_config`` (batch mean, activation
norm, no Oja), T = 20 inner steps, two species of a random genome, trajectory weight 0.5,
``meta_loss`` and ``tape.gradient`` eagerly and under XLA. ``save`` writes the loss and every
gradient entry of the checkout given; ``check`` prints, per entry, the largest difference
from the saved ones and the saved entry's largest magnitude.
"""

import sys

import numpy as np


def compute(root):
    sys.path.insert(0, root)
    import tensorflow as tf

    import blur_keras as bk
    from blur_keras.core.config import backprop_config
    from blur_keras.meta.objective.unroll import meta_loss

    cfg = backprop_config(batch_reduction="mean", activation_norm=True, oja=False)
    genome = bk.Genome.random(2, seed=0, species=2, transform_std=0.5, synapse_update=-0.01)
    params = {n: tf.constant(v) for n, v in genome.params().items()}
    rng = np.random.default_rng(0)
    T, R, B, F, C = 20, 1, 32, 100, 10
    batch = {"train_x": rng.uniform(0, 1, (T, 1, R, B, F)).astype("f4"),
             "train_y": rng.integers(0, C, (T, 1, R, B)),
             "query_x": rng.uniform(0, 1, (1, R, 64, F)).astype("f4"),
             "query_y": rng.integers(0, C, (1, R, 64))}

    def run(params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss, _ = meta_loss(params, tf.constant([1, 2], tf.int64), batch, cfg, (F, 32, C),
                                trajectory_weight=0.5)
            total = tf.reduce_sum(loss)
        return loss, tape.gradient(total, params)

    out = {}
    for jit in (False, True):
        loss, grads = tf.function(run, jit_compile=jit)(params)
        out[f"loss_xla={jit}"] = loss.numpy()
        out.update({f"{n}_xla={jit}": v.numpy() for n, v in grads.items()})
    return out


def main():
    root, mode, path = sys.argv[1:4]
    out = compute(root)
    if mode == "save":
        np.savez(path, **out)
        return
    saved = np.load(path)
    for name, value in out.items():
        print(f"{name}: max |Δ| {np.max(np.abs(value - saved[name])):.3g}, "
              f"max |saved| {np.max(np.abs(saved[name])):.3g}")


if __name__ == "__main__":
    main()
