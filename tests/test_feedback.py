"""Step 3 of the inner step, feedback (blur_keras.core.feedback),
against the independent float64 NumPy reference (tests/reference.py);
shared setup in tests/helpers.py (S = 2 species, R = 3 replicas, k = 3, non-square layers).
"""

import numpy as np
import pytest

from blur_keras.core.feedback import apply_feedback

from helpers import S, R, K, B, rand, tfc, tfi, pub, close, per_member, one_hot_pm
from helpers import reference as ref


@pytest.mark.parametrize("targets_lead", [(), (S, R)], ids=["broadcast", "population"])
@pytest.mark.parametrize("mode", ["target", "error"])
def test_feedback(mode, targets_lead):
    a = rand(20, (S, R, B, 2, K))
    if mode == "target":
        y = one_hot_pm(21, targets_lead, 2)
    else:
        y = rand(21, targets_lead + (B, 2))
    out = pub(apply_feedback(tfi(a), tfc(y), mode))
    yb = np.broadcast_to(y, (S, R, B, 2))
    expected = per_member(lambda s, r: ref.feedback(a[s, r], yb[s, r], mode))
    close(out, expected)
    close(out[..., 0], a[..., 0])
    assert np.all(out[..., 2:] == 0)
