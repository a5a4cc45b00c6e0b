"""Steps 1–2 of the inner step, reset and forward layer (blur_keras.core.forward, blur_keras.core.states),
against the independent float64 NumPy reference (tests/reference.py);
shared setup in tests/helpers.py (S = 2 species, R = 3 replicas, k = 3, non-square layers).
"""

import numpy as np
import pytest

from blur_keras import BlurConfig

from blur_keras.core import activations
from blur_keras.core.forward import forward_layer, input_states
from blur_keras.core.states import with_bias_neuron

from helpers import (
    S, R, K, B, N_LO, N_UP, rand_genome, tf_params, member, rand, rand_w, tfc, tfi, pub, close,
    per_member,
)
from helpers import reference as ref


def test_input_states():
    x = rand(5, (S, R, B, N_LO))
    a = pub(input_states(tfc(x), K))
    close(a, ref.input_states(x, K))
    assert np.all(a[..., 1:] == 0)


def test_with_bias_neuron():
    a = rand(6, (S, R, B, N_LO, K))
    out = pub(with_bias_neuron(tfi(a)))
    assert out.shape == (S, R, B, N_LO + 1, K)
    close(out[..., :N_LO, :], a)
    assert np.all(out[..., N_LO, :] == 1.0)


@pytest.mark.parametrize("with_current", [False, True], ids=["reset", "current"])
@pytest.mark.parametrize("act", activations.names())
def test_forward_layer(act, with_current):
    g = rand_genome(11)
    a = rand(12, (S, R, B, N_LO, K))
    w = rand_w(13, N_LO, N_UP)
    cur = rand(14, (S, R, B, N_UP, K)) if with_current else None
    cfg = BlurConfig()
    out = pub(forward_layer(tfi(a), tfi(w), tf_params(g), cfg, act,
                            current=None if cur is None else tfi(cur)))
    expected = per_member(lambda s, r: ref.forward_layer(
        a[s, r], w[s, r], member(g, s), cfg, act, None if cur is None else cur[s, r]))
    close(out, expected)


def test_forward_layer_bias_row_enters_as_bias():
    """Only the bias row is non-zero: z[b, j, c] = Σ_d ν[d, c] W[n, j, c] for every input."""
    g = rand_genome(15)
    a = rand(16, (S, R, B, N_LO, K))
    w = rand_w(17, N_LO, N_UP)
    w[..., :N_LO, :, :] = 0.0
    out = pub(forward_layer(tfi(a), tfi(w), tf_params(g), BlurConfig(), "linear"))
    for s in range(S):
        for r in range(R):
            z = np.einsum("dc,jc->jc", member(g, s)["nu"], w[s, r, N_LO])
            close(out[s, r], np.broadcast_to(member(g, s)["eta"] * z, (B, N_UP, K)))
