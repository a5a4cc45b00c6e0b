"""One inner step of conv/pool/flatten/dense BLUR chains against the independent NumPy
reference (tests/conv_reference.py): a random non-symmetric genome, k = 3, every option."""

import numpy as np
import pytest
import tensorflow as tf

import blur_keras as bk
from blur_keras.core import layer_specs as ls
from blur_keras.core import network

import conv_reference as cref
from helpers import rand_genome

K, B = 3, 4

CONFIGS = {
    "norms_oja_saturation_additive_mean": bk.BlurConfig(
        activation_norm=True, synapse_norm=True, oja=True, saturation=True,
        batch_reduction="mean"),
    "ties_second_error_sum": bk.BlurConfig(
        activation_norm=True, synapse_norm=True, oja=True, saturation=True, symmetric=True,
        single_state=True, backward_rule="multiplicative_second", feedback="error",
        hidden_activation="tanh", backward_activation="tanh"),
    "multiplicative_single_state": bk.BlurConfig(
        oja=True, saturation=True, single_state=True, backward_rule="multiplicative",
        hidden_activation="tanh", last_activation="linear", backward_activation="sigmoid"),
}

ARCHITECTURES = {
    "conv_max_conv_avg_flatten_dense": ((7, 7, 2), [
        ({"type": "conv", "filters": 3, "kernel": (3, 2), "strides": (1, 1), "padding": "same"},
         ls.Conv2D(3, (3, 2), 1, "same")),
        ({"type": "pool", "kind": "max", "size": (2, 2), "strides": (2, 2), "padding": "valid"},
         ls.Pool2D("max")),
        ({"type": "conv", "filters": 4, "kernel": (2, 2), "strides": (1, 1), "padding": "valid"},
         ls.Conv2D(4, 2)),
        ({"type": "pool", "kind": "avg", "size": (2, 2), "strides": (1, 1), "padding": "same"},
         ls.Pool2D("avg", 2, 1, "same")),
        ({"type": "flatten"}, ls.Flatten()),
        ({"type": "dense", "units": 3}, ls.Dense(3)),
    ]),
    "pool_input_strided_conv_dense_dense": ((8, 6, 1), [
        ({"type": "pool", "kind": "max", "size": (3, 3), "strides": (1, 1), "padding": "same"},
         ls.Pool2D("max", 3, 1, "same")),
        ({"type": "conv", "filters": 3, "kernel": (3, 3), "strides": (2, 2), "padding": "same"},
         ls.Conv2D(3, 3, 2, "same")),
        ({"type": "conv", "filters": 2, "kernel": (2, 3), "strides": (2, 1), "padding": "valid"},
         ls.Conv2D(2, (2, 3), (2, 1), "valid")),
        ({"type": "flatten"}, ls.Flatten()),
        ({"type": "dense", "units": 4}, ls.Dense(4)),
        ({"type": "dense", "units": 3}, ls.Dense(3)),
    ]),
}


def genome():
    g = rand_genome(5, lead=())
    g["oja"] = -g["oja"]  # |m| is what counts
    return g


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
def test_conv_inner_step_matches_numpy_reference(arch, cfg_name):
    cfg = CONFIGS[cfg_name]
    image, layers = ARCHITECTURES[arch]
    specs = tuple(s for _, s in layers)
    g = genome()
    synapses = network.init_synapses(3, image, specs, K, cfg, scale=1.3, dtype=tf.float64)
    rng = np.random.default_rng(7)
    synapses = tuple((w + rng.normal(0, 0.05, w.shape) * (w.shape[0] != 1),
                      v.numpy()) for w, v in synapses)  # non-zero biases
    if cfg.single_state or cfg.symmetric:
        synapses = network.pairs_out(tuple(
            network.sync_pair(*network.pairs_in(((tf.constant(w), tf.constant(v)),))[0], stage, cfg)
            for (w, v), stage in zip(synapses, ls.plan(image, specs))))
        synapses = tuple((w.numpy(), v.numpy()) for w, v in synapses)
    x = rng.normal(size=(B,) + image)
    y = np.where(rng.integers(0, 3, B)[:, None] == np.arange(3), 1.0, -1.0)
    params = {n: tf.constant(v, tf.float64) for n, v in g.items()}
    new, states = network.inner_step(params, tuple((tf.constant(w), tf.constant(v))
                                                   for w, v in synapses), x, y, specs, cfg)
    want_new, want_states = cref.inner_step(g, synapses, x, y, cfg, [L for L, _ in layers])
    for l, (got, want) in enumerate(zip(states, want_states)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=1e-9, err_msg=f"state {l}")
    for l, ((w, v), (ww, wv)) in enumerate(zip(new, want_new)):
        np.testing.assert_allclose(w.numpy(), ww, rtol=1e-7, atol=1e-9, err_msg=f"W{l}")
        np.testing.assert_allclose(v.numpy(), wv, rtol=1e-7, atol=1e-9, err_msg=f"V{l}")
        assert not np.allclose(w.numpy(), synapses[l][0])
    if not cfg.symmetric:
        assert not np.allclose(new[1][1].numpy(), synapses[1][1])


def test_reference_is_sensitive_to_a_transposed_transform():
    cfg = CONFIGS["norms_oja_saturation_additive_mean"]
    image, layers = ARCHITECTURES["conv_max_conv_avg_flatten_dense"]
    specs = tuple(s for _, s in layers)
    g = genome()
    synapses = network.init_synapses(3, image, specs, K, cfg, dtype=tf.float64)
    x = np.random.default_rng(1).normal(size=(B,) + image)
    y = np.ones((B, 3))
    swapped = {**g, "post": g["post"].T}
    got, _ = network.inner_step({n: tf.constant(v) for n, v in swapped.items()}, synapses, x, y,
                                specs, cfg)
    want, _ = cref.inner_step(g, [(w.numpy(), v.numpy()) for w, v in synapses], x, y, cfg,
                              [L for L, _ in layers])
    assert not np.allclose(got[1][0].numpy(), want[1][0], rtol=1e-4)
