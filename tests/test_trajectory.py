"""The trajectory meta-loss (online losses over the unroll) and the residual penalty."""

import numpy as np
import tensorflow as tf

import reference as ref
from blur_keras import BlurConfig, Genome
from blur_keras.meta.outer.adam import adam_update
from blur_keras.meta.outer.gradient import GradientTrainer
from blur_keras.meta.objective.unroll import init_population_synapses, meta_loss

SIZES = (2, 5, 3)
CONFIG = BlurConfig(oja=True)
LOGIT_SCALE = 2.0


def _batch(T=4, R=2, B=6, Bq=8, seed=0):
    rng = np.random.default_rng(seed)
    tx = rng.uniform(-1, 1, (T, 1, R, B, 2))
    qx = rng.uniform(-1, 1, (1, R, Bq, 2))
    label = lambda x: (np.floor(1.5 * (x[..., 0] + 1)).astype(np.int32) % 3)  # noqa: E731
    return {"train_x": tx, "train_y": label(tx), "query_x": qx, "query_y": label(qx)}


def _params():
    genome = Genome.random(2, seed=4, species=1, transform_std=0.7, synapse_update=-0.05)
    return {n: tf.constant(v, tf.float64) for n, v in genome.numpy().items()}


def _xent(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, labels[..., None], -1)[..., 0]


def _numpy_online_loss(params, seed, batch):
    """The mean over steps, replicas and examples of the cross-entropy of each prediction made
    before learning from its batch: an independent NumPy unroll (tests/reference.py)."""
    synapses = init_population_synapses(seed, SIZES, 2, 1, batch["train_x"].shape[2], CONFIG,
                                        dtype=tf.float64)
    genome = {n: v.numpy()[0] for n, v in params.items()}
    losses = []
    for r in range(batch["train_x"].shape[2]):
        syn = [(w.numpy()[0, r], v.numpy()[0, r]) for w, v in synapses]
        for t in range(batch["train_x"].shape[0]):
            x, y = batch["train_x"][t, 0, r], batch["train_y"][t, 0, r]
            targets = 2.0 * np.eye(SIZES[-1])[y] - 1.0
            syn, states = ref.inner_step(genome, syn, x, targets, CONFIG)
            losses.append(_xent(LOGIT_SCALE * states[-1][..., 0], y).mean())
    return float(np.mean(losses))


def test_online_loss_matches_numpy_and_mixes_with_the_query_loss():
    params, batch, seed = _params(), _batch(), tf.constant([3, 9], tf.int64)
    query, aux = meta_loss(params, seed, batch, CONFIG, SIZES, logit_scale=LOGIT_SCALE)
    np.testing.assert_allclose(aux["online_loss"].numpy(), [_numpy_online_loss(params, seed, batch)],
                               rtol=1e-9)
    mixed, _ = meta_loss(params, seed, batch, CONFIG, SIZES, logit_scale=LOGIT_SCALE,
                         trajectory_weight=0.25)
    np.testing.assert_allclose(mixed.numpy(), 0.75 * query.numpy() + 0.25 * aux["online_loss"].numpy(),
                               rtol=1e-12)


def test_trajectory_gradient_matches_finite_differences_and_recomputation():
    params, batch, seed = _params(), _batch(T=5), tf.constant([1, 2], tf.int64)

    def loss_of(p, recompute=0):
        return tf.reduce_sum(meta_loss(p, seed, batch, CONFIG, SIZES, recompute=recompute,
                                       logit_scale=LOGIT_SCALE, trajectory_weight=0.6)[0])

    grads = {}
    for recompute in (0, 2):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_of(params, recompute)
        grads[recompute] = tape.gradient(loss, params)
    eps, checked = 1e-6, 0
    for name, index in [("nu", (0, 0, 1)), ("mu", (0, 1, 0)), ("pre", (0, 1, 1)),
                        ("post", (0, 0, 0)), ("eta_syn", (0,)), ("oja", (0,))]:
        plus, minus = params[name].numpy().copy(), params[name].numpy().copy()
        plus[index] += eps
        minus[index] -= eps
        fd = (loss_of({**params, name: tf.constant(plus)})
              - loss_of({**params, name: tf.constant(minus)})).numpy() / (2 * eps)
        analytic = grads[0][name].numpy()[index]
        assert abs(fd - analytic) <= 1e-5 * max(1.0, abs(fd)), (name, fd, analytic)
        assert abs(grads[2][name].numpy()[index] - analytic) <= 1e-9 * max(1.0, abs(analytic))
        checked += abs(analytic) > 1e-6
    assert checked >= 4


def test_residual_penalty_pulls_towards_the_start_genome():
    start = Genome.backprop(0.1, species=2)
    lam = 0.5
    trainer = GradientTrainer(start, BlurConfig.backprop(), (2, 4, 2), residual_penalty=lam,
                              learning_rate=0.01, clip_norm=None, jit_compile=False)
    values = start.numpy()
    moved = {n: tf.constant(v + 0.1 * (n == "nu")) for n, v in values.items()}
    zeros = {n: tf.zeros_like(v) for n, v in moved.items()}
    out = trainer._apply(moved, zeros, zeros, zeros, tf.zeros([2]), tf.constant([True, True]))
    penalty_grads = {n: 2 * lam * (moved[n] - values[n]) for n in moved}
    expected = adam_update(moved, penalty_grads, zeros, zeros, tf.zeros([2]), learning_rate=0.01,
                           clip_norm=None, trainable=trainer.trainable)
    np.testing.assert_allclose(out[0]["nu"].numpy(), expected[0]["nu"].numpy(), rtol=1e-6)
    # the step moves nu back towards the start, by the learning rate (Adam's first step)
    np.testing.assert_allclose(out[0]["nu"].numpy(), values["nu"] + 0.1 - 0.01, rtol=1e-5)
    assert trainer.settings()["residual_penalty"] == lam
