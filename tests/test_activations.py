"""σ and the state-aware backprop_* activations (blur_keras.core.activations).
"""

import pytest

from blur_keras import BlurConfig

from blur_keras.core import activations
from helpers import S, R, K, B, N_UP, rand, tfc, tfi, pub, close
from helpers import reference as ref


@pytest.mark.parametrize("name", activations.names())
def test_activation(name):
    u = rand(3, (S, R, B, N_UP, K), -2.5, 2.5)
    close(pub(activations.get(name)(tfi(u))), ref.activation(name, u))
    if name.startswith("backprop_"):
        s, ds = ref.sigma(name[len("backprop_"):])
        out = pub(activations.get(name)(tfi(u)))
        close(out[..., 0], s(u[..., 0]))
        close(out[..., 1:], ds(u[..., 1:]))


@pytest.mark.parametrize("name", ["relu_tanh", "tanh", "relu", "sigmoid", "linear"])
def test_derivative_closed_form(name):
    u = rand(4, (7, K), -2.5, 2.5)
    close(activations.derivative(name)(tfc(u)), ref.sigma(name)[1](u))


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="nope"):
        activations.get("nope")
    with pytest.raises(ValueError, match="hidden_activation"):
        BlurConfig(hidden_activation="nope")


@pytest.mark.parametrize("name", ["relu_tanh", "tanh", "relu", "sigmoid", "linear", "identity"])
def test_derivative_from_output_equals_the_derivative(name):
    """σ' from σ's output (the hand-derived step gradient uses it) against σ' from the input."""
    import numpy as np
    import tensorflow as tf

    u = tf.constant(np.linspace(-3.0, 3.0, 101))  # u = 0 (relu's kink) excluded below
    got = activations.derivative_from_output(name)(activations.get(name)(u)).numpy()
    want = activations.derivative(name)(u).numpy()
    np.testing.assert_allclose(got[u.numpy() != 0], want[u.numpy() != 0], rtol=1e-12, atol=1e-12)
    assert activations.derivative_from_output("backprop_" + name.replace("identity", "linear")) \
        is None
