"""Helpers shared by the test modules."""

import numpy as np


def toy_data(seed=0, n=128, width=12, classes=3):
    """Gaussian inputs ``[n, width]`` and labels from the signs of the first two features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype("f4")
    y = ((x[:, 0] > 0).astype("i8") + (x[:, 1] > 0)) % classes
    return x, y
