"""Batch-independent inference: tracked normalisation statistics (core and BlurModel)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import normalization
from blur_keras.core.step import forward_moments, moments_out
from blur_keras.core.layout import pairs_in

NORM = bk.BlurConfig(activation_norm=True, hidden_activation="tanh")


def _net(sizes=(12, 8, 3), k=2, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],))] + [bk.BlurDense(n, k=k) for n in sizes[1:]]
    return keras.Sequential(layers)


def _model(inference="moving", seed=0, genome=None, **kwargs):
    genome = genome or bk.Genome.random(k=2, seed=1)
    return bk.BlurModel(_net(seed=seed), genome, config=NORM, inference=inference, **kwargs)


def _data(n=96, seed=0, sort=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("f4")
    y = ((x[:, 0] > 0).astype("i8") + (x[:, 1] > 0)) % 3
    if sort:
        order = np.argsort(y, kind="stable")
        x, y = x[order], y[order]
    return x, y


def test_track_moments_against_numpy():
    """Equal averages for the first 1/(1-m) updates, then an exponential average."""
    rng = np.random.default_rng(0)
    batches = rng.normal(size=(25, 3, 4))
    moving, expected = np.zeros((3, 4)), np.zeros((3, 4))
    for t, b in enumerate(batches):
        moving = normalization.track_moments(tf.constant(moving), tf.constant(b), t, 0.8).numpy()
        a = max(0.2, 1.0 / (t + 1))
        expected = (1 - a) * expected + a * b
    np.testing.assert_allclose(moving, expected, rtol=1e-12)
    first = normalization.track_moments(tf.zeros(4, tf.float64), tf.constant(batches[0, 0]), 0,
                                        0.99)
    np.testing.assert_allclose(first.numpy(), batches[0, 0])  # no bias towards the start value


def test_predict_with_the_batch_moments_equals_batch_normalisation():
    genome = bk.Genome.random(k=3, seed=2)
    params = genome.params(tf.float64)
    synapses = bk.init_synapses(3, (6, 5, 4), 3, config=NORM, dtype=tf.float64)
    x = tf.constant(np.random.default_rng(1).normal(size=(7, 6)))
    moments = moments_out(forward_moments(params, pairs_in(synapses), x, NORM))
    batch = bk.predict(params, synapses, x, NORM)
    tracked = bk.predict(params, synapses, x, NORM, moments=moments)
    np.testing.assert_allclose(tracked.numpy(), batch.numpy(), rtol=1e-9, atol=1e-12)
    one = bk.predict(params, synapses, x[:1], NORM, moments=moments)
    np.testing.assert_allclose(one.numpy(), batch.numpy()[:1], rtol=1e-9, atol=1e-12)


def test_forward_moments_against_numpy():
    """Layer 1's statistics: mean and variance over the batch of η (x W[:n] ν[0] + Σν W[n])."""
    genome = bk.Genome.random(k=2, seed=3)
    params = genome.params(tf.float64)
    cfg = NORM.replace(synapse_norm=False)
    synapses = bk.init_synapses(4, (5, 3, 2), 2, config=cfg, dtype=tf.float64)
    x = np.random.default_rng(2).normal(size=(9, 5))
    mean, var = moments_out(forward_moments(params, pairs_in(synapses), tf.constant(x), cfg))[0]
    w = synapses[0][0].numpy()  # [n + 1, m, k]
    nu, eta = params["nu"].numpy(), float(params["eta"].numpy())
    u = eta * np.stack([nu[0, c] * x @ w[:-1, :, c] + nu[:, c].sum() * w[-1, :, c]
                        for c in range(2)], -1)  # [B, m, k]
    np.testing.assert_allclose(mean.numpy(), u.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), u.var(0), rtol=1e-9, atol=1e-12)


