"""The forward pass (docs/spec.md §2 steps 1–2).

``z^{l+1}[c, b, j] = Σ_i Σ_d ā^l[d, b, i] ν[d, c] W^l[c, i, j]`` with the bias
neuron appended to ``a^l``, then ``a^{l+1} = σ(f · a^{l+1} + η · z^{l+1})``.
"""

import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.neurons import neuron_update, neuron_update_parts, preactivation, scalar
from blur_keras.core.normalization import batch_moments, synapse_view
from blur_keras.core.states import (input_drive, input_product, mix_states, per_state_matmul,
                                    with_bias_neuron)

__all__ = ["input_states", "forward_layer", "input_forward_layer", "forward_layer_parts",
           "layer_drive", "layer_drive_parts", "layer_moments", "neuron_update", "scalar"]


def input_states(x, k):
    """Input layer after reset, ``[*P', k, B, n]``: state 0 is ``x``, the other states 0."""
    x = tf.convert_to_tensor(x)
    zeros = tf.zeros(tf.concat([tf.shape(x)[:-2], [k - 1], tf.shape(x)[-2:]], axis=0), x.dtype)
    return tf.concat([x[..., None, :, :], zeros], axis=-3)


def forward_layer(a_below, w, params, config, activation, current=None, moments=None):
    """New states of layer l+1 from layer l through forward synapses ``w``.

    ``a_below``: ``[*P, k, B, n_l]``; ``w``: ``[*P, k, n_l + 1, n_{l+1}]`` (the internal
    layout, ``blur_keras.core.layout``);
    ``params``: this layer pair's genome entries, aligned to the population;
    ``moments``: tracked normalisation statistics (inference), or None (the batch's).
    """
    return forward_layer_parts(a_below, w, params, config, activation, current, moments)[0]


def input_forward_layer(x, w, params, config, activation, moments=None):
    """``forward_layer(input_states(x, k), w, …)`` for layer 1, computed from ``x`` alone.

    The input layer's states 1…k−1 are 0, so the contraction is one plain
    matmul of ``x`` (``states.input_product``); same result, fewer operations.
    """
    return forward_layer_parts(x, w, params, config, activation, None, moments,
                               input_layer=True)[0]


def forward_layer_parts(below, w, params, config, activation, current=None, moments=None,
                        input_layer=False):
    """``forward_layer`` (``input_forward_layer`` with ``input_layer=True``, ``below`` then
    ``x``) and its intermediates, what a hand-derived reverse reads (``step_reverse``):
    ``(a, (contracted, z, (u, norm)))``, ``contracted`` and ``z`` from ``layer_drive_parts``,
    ``(u, norm)`` from ``neurons.neuron_update_parts``."""
    z, contracted = layer_drive_parts(below, w, params, config, input_layer)
    u, pre = neuron_update_parts(current, z, params, config, moments)
    return activations.get(activation)(u), (contracted, z, pre)


def layer_drive(below, w, params, config, input_layer=False):
    """``z^{l+1} = Σ_i Σ_d ā^l[d, b, i] ν[d, c] W^l[c, i, j]``; ``below`` is ``x`` itself for
    the input layer (``input_layer=True``), else the states ``a^l``."""
    return layer_drive_parts(below, w, params, config, input_layer)[0]


def layer_drive_parts(below, w, params, config, input_layer=False):
    """``(z, contracted)``: ``layer_drive`` and what it contracts with the synapses' view, the
    mixed states ``Σ_d ā[d] ν[d, c]``, or for the input layer ``x W[c, :n]``
    (``states.input_product``; the bias row and ν enter after it, ``states.input_drive``)."""
    w = synapse_view(w, params, config)
    if input_layer:
        xw = input_product(below, w)
        return input_drive(xw, w, params["nu"]), xw
    mixed = mix_states(with_bias_neuron(below), params["nu"])
    return per_state_matmul(mixed, w), mixed


def layer_moments(below, w, params, config, input_layer=False):
    """The batch's mean and variance of layer l+1's forward pre-activation ``η z``
    (``[*P, k, 1, n]`` each): what the activation normalisation of that layer uses in
    training, and what inference tracks (``normalization.track_moments``)."""
    z = layer_drive(below, w, params, config, input_layer)
    return batch_moments(preactivation(None, z, params))
