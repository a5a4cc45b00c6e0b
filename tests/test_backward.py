"""Step 4 of the inner step, backward layer (blur_keras.core.backward),
against the independent float64 NumPy reference (tests/reference.py);
shared setup in tests/helpers.py (S = 2 species, R = 3 replicas, k = 3, non-square layers).
"""

import pytest

from blur_keras import BlurConfig
from blur_keras.core.backward import backward_layer

from helpers import (
    S, R, K, B, N_LO, N_UP, rand_genome, tf_params, member, rand, rand_w, tfi, pub, close,
    per_member,
)
from helpers import reference as ref


@pytest.mark.parametrize("act", ["relu_tanh", "linear", "backprop_tanh"])
@pytest.mark.parametrize("rule", ["additive", "multiplicative", "multiplicative_second"])
def test_backward_layer(rule, act):
    g = rand_genome(30)
    a_up = rand(31, (S, R, B, N_UP, K))
    a_cur = rand(32, (S, R, B, N_LO, K))
    v = rand_w(33, N_UP, N_LO, bias=False)
    cfg = BlurConfig(backward_rule=rule)
    out = pub(backward_layer(tfi(a_up), tfi(a_cur), tfi(v), tf_params(g), cfg, act))
    expected = per_member(lambda s, r: ref.backward_layer(
        a_up[s, r], a_cur[s, r], v[s, r], member(g, s), cfg, act))
    close(out, expected)


def test_multiplicative_second_keeps_state0():
    g = rand_genome(34)
    a_up = rand(35, (S, R, B, N_UP, K))
    a_cur = rand(36, (S, R, B, N_LO, K))
    v = rand_w(37, N_UP, N_LO, bias=False)
    cfg = BlurConfig(backward_rule="multiplicative_second")
    out = pub(backward_layer(tfi(a_up), tfi(a_cur), tfi(v), tf_params(g), cfg, "linear"))
    f = g["f"][:, None, None, None, None]
    close(out[..., 0], (f * a_cur)[..., 0])
