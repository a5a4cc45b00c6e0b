"""Exceptions raised by blur_keras."""

__all__ = ["NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """Synapses or activations of a BLUR layer became NaN or Inf during training."""
