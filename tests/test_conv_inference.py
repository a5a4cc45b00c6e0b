"""Batch-independent inference for convolutional BLUR chains (docs/spec.md §9, docs/conv.md):
the statistics a chain step normalises with (per channel and state, over batch and positions)
against NumPy, prediction with given statistics, and their tracking in ``BlurModel``."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import layer_specs as ls
from blur_keras.core import network
from blur_keras.keras import chain

import conv_reference as cref
import reference as ref
from helpers import rand_genome

K, IMAGE = 3, (6, 6, 2)
NORM = bk.BlurConfig(activation_norm=True, hidden_activation="tanh")


def architecture(padding, stride, pool):
    """Conv2D → pooling → Conv2D → Flatten → Dense, as reference dicts and layer specs."""
    return [
        ({"type": "conv", "filters": 3, "kernel": (3, 3), "strides": (stride, stride),
          "padding": padding}, ls.Conv2D(3, 3, stride, padding)),
        ({"type": "pool", "kind": pool, "size": (2, 2), "strides": (2, 2), "padding": "same"},
         ls.Pool2D(pool, 2, 2, "same")),
        ({"type": "conv", "filters": 4, "kernel": (2, 2), "strides": (1, 1), "padding": "same"},
         ls.Conv2D(4, 2, 1, "same")),
        ({"type": "flatten"}, ls.Flatten()),
        ({"type": "dense", "units": 3}, ls.Dense(3)),
    ]


def reference_moments(g, synapses, x, cfg, layers, monkeypatch):
    """The NumPy forward pass (tests/conv_reference.py) with every activation normalisation's
    input recorded: per layer pair the mean and variance over all its rows (batch, and
    positions of a convolution), ``[n, k]``."""
    seen, norm = [], ref.activation_norm

    def recording(u, gamma, beta, eps):
        seen.append((u.mean(axis=0), u.var(axis=0)))
        return norm(u, gamma, beta, eps)

    monkeypatch.setattr(ref, "activation_norm", recording)
    stages = cref.stages_of(layers)
    acts = [cfg.hidden_activation] * (len(stages) - 1) + [cfg.last_activation]
    a = ref.input_states(x, K)
    for l, (trans, L) in enumerate(stages):
        lower = cref.transforms(a, trans)[0]
        a = (cref.conv_forward(lower, synapses[l][0], g, cfg, acts[l], L) if L["type"] == "conv"
             else ref.forward_layer(lower, synapses[l][0], g, cfg, acts[l]))
    monkeypatch.setattr(ref, "activation_norm", norm)
    assert len(seen) == len(stages)
    return seen


def float64_case(padding, stride, pool, seed=0, batch=5):
    layers = architecture(padding, stride, pool)
    specs = tuple(s for _, s in layers)
    g = rand_genome(seed, lead=(), k=K)
    rng = np.random.default_rng(seed)
    synapses = network.init_synapses(seed, IMAGE, specs, K, NORM, scale=1.3, dtype=tf.float64)
    synapses = tuple((w + rng.normal(0, 0.05, w.shape), v) for w, v in synapses)  # biases ≠ 0
    params = {n: tf.constant(v, tf.float64) for n, v in g.items()}
    x = rng.normal(size=(batch,) + IMAGE)
    return g, params, synapses, x, layers, specs


@pytest.mark.parametrize("padding,stride,pool", [("same", 1, "max"), ("valid", 1, "avg"),
                                                 ("same", 2, "avg"), ("valid", 2, "max")])
def test_step_moments_against_numpy(padding, stride, pool, monkeypatch):
    g, params, synapses, x, layers, specs = float64_case(padding, stride, pool)
    got = network.step_moments(params, synapses, x, specs, NORM)
    want = reference_moments(g, [(w.numpy(), v.numpy()) for w, v in synapses], x, NORM,
                             [L for L, _ in layers], monkeypatch)
    for l, ((mean, var), (w_mean, w_var)) in enumerate(zip(got, want)):
        assert mean.shape == w_mean.shape == (specs_units(specs)[l], K)
        np.testing.assert_allclose(mean.numpy(), w_mean, rtol=1e-9, atol=1e-12, err_msg=f"{l}")
        np.testing.assert_allclose(var.numpy(), w_var, rtol=1e-9, atol=1e-12, err_msg=f"{l}")


def specs_units(specs):
    return [s.filters if isinstance(s, ls.Conv2D) else s.units for s in specs
            if isinstance(s, (ls.Conv2D, ls.Dense))]


@pytest.mark.parametrize("padding,stride", [("same", 2), ("valid", 1)])
def test_predict_with_the_batch_moments_equals_batch_statistics(padding, stride):
    _, params, synapses, x, _, specs = float64_case(padding, stride, "max", seed=1, batch=9)
    moments = network.step_moments(params, synapses, x, specs, NORM)
    batch = network.predict(params, synapses, x, specs, NORM)
    tracked = network.predict(params, synapses, x, specs, NORM, moments=moments)
    np.testing.assert_allclose(tracked.numpy(), batch.numpy(), rtol=1e-5, atol=1e-5)
    states = network.forward_pass(params, synapses, x, specs, NORM, moments=moments)
    for got, want in zip(states, network.forward_pass(params, synapses, x, specs, NORM)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    # a batch of one keeps the whole batch's normalisation, so its row
    one = network.predict(params, synapses, x[3:4], specs, NORM, moments=moments)
    np.testing.assert_allclose(one.numpy(), batch.numpy()[3:4], rtol=1e-5, atol=1e-5)
    # other statistics give other predictions
    shifted = [(m + 0.5, v) for m, v in moments]
    other = network.predict(params, synapses, x, specs, NORM, moments=shifted)
    assert np.abs(other.numpy() - batch.numpy()).max() > 1e-3


def test_moments_of_the_wrong_shape_name_the_layer():
    _, params, synapses, x, _, specs = float64_case("same", 1, "max")
    moments = network.step_moments(params, synapses, x, specs, NORM)
    with pytest.raises(ValueError, match=r"Layer pair 1 \(Conv2D\) has moments"):
        network.predict(params, synapses, x, specs, NORM,
                        moments=[moments[0], moments[0], moments[2]])
    with pytest.raises(ValueError, match="3 layer pairs but got 2 moments"):
        network.predict(params, synapses, x, specs, NORM, moments=moments[:2])


def test_moments_path_under_xla_equals_eager():
    _, params, synapses, x, _, specs = float64_case("same", 2, "avg", seed=2, batch=8)
    x = tf.constant(x)
    eager = network.step_moments(params, synapses, x, specs, NORM)
    compiled = tf.function(lambda s, xx: network.step_moments(params, s, xx, specs, NORM),
                           jit_compile=True, autograph=False)(synapses, x)
    for a, b in zip(tf.nest.flatten(eager), tf.nest.flatten(compiled)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)
    predict = tf.function(lambda s, xx, m: network.predict(params, s, xx, specs, NORM,
                                                           moments=m),
                          jit_compile=True, autograph=False)
    for rows in (x, x[:1]):
        np.testing.assert_allclose(predict(synapses, rows, eager).numpy(),
                                   network.predict(params, synapses, rows, specs, NORM,
                                                   moments=eager).numpy(),
                                   rtol=1e-9, atol=1e-12)


# -- BlurModel -----------------------------------------------------------------------------------
def conv_net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(IMAGE), bk.BlurConv2D(3, 3, k=K, padding="same"),
                             bk.BlurMaxPooling2D(), bk.BlurConv2D(4, 2, strides=2, k=K),
                             bk.BlurFlatten(), bk.BlurDense(3, k=K)])


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + IMAGE).astype("f4")
    return x, (x[:, :3, :3, 0].mean((1, 2)) > 0).astype("i8") + (x[:, 3:, 3:, 1].mean((1, 2)) > 0)


def conv_model(inference="moving", **kwargs):
    return bk.BlurModel(conv_net(), bk.Genome.random(K, seed=1), NORM, inference=inference,
                        **kwargs)


def test_model_tracks_what_its_steps_normalised_with():
    model = conv_model(inference_momentum=0.5)
    x, y = data()
    model.build((None,) + IMAGE)
    specs, fwd = chain.chain_specs(model._stack.chain), model.activations[0]
    expected = [(np.zeros((n, K)), np.ones((n, K))) for n in (3, 4, 3)]
    for t in range(4):
        xb, yb = x[16 * t:16 * (t + 1)], y[16 * t:16 * (t + 1)]
        batch = network.step_moments(model.genome.params(), model.synapses(), xb, specs,
                                     model.config, False, fwd)
        a = max(0.5, 1.0 / (t + 1))  # equal averages for two steps, then exponential
        expected = [tuple((1 - a) * e + a * b.numpy() for e, b in zip(ex, bm))
                    for ex, bm in zip(expected, batch)]
        model.step(xb, yb)
    for layer, (mean, var) in zip(model.blur_layers, expected):
        assert layer.moving_mean.shape == mean.shape
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)
    assert int(model.moments_count.numpy()) == 4
    assert np.abs(model.blur_layers[0].moving_mean.numpy()).max() > 1e-3


def test_fit_then_predict_does_not_depend_on_the_batch():
    model = conv_model()
    x, y = data()
    model.compile(jit_compile=True)  # the step, its statistics and predict under XLA
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert int(model.moments_count.numpy()) == 8
    full = model.predict(x, batch_size=64, verbose=0)
    for i in (0, 37):
        np.testing.assert_allclose(model.predict(x[i:i + 1], verbose=0), full[i:i + 1],
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model(x[5:6]).numpy(), full[5:6], rtol=1e-5, atol=1e-5)
    specs, fwd = chain.chain_specs(model._stack.chain), model.activations[0]
    moments = [(l.moving_mean, l.moving_variance) for l in model.blur_layers]
    pure = network.predict(model.genome.params(), model.synapses(), x, specs, model.config,
                           forward_activations=fwd, moments=moments)
    np.testing.assert_allclose(full, pure.numpy(), rtol=1e-5, atol=1e-5)
    batch = network.predict(model.genome.params(), model.synapses(), x, specs, model.config,
                            forward_activations=fwd)
    assert np.abs(full - batch.numpy()).max() > 1e-3
    assert np.ptp(full, axis=0).max() > 1e-3  # not constant


def test_batch_inference_still_normalises_over_the_batch():
    model = conv_model(inference="batch")
    x, y = data()
    model.compile(jit_compile=False)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    specs, fwd = chain.chain_specs(model._stack.chain), model.activations[0]
    batch = network.predict(model.genome.params(), model.synapses(), x[:16], specs,
                            model.config, forward_activations=fwd)
    np.testing.assert_allclose(model.predict(x[:16], verbose=0), batch.numpy(), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="batch of 1"):
        model.predict(x[:1], verbose=0)


def test_keras_round_trip_keeps_the_statistics(tmp_path):
    model = conv_model()
    x, y = data()
    model.compile(jit_compile=False)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "conv_moving.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.inference == "moving"
    assert int(loaded.moments_count.numpy()) == int(model.moments_count.numpy()) == 4
    for a, b in zip(model.blur_layers, loaded.blur_layers):
        assert a.moving_mean.shape == (a.units if isinstance(a, bk.BlurDense) else a.filters, K)
        np.testing.assert_array_equal(a.moving_mean.numpy(), b.moving_mean.numpy())
        np.testing.assert_array_equal(a.moving_variance.numpy(), b.moving_variance.numpy())
    assert not np.allclose(loaded.blur_layers[1].moving_variance.numpy(), 1.0)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.predict(x[:1], verbose=0),
                                  model.predict(x[:1], verbose=0))


def test_a_file_without_the_statistics_loads_the_synapses():
    """A BlurConv2D saved before it tracked statistics stored two variables, the synapses."""
    layer = conv_net().layers[0]
    w, v = (np.random.default_rng(3).normal(size=t.shape).astype("f4")
            for t in (layer.forward_synapses, layer.backward_synapses))
    layer.load_own_variables({"0": w, "1": v})
    np.testing.assert_array_equal(layer.forward_synapses.numpy(), w)
    np.testing.assert_array_equal(layer.backward_synapses.numpy(), v)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros((3, K)))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.ones((3, K)))
    with pytest.raises(ValueError):
        layer.load_own_variables({"0": w})
