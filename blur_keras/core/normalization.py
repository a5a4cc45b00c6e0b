"""Normalisations that keep BLUR stable and transferable (docs/spec.md §3).

Internal layout (``blur_keras.core.layout``): states ``[*P, k, B, n]``, synapses
``[*P, k, n_src, n_dst]``.
"""

import tensorflow as tf

from blur_keras.core.states import state_vector

__all__ = ["normalize_activations", "normalize_activations_parts", "scale_shift", "standardize",
           "batch_moments", "track_moments", "start_moments", "normalize_synapses",
           "column_rnorm", "synapse_view", "INFERENCE_MOMENTUM"]

# the tracked statistics' default momentum (``BlurModel(inference_momentum=...)``, the export)
INFERENCE_MOMENTUM = 0.9


def normalize_activations(u, gamma, beta, epsilon=1e-3, moments=None):
    """Normalise a pre-activation per neuron and state, then scale and shift.

    ``u``: ``[*P, k, B, n]``; ``gamma``, ``beta``: ``[*P', k]`` (per-state).
    ``out = γ (u − m) / sqrt(v + ε) + β`` with ``(m, v)`` the batch's mean and variance
    over ``B`` (training), or ``moments``, tracked statistics ``[*P, k, 1, n]`` each
    (inference: the output of one example then does not depend on the rest of its batch).
    """
    return normalize_activations_parts(u, gamma, beta, epsilon, moments)[0]


def normalize_activations_parts(u, gamma, beta, epsilon=1e-3, moments=None):
    """``normalize_activations`` and its intermediates: ``(out, (û, 1 / sqrt(v + ε)))``, what a
    hand-derived reverse reads (``step_reverse``)."""
    if moments is None:
        u_hat, rstd = standardize(u, epsilon)
    else:
        mean, var = moments
        rstd = tf.math.rsqrt(var + epsilon)
        u_hat = (u - mean) * rstd
    return scale_shift(u_hat, gamma, beta), (u_hat, rstd)


def scale_shift(u_hat, gamma, beta):
    """``γ û + β`` with per-state ``γ``, ``β`` ``[*P', k]``."""
    return state_vector(gamma) * u_hat + state_vector(beta)


def batch_moments(u):
    """``(mean_b u, var_b u)`` over the batch axis of ``[*P, k, B, n]``, each ``[*P, k, 1, n]``."""
    return tf.nn.moments(u, axes=[-2], keepdims=True)


def track_moments(moving, batch, count, momentum):
    """One update of tracked statistics: ``m ← (1 − a) m + a b`` with
    ``a = max(1 − momentum, 1 / (count + 1))``.

    The first ``1 / (1 − momentum)`` updates average every batch seen so far equally (no
    bias towards the initial value); later ones are an exponential moving average.
    ``moving``, ``batch``: matching structures of tensors; ``count``: updates so far.
    """
    count = tf.cast(count, tf.nest.flatten(batch)[0].dtype)
    a = tf.maximum(1.0 - momentum, 1.0 / (count + 1.0))
    return tf.nest.map_structure(lambda m, b: m + a * (b - m), moving, batch)


def standardize(u, epsilon=1e-3):
    """``((u − mean_b u) / sqrt(var_b u + ε), 1 / sqrt(var_b u + ε))`` over the batch axis."""
    mean, var = tf.nn.moments(u, axes=[-2], keepdims=True)
    rstd = tf.math.rsqrt(var + epsilon)
    return (u - mean) * rstd, rstd


def start_moments(forward_synapses):
    """Tracked statistics before the first step: zeros and ones ``[*P, k, 1, n]`` shaped from
    each layer's forward synapses ``[*P, k, n_src, n]`` (the first update replaces them,
    ``track_moments``)."""
    return [(tf.zeros_like(w[..., :1, :]), tf.ones_like(w[..., :1, :])) for w in forward_synapses]


def normalize_synapses(w, scale=None, epsilon=1e-8):
    """Column-normalise synapses for computing activations.

    ``w``: ``[*P, k, n_src, n_dst]`` (forward W including its bias row, or a
    backward V).  ``out[..., c, i, j] = w[..., c, i, j] / sqrt(Σ_i w[..., c, i, j]² + ε)``,
    times ``scale`` (a scalar per population member) when given.  The stored
    synapses are not changed.
    """
    out = w * column_rnorm(w, epsilon)
    if scale is not None:
        out = out * scale[..., None, None, None]
    return out


def column_rnorm(w, epsilon=1e-8):
    """``1 / sqrt(Σ_i w[..., c, i, j]² + ε)``, ``[*P, k, 1, n_dst]``."""
    return tf.math.rsqrt(tf.reduce_sum(tf.square(w), axis=-2, keepdims=True) + epsilon)


def synapse_view(w, params, config):
    """The synapses activations are computed with: ``w``, or under ``config.synapse_norm``
    ``normalize_synapses(w, params["syn_scale"])``."""
    if not config.synapse_norm:
        return w
    return normalize_synapses(w, params["syn_scale"], config.synapse_norm_epsilon)
