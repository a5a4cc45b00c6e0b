"""The neuron update both passes share (docs/spec.md §2): ``f · a + η · drive``, normalised.

``forward`` drives a layer with the input from below, ``backward`` with the
feedback from above; both then apply the layer's activation.
"""

from blur_keras.core.layout import unit_axes
from blur_keras.core.normalization import normalize_activations_parts

__all__ = ["neuron_update", "neuron_update_parts", "normalized_parts", "preactivation", "scalar"]


def scalar(v):
    """A per-population scalar ``[*P]`` broadcast against states ``[*P, k, B, n]``."""
    return unit_axes(v, 3)


def neuron_update(current, drive, params, config, moments=None):
    """Pre-activation ``f · a + η · drive`` (``current=None`` means a freshly reset layer),
    normalised with the genome's γ, β when ``config.activation_norm``: over the batch, or
    with the tracked ``moments`` (``normalization.normalize_activations``)."""
    return neuron_update_parts(current, drive, params, config, moments)[0]


def neuron_update_parts(current, drive, params, config, moments=None):
    """``neuron_update`` and its intermediates (``normalized_parts``)."""
    return normalized_parts(preactivation(current, drive, params), params, config, moments)


def normalized_parts(u, params, config, moments=None):
    """A pre-activation ``u`` normalised when ``config.activation_norm`` (else ``u`` itself),
    and what a hand-derived reverse reads: ``(out, (u, norm))``, ``norm`` the normalised
    ``û`` and ``1 / sqrt(v + ε)`` (``normalization.normalize_activations_parts``) or None."""
    if not config.activation_norm:
        return u, (u, None)
    out, norm = normalize_activations_parts(u, params["gamma"], params["beta"],
                                            config.norm_epsilon, moments)
    return out, (u, norm)


def preactivation(current, drive, params):
    """``f · a + η · drive`` before normalisation (``current=None``: ``η · drive``)."""
    u = scalar(params["eta"]) * drive
    if current is not None:
        u = scalar(params["f"]) * current + u
    return u
