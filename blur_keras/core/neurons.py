"""The neuron update both passes share (docs/spec.md §2): ``f · a + η · drive``, normalised.

``forward`` drives a layer with the input from below, ``backward`` with the
feedback from above; both then apply the layer's activation.
"""

from blur_keras.core.layout import unit_axes
from blur_keras.core.normalization import normalize_activations

__all__ = ["neuron_update", "preactivation", "scalar"]


def scalar(v):
    """A per-population scalar ``[*P]`` broadcast against states ``[*P, k, B, n]``."""
    return unit_axes(v, 3)


def neuron_update(current, drive, params, config, moments=None):
    """Pre-activation ``f · a + η · drive`` (``current=None`` means a freshly reset layer),
    normalised with the genome's γ, β when ``config.activation_norm``: over the batch, or
    with the tracked ``moments`` (``normalization.normalize_activations``)."""
    u = preactivation(current, drive, params)
    if config.activation_norm:
        u = normalize_activations(u, params["gamma"], params["beta"], config.norm_epsilon,
                                  moments)
    return u


def preactivation(current, drive, params):
    """``f · a + η · drive`` before normalisation (``current=None``: ``η · drive``)."""
    u = scalar(params["eta"]) * drive
    if current is not None:
        u = scalar(params["f"]) * current + u
    return u
