"""The backward pass (docs/spec.md §2 step 4).

``g^l[c, b, i] = Σ_j Σ_d a^{l+1}[d, b, j] μ[d, c] V^l[c, j, i]``, then one of
three update rules (σ is the backward activation of layer l):

* ``additive``: ``a^l = σ(f · a^l + η · g^l)``
* ``multiplicative``: ``a^l = σ(f · a^l ⊙ g^l)``
* ``multiplicative_second``: ``a^l = σ(f · [a^l[0] ; a^l[1:] ⊙ g^l[1:]])`` (states 1…k−1)
"""

import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.neurons import neuron_update_parts, normalized_parts, scalar
from blur_keras.core.normalization import synapse_view
from blur_keras.core.states import mix_states, per_state_matmul

__all__ = ["backward_layer", "backward_layer_parts", "backward_preactivation",
           "backward_preactivation_parts", "rule_product"]


def backward_layer(a_above, a_current, v, params, config, activation):
    """New states of layer l from layer l+1 through backward synapses ``v``.

    ``a_above``: ``[*P, k, B, n_{l+1}]``; ``a_current``: ``[*P, k, B, n_l]``;
    ``v``: ``[*P, k, n_{l+1}, n_l]`` (no bias; the internal layout).
    """
    return backward_layer_parts(a_above, a_current, v, params, config, activation)[0]


def backward_layer_parts(a_above, a_current, v, params, config, activation):
    """``backward_layer`` and its intermediates, what a hand-derived reverse reads
    (``step_reverse``): ``(a, (mixed, g, (u, norm)))``, ``mixed = Σ_d a^{l+1}[d] μ[d, c]``,
    ``g`` the drive, ``(u, norm)`` from ``backward_preactivation_parts``."""
    v = synapse_view(v, params, config)
    mixed = mix_states(a_above, params["mu"])
    g = per_state_matmul(mixed, v)
    u, pre = backward_preactivation_parts(a_current, g, params, config)
    return activations.get(activation)(u), (mixed, g, pre)


def backward_preactivation(a_current, g, params, config):
    """The backward rule's pre-activation from the current states ``[*P, k, B, n]`` and
    their drive ``g``: ``f a + η g``, ``f (a ⊙ g)`` or ``f [a₀ ; a₁… ⊙ g₁…]``, normalised over
    the batch when configured (σ is applied by the caller)."""
    return backward_preactivation_parts(a_current, g, params, config)[0]


def backward_preactivation_parts(a_current, g, params, config):
    """``backward_preactivation`` and ``(u, norm)``, its value before the normalisation and
    the normalisation's intermediates (``neurons.normalized_parts``)."""
    if config.backward_rule == "additive":
        return neuron_update_parts(a_current, g, params, config)
    u = scalar(params["f"]) * rule_product(a_current, g, config.backward_rule)
    return normalized_parts(u, params, config)


def rule_product(a_current, g, rule):
    """The product of a multiplicative rule: ``a ⊙ g`` (``"multiplicative"``), or
    ``[a₀ ; a₁… ⊙ g₁…]`` (``"multiplicative_second"``: state 0 is kept)."""
    if rule == "multiplicative":
        return a_current * g
    if rule == "multiplicative_second":
        return tf.concat([a_current[..., :1, :, :], a_current[..., 1:, :, :] * g[..., 1:, :, :]],
                         axis=-3)
    raise ValueError(f"Unknown backward rule {rule!r}.")
