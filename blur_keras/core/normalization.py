"""Normalisations that keep BLUR stable and transferable (docs/spec.md §3).

Internal layout (``blur_keras.core.layout``): states ``[*P, k, B, n]``, synapses
``[*P, k, n_src, n_dst]``.
"""

import tensorflow as tf

from blur_keras.core.states import state_vector

__all__ = ["normalize_activations", "standardize", "normalize_synapses", "synapse_view"]


def normalize_activations(u, gamma, beta, epsilon=1e-3):
    """Batch-normalise a pre-activation per neuron and state, then scale and shift.

    ``u``: ``[*P, k, B, n]``; ``gamma``, ``beta``: ``[*P', k]`` (per-state).
    ``out = γ (u − mean_b u) / sqrt(var_b u + ε) + β``.
    """
    u_hat, _ = standardize(u, epsilon)
    return state_vector(gamma) * u_hat + state_vector(beta)


def standardize(u, epsilon=1e-3):
    """``((u − mean_b u) / sqrt(var_b u + ε), 1 / sqrt(var_b u + ε))`` over the batch axis."""
    mean, var = tf.nn.moments(u, axes=[-2], keepdims=True)
    rstd = tf.math.rsqrt(var + epsilon)
    return (u - mean) * rstd, rstd


def normalize_synapses(w, scale=None, epsilon=1e-8):
    """Column-normalise synapses for computing activations.

    ``w``: ``[*P, k, n_src, n_dst]`` (forward W including its bias row, or a
    backward V).  ``out[..., c, i, j] = w[..., c, i, j] / sqrt(Σ_i w[..., c, i, j]² + ε)``,
    times ``scale`` (a scalar per population member) when given.  The stored
    synapses are not changed.
    """
    out = w * tf.math.rsqrt(tf.reduce_sum(tf.square(w), axis=-2, keepdims=True) + epsilon)
    if scale is not None:
        out = out * scale[..., None, None, None]
    return out


def synapse_view(w, params, config):
    """The synapses activations are computed with: ``w``, or under ``config.synapse_norm``
    ``normalize_synapses(w, params["syn_scale"])``."""
    if not config.synapse_norm:
        return w
    return normalize_synapses(w, params["syn_scale"], config.synapse_norm_epsilon)
