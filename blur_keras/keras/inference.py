"""Batch-independent inference for ``BlurModel``: statistics tracked while the rule trains.

Under ``BlurConfig.activation_norm`` a training step normalises each layer's
pre-activation over its batch (the rule is meta-trained that way). Inference cannot: one
example's prediction would then depend on the rest of its batch, and a batch of one would
predict ``σ(β)`` for every input. So every training step also records the batch's mean and
variance of each layer's forward pre-activation (``core.step.forward_moments``; a chain with
convolutions: ``core.network.step_moments``, per channel over batch and positions; from the
synapses the step started from) into the layers' ``moving_mean`` / ``moving_variance``
(``core.normalization.track_moments``), and inference normalises with those, as Keras's
``BatchNormalization`` does.
"""

import tensorflow as tf

from blur_keras.core.layout import pairs_in, states_out
from blur_keras.core.normalization import track_moments
from blur_keras.core.step import forward_moments

__all__ = ["INFERENCE_MODES", "check_inference", "step_moments", "record_moments"]

INFERENCE_MODES = ("moving", "batch")


def check_inference(mode, momentum):
    """Errors at the door for ``BlurModel(inference=..., inference_momentum=...)``."""
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference={mode!r}; expected one of {list(INFERENCE_MODES)}.")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
            or not 0.0 <= momentum < 1.0:
        raise ValueError(f"inference_momentum={momentum!r}; expected a number in [0, 1).")


def step_moments(params, synapses, feats, config, per_layer, forward_activations):
    """The batch statistics a training step on ``feats`` normalises with, per layer, each
    ``[units, k]`` (public layout)."""
    internal = forward_moments(params, pairs_in(synapses), feats, config, per_layer,
                               forward_activations)
    return [tuple(states_out(t)[0] for t in m) for m in internal]


def record_moments(layers, moments, count, momentum, apply=True):
    """Fold one step's ``moments`` into the layers' tracked statistics (when ``apply``)."""
    for layer, batch in zip(layers, moments):
        old = (tf.convert_to_tensor(layer.moving_mean), tf.convert_to_tensor(layer.moving_variance))
        new = track_moments(old, batch, count, momentum)
        for var, o, n in zip((layer.moving_mean, layer.moving_variance), old, new):
            var.assign(tf.where(apply, n, o))
