"""docs/spec.md §3 activation and synapse normalisation (blur_keras.core.normalization),
against the independent float64 NumPy reference (tests/reference.py);
shared setup in tests/helpers.py (S = 2 species, R = 3 replicas, k = 3, non-square layers).
"""

import numpy as np
import pytest

from blur_keras import BlurConfig
from blur_keras.core.backward import backward_layer
from blur_keras.core.forward import forward_layer
from blur_keras.core.normalization import normalize_activations, normalize_synapses

from helpers import (
    S, R, K, B, N_LO, N_UP, f32, rand_genome, tf_params, member, rand, rand_w, tfi, pub, close,
    per_member,
)
from helpers import reference as ref


# ---------------------------------------------------------------------------
# §3 activation normalisation
# ---------------------------------------------------------------------------

def test_normalize_activations():
    g = rand_genome(60)
    u = rand(61, (S, R, B, N_UP, K), -2.0, 3.0)
    p = tf_params(g)
    out = pub(normalize_activations(tfi(u), p["gamma"], p["beta"], 1e-3))
    expected = per_member(lambda s, r: ref.activation_norm(
        u[s, r], g["gamma"][s], g["beta"][s], 1e-3))
    close(out, expected)


@pytest.mark.parametrize("where", ["forward", "forward_current", "additive", "multiplicative",
                                   "multiplicative_second"])
def test_activation_norm_in_layers(where):
    g = rand_genome(62)
    a_lo = rand(63, (S, R, B, N_LO, K))
    a_up = rand(64, (S, R, B, N_UP, K))
    p = tf_params(g)
    if where.startswith("forward"):
        cfg = BlurConfig(activation_norm=True, norm_epsilon=1e-2)
        w = rand_w(65, N_LO, N_UP)
        cur = a_up if where == "forward_current" else None
        out = pub(forward_layer(tfi(a_lo), tfi(w), p, cfg, "tanh",
                                current=None if cur is None else tfi(cur)))
        expected = per_member(lambda s, r: ref.forward_layer(
            a_lo[s, r], w[s, r], member(g, s), cfg, "tanh", None if cur is None else cur[s, r]))
    else:
        cfg = BlurConfig(activation_norm=True, backward_rule=where, norm_epsilon=1e-2)
        v = rand_w(66, N_UP, N_LO, bias=False)
        out = pub(backward_layer(tfi(a_up), tfi(a_lo), tfi(v), p, cfg, "tanh"))
        expected = per_member(lambda s, r: ref.backward_layer(
            a_up[s, r], a_lo[s, r], v[s, r], member(g, s), cfg, "tanh"))
    close(out, expected)


# ---------------------------------------------------------------------------
# §3 synapse normalisation (in activations only)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["W", "V"])
def test_normalize_synapses(which):
    g = rand_genome(70)
    m = rand_w(71, N_LO, N_UP) if which == "W" else rand_w(72, N_UP, N_LO, bias=False)
    p = tf_params(g)
    out = pub(normalize_synapses(tfi(m), p["syn_scale"], 1e-8))
    expected = per_member(lambda s, r: ref.synapse_norm(m[s, r], g["syn_scale"][s], 1e-8))
    close(out, expected)
    if which == "W":  # the bias row takes part in the column norm
        w2 = m.copy()
        w2[..., -1, :, :] *= 3.0
        out2 = pub(normalize_synapses(tfi(w2), p["syn_scale"], 1e-8))
        assert np.abs(out2[..., :-1, :, :] - out[..., :-1, :, :]).max() > 1e-3


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_synapse_norm_in_layers(direction):
    g = rand_genome(73)
    a_lo = rand(74, (S, R, B, N_LO, K))
    a_up = rand(75, (S, R, B, N_UP, K))
    cfg = BlurConfig(synapse_norm=True)
    p = tf_params(g)
    if direction == "forward":
        w = f32(5.0 * rand_w(76, N_LO, N_UP))  # large: the norm matters
        w_tf = tfi(w)
        out = pub(forward_layer(tfi(a_lo), w_tf, p, cfg, "tanh"))
        expected = per_member(lambda s, r: ref.forward_layer(
            a_lo[s, r], w[s, r], member(g, s), cfg, "tanh"))
        close(pub(w_tf), w, rtol=0, atol=0)  # stored synapses unchanged
    else:
        v = f32(5.0 * rand_w(77, N_UP, N_LO, bias=False))
        out = pub(backward_layer(tfi(a_up), tfi(a_lo), tfi(v), p, cfg, "tanh"))
        expected = per_member(lambda s, r: ref.backward_layer(
            a_up[s, r], a_lo[s, r], v[s, r], member(g, s), cfg, "tanh"))
    close(out, expected)