def test_model_tracks_what_its_steps_normalised_with():
    model = _model()
    x, y = _data()
    model.build((None, 12))
    expected = [(np.zeros((n, 2)), np.ones((n, 2))) for n in (8, 3)]
    fwd, _ = model.activations
    for t in range(3):
        xb, yb = x[32 * t:32 * (t + 1)], y[32 * t:32 * (t + 1)]
        params = model.genome.params(model.synapse_dtype)
        batch = moments_out(forward_moments(params, pairs_in(model.synapses()), tf.constant(xb),
                                            NORM, False, fwd))
        a = max(0.1, 1.0 / (t + 1))
        expected = [tuple((1 - a) * e + a * b.numpy() for e, b in zip(ex, bm))
                    for ex, bm in zip(expected, batch)]
        model.step(xb, yb)
    for layer, (mean, var) in zip(model.blur_layers, expected):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)
    assert int(model.moments_count.numpy()) == 3


def test_model_call_equals_pure_predict_with_the_tracked_moments():
    model = _model()
    x, y = _data()
    model.compile()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    moments = [(l.moving_mean, l.moving_variance) for l in model.blur_layers]
    pure = bk.predict(model.genome.params(), model.synapses(), x, model.config,
                      forward_activations=model.activations[0], moments=moments)
    np.testing.assert_allclose(model(x).numpy(), pure.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sort", [False, True])
def test_evaluate_does_not_depend_on_the_batch(sort):
    model = _model()
    x, y = _data(192)
    model.compile()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    xt, yt = _data(120, seed=5, sort=sort)
    scores = [model.evaluate(xt, yt, batch_size=b, verbose=0, return_dict=True)["accuracy"]
              for b in (1, 10, 100, 1000)]
    assert max(scores) - min(scores) <= 0.005, scores
    one = model.predict(xt[:1], verbose=0)
    np.testing.assert_allclose(one, model.predict(xt, verbose=0)[:1], rtol=1e-5, atol=1e-6)
    assert np.ptp(model.predict(xt[:5], verbose=0), axis=0).max() > 1e-3  # not constant


def test_batch_mode_refuses_a_batch_of_one_everywhere():
    model = _model(inference="batch")
    x, y = _data()
    model.compile()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for call in (lambda: model.predict(x[:1], verbose=0), lambda: model(x[:1]),
                 lambda: model.evaluate(x[:33], y[:33], batch_size=32, verbose=0),
                 lambda: model.predict(x[:65], batch_size=32, verbose=0)):
        with pytest.raises(ValueError, match="batch of 1"):
            call()


def test_fit_refuses_a_remainder_batch_of_one():
    model = _model()
    x, y = _data(33)
    with pytest.raises(ValueError, match="last batch of 1"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    before = [w.numpy() for w in model.synapses()[0]]
    with pytest.raises(ValueError, match="batch of 1"):
        model.fit(ds, epochs=1, verbose=0)
    after = model.synapses()[0]
    assert not np.allclose(before[0], after[0].numpy())  # the first batch trained
    count = int(model.moments_count.numpy())
    assert count == 1, count  # the batch of one was not recorded


def test_tracked_statistics_are_saved(tmp_path):
    model = _model()
    x, y = _data()
    model.compile()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.inference == "moving"
    np.testing.assert_allclose(loaded.predict(x[:1], verbose=0), model.predict(x[:1], verbose=0),
                               rtol=1e-6)
    np.testing.assert_allclose(loaded.blur_layers[0].moving_variance.numpy(),
                               model.blur_layers[0].moving_variance.numpy())


def test_bad_inference_options():
    with pytest.raises(ValueError, match="inference="):
        _model(inference="population")
    with pytest.raises(ValueError, match="inference_momentum"):
        _model(inference_momentum=1.0)


# -- the meta-objective judges the rule as BlurModel predicts ---------------------------------

def _toy_batch(T=5, S=2, R=2, B=8, Bq=6, seed=0):
    rng = np.random.default_rng(seed)
    tx = rng.uniform(-1, 1, (T, S, R, B, 3))
    qx = rng.uniform(-1, 1, (S, R, Bq, 3))
    label = lambda x: (x[..., 0] + 0.5 * x[..., 1] > 0).astype(np.int32)  # noqa: E731
    return {"train_x": tx, "train_y": label(tx), "query_x": qx, "query_y": label(qx)}


def _species_params(seed=4):
    genome = bk.Genome.random(2, seed=seed, species=2, transform_std=0.5, synapse_update=-0.05)
    return {n: tf.constant(v, tf.float64) for n, v in genome.numpy().items()}


def test_meta_loss_moving_inference_equals_the_model_loop():
    """T steps tracking statistics as BlurModel does, then the query normalised with them."""
    from blur_keras.core.step import step
    from blur_keras.meta.objective.unroll import init_population_synapses, meta_loss, pm1_targets
    from blur_keras.core.layout import pairs_out
    cfg, sizes, batch = NORM, (3, 5, 2), _toy_batch()
    params, seed = _species_params(), tf.constant([1, 2], tf.int64)
    _, aux = meta_loss(params, seed, batch, cfg, sizes, inference="moving",
                       inference_momentum=0.7)
    synapses = pairs_in(init_population_synapses(seed, sizes, 2, 2, 2, cfg, 1.0, tf.float64))
    moments = None
    for t in range(5):
        x = tf.constant(batch["train_x"][t])
        batch_m = forward_moments(params, synapses, x, cfg)
        moments = batch_m if moments is None else normalization.track_moments(moments, batch_m,
                                                                                t, 0.7)
        targets = pm1_targets(batch["train_y"][t], 2, tf.float64)
        synapses, _ = step(params, synapses, x, targets, cfg)
    out = bk.predict(params, pairs_out(synapses), batch["query_x"], cfg, moments=moments_out(moments))
    hit = np.argmax(out.numpy(), -1) == batch["query_y"]
    np.testing.assert_allclose(aux["accuracy"].numpy(), hit.mean(axis=(1, 2)), atol=1e-6)
    one_query = dict(batch, query_x=batch["query_x"][:, :, :1], query_y=batch["query_y"][:, :, :1])
    _, aux1 = meta_loss(params, seed, one_query, cfg, sizes, inference="moving",
                        inference_momentum=0.7)
    np.testing.assert_allclose(aux1["accuracy"].numpy(), hit[:, :, :1].mean(axis=(1, 2)))


def test_meta_gradient_through_tracked_statistics_with_recomputation():
    from blur_keras.meta.objective.unroll import meta_loss
    params, seed, batch = _species_params(), tf.constant([3, 4], tf.int64), _toy_batch()

    def grads(recompute):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = tf.reduce_sum(meta_loss(params, seed, batch, NORM, (3, 5, 2),
                                           recompute=recompute, inference="moving")[0])
        return loss, tape.gradient(loss, params)

    loss0, g0 = grads(0)
    loss2, g2 = grads(2)
    np.testing.assert_allclose(loss2.numpy(), loss0.numpy(), rtol=1e-10)
    for name in ("nu", "gamma", "beta", "eta_syn"):
        assert np.all(np.isfinite(g0[name].numpy())) and np.any(g0[name].numpy() != 0), name
        np.testing.assert_allclose(g2[name].numpy(), g0[name].numpy(), rtol=1e-7, atol=1e-12)
    eps, name, index = 1e-6, "gamma", (0, 1)
    plus, minus = dict(params), dict(params)
    base = params[name].numpy()
    plus[name] = tf.constant(base + eps * np.eye(1, base.size, 1).reshape(base.shape))
    minus[name] = tf.constant(base - eps * np.eye(1, base.size, 1).reshape(base.shape))
    total = lambda p: tf.reduce_sum(meta_loss(p, seed, batch, NORM, (3, 5, 2),  # noqa: E731
                                              inference="moving")[0]).numpy()
    fd = (total(plus) - total(minus)) / (2 * eps)
    np.testing.assert_allclose(g0[name].numpy()[index], fd, rtol=1e-4, atol=1e-8)


def test_the_suite_judges_the_rule_as_blur_model_predicts():
    """``Rule(inference="moving")``'s curve equals BlurModel trained on the same batches from
    the same synapses and evaluated (in batches of 7: nothing depends on the batch)."""
    import dataclasses
    from blur_keras.evaluation import suite as ev
    data = ev.synthetic_data("blobs", 6, 3, pool=200, val=40, test=60, seed=0)
    genome = bk.Genome.random(k=2, seed=5)
    rule = ev.Rule("r", genome.numpy(), NORM, inference="moving")
    sizes, steps, batch = (6, 7, 3), (0, 3, 8), 16
    idx = ev.batch_indices(len(data.pool_y), 8, 1, batch, seed=2)
    synapses = ev.initial_synapses(rule, sizes, 1, seed=2)
    curve = ev.blur_curves(rule, synapses, data, idx, steps)[1, :, 0]  # test accuracy
    batch_curve = ev.blur_curves(dataclasses.replace(rule, inference="batch"), synapses, data,
                                 idx, steps)[1, :, 0]
    model = bk.BlurModel(_net(sizes), genome, config=NORM)
    model.build((None, 6))
    model.assign_synapses([(w[0], v[0]) for w, v in synapses])
    model.compile()
    got = []
    for t in range(9):
        if t in steps:
            got.append(model.evaluate(data.test_x, data.test_y, batch_size=7, verbose=0,
                                      return_dict=True)["accuracy"])
        if t < 8:
            model.step(data.pool_x[idx[t, 0]], data.pool_y[idx[t, 0]])
    np.testing.assert_allclose(curve, got, atol=1.5 / len(data.test_y))
    assert batch_curve.shape == curve.shape


@pytest.mark.parametrize("outer", ["adam", "cma"])
def test_outer_trainers_meta_train_in_the_moving_mode(outer):
    """Both outer optimisers take ``inference="moving"``, compile it with XLA and record it in
    their settings (the batch mode, the default, records nothing)."""
    from blur_keras.data import make_task_stream, preset_task
    from blur_keras.meta.outer.cma_es import CMAESTrainer
    from blur_keras.meta.outer.gradient import GradientTrainer
    task = preset_task("and")
    sizes = (task.num_features, 6, task.num_classes)
    genome = bk.Genome.random(2, seed=0, species=2)
    if outer == "adam":
        trainer = GradientTrainer(genome, NORM, sizes, inference="moving", jit_compile=True)
        plain = GradientTrainer(genome, NORM, sizes, jit_compile=False)
    else:
        trainer = CMAESTrainer(genome, NORM, sizes, population_size=2, inference="moving")
        plain = CMAESTrainer(genome, NORM, sizes, population_size=2, jit_compile=False)
    stream = iter(make_task_stream(task, species=trainer.species, replicas=2, batch_size=8,
                                   unroll_steps=3, seed=0))
    metrics = trainer.train_step(next(stream))
    assert np.all(metrics["applied"]) and np.all(np.isfinite(metrics["accuracy"]))
    assert trainer.settings()["inference"] == "moving"
    assert "inference" not in plain.settings()
    with pytest.raises(ValueError, match="inference="):
        GradientTrainer(genome, NORM, sizes, inference="population")


def test_runaway_synapses_are_reported_like_non_finite_ones():
    """A finite but absurd synapse step (eta_syn = -1e30) is caught at the step that makes the
    synapses run away, and the synapses are left as they were."""
    genome = bk.Genome.random(k=2, seed=1)
    genome.assign({"eta_syn": -1e30})
    model = bk.BlurModel(_net(), genome, config=bk.BlurConfig())
    x, y = _data()
    model.build((None, 12))
    before = [t.numpy() for pair in model.synapses() for t in pair]
    with pytest.raises(bk.NonFiniteError, match="beyond"):
        model.step(x[:32], y[:32])
    after = [t.numpy() for pair in model.synapses() for t in pair]
    assert all(np.array_equal(a, b) for a, b in zip(after, before))
