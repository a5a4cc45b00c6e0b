"""The backward pass (docs/spec.md §2 step 4).

``g^l[c, b, i] = Σ_j Σ_d a^{l+1}[d, b, j] μ[d, c] V^l[c, j, i]``, then one of
three update rules (σ is the backward activation of layer l):

* ``additive``: ``a^l = σ(f · a^l + η · g^l)``
* ``multiplicative``: ``a^l = σ(f · a^l ⊙ g^l)``
* ``multiplicative_second``: ``a^l = σ(f · [a^l[0] ; a^l[1:] ⊙ g^l[1:]])`` (states 1…k−1)
"""

import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.neurons import neuron_update, scalar
from blur_keras.core.normalization import normalize_activations, synapse_view
from blur_keras.core.states import mix_states, per_state_matmul

__all__ = ["backward_layer", "backward_preactivation"]


def backward_layer(a_above, a_current, v, params, config, activation):
    """New states of layer l from layer l+1 through backward synapses ``v``.

    ``a_above``: ``[*P, k, B, n_{l+1}]``; ``a_current``: ``[*P, k, B, n_l]``;
    ``v``: ``[*P, k, n_{l+1}, n_l]`` (no bias; the internal layout).
    """
    v = synapse_view(v, params, config)
    g = per_state_matmul(mix_states(a_above, params["mu"]), v)
    return activations.get(activation)(backward_preactivation(a_current, g, params, config))


def backward_preactivation(a_current, g, params, config):
    """The backward rule's pre-activation from the current states ``[*P, k, B, n]`` and
    their drive ``g``: ``f a + η g``, ``f (a ⊙ g)`` or ``f [a₀ ; a₁… ⊙ g₁…]``, normalised over
    the batch when configured (σ is applied by the caller)."""
    rule = config.backward_rule
    if rule == "additive":
        return neuron_update(a_current, g, params, config)
    if rule == "multiplicative":
        u = a_current * g
    elif rule == "multiplicative_second":
        u = tf.concat([a_current[..., :1, :, :], a_current[..., 1:, :, :] * g[..., 1:, :, :]],
                      axis=-3)
    else:
        raise ValueError(f"Unknown backward rule {rule!r}.")
    u = scalar(params["f"]) * u
    if config.activation_norm:
        u = normalize_activations(u, params["gamma"], params["beta"], config.norm_epsilon)
    return u
