"""Exceptions raised by blur_keras."""

__all__ = ["NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """A training step broke a BLUR layer: its synapses or activations became NaN or Inf, its
    synapses ran away (beyond ``keras.guards.SYNAPSE_LIMIT``), or it collapsed the network's
    output to a constant across the batch (``core.checks.collapsed_output``)."""
