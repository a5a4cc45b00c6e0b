"""The switches of a BLUR network (docs/spec.md §2–3), one frozen dataclass.

The genome holds the learned numbers; ``BlurConfig`` holds the discrete choices
that are fixed for an experiment: activations, feedback mode, backward update
rule, and the stability options.  Every switch is independent.
"""

import dataclasses
import math
import numbers

import numpy as np

from blur_keras.core import activations
__all__ = ["BlurConfig", "backprop_config", "FEEDBACK_MODES", "BACKWARD_RULES",
           "BATCH_REDUCTIONS"]

FEEDBACK_MODES = ("target", "error", "softmax")
BACKWARD_RULES = ("additive", "multiplicative", "multiplicative_second")
BATCH_REDUCTIONS = ("sum", "mean")


@dataclasses.dataclass(frozen=True)
class BlurConfig:
    """Discrete options of the BLUR inner loop.

    Attributes:
      hidden_activation: forward σ of hidden layers 1…L−1 (default relu(tanh)).
      last_activation: forward σ of the last layer L (default tanh).
      backward_activation: σ of the backward pass (hidden layers only).
      feedback: ``"target"`` (state 1 of the last layer := target),
        ``"error"`` (state 1 := (prediction − y) ⊙ state 1: squared error) or ``"softmax"``
        (state 1 := (softmax(prediction) − one-hot) ⊙ state 1: softmax cross-entropy).
      backward_rule: ``"additive"``, ``"multiplicative"`` or
        ``"multiplicative_second"`` (docs/spec.md §2 step 4).
      symmetric: backward synapses are the transposed forward synapses.
      single_state: every synapse channel equals channel 0.
      batch_reduction: ``"sum"`` (paper) or ``"mean"`` over the batch in the
        Hebbian update and the Oja term.
      activation_norm: normalise pre-activations over the batch, then apply
        the genome's per-state γ, β (forward and backward).
      synapse_norm: use column-normalised synapses (× the genome's
        ``syn_scale``) when computing activations.
      oja: add the Oja decay term (multiplier from the genome) to ΔW, ΔV.
      saturation: ``W ← α tanh(W / α)`` after each update (α from the genome).
      synapse_mix: the synapse channels mix before the Hebbian update is added,
        ``W[c] ← f̃ Σ_d T[c, d] W[d] + η̃ ΔW[c]`` (``T``: the genome's ``syn_mix``), so a
        channel can carry a running average (docs/spec.md §8).
      velocity_channel: the last synapse channel is a velocity: it starts at 0, and the
        single-state tie leaves it out (channels 1…k−2 := channel 0).
      norm_epsilon: ε of the activation normalisation.
      synapse_norm_epsilon: ε of the synapse normalisation.
    """

    hidden_activation: str = "relu_tanh"
    last_activation: str = "tanh"
    backward_activation: str = "relu_tanh"
    feedback: str = "target"
    backward_rule: str = "additive"
    symmetric: bool = False
    single_state: bool = False
    batch_reduction: str = "sum"
    activation_norm: bool = False
    synapse_norm: bool = False
    oja: bool = False
    saturation: bool = False
    synapse_mix: bool = False
    velocity_channel: bool = False
    norm_epsilon: float = 1e-3
    synapse_norm_epsilon: float = 1e-8

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type is bool:
                object.__setattr__(self, field.name, _checked_bool(field.name, value))
            elif field.type is float:
                object.__setattr__(self, field.name, _checked_epsilon(field.name, value))
        _check_choice("feedback", self.feedback, FEEDBACK_MODES)
        _check_choice("backward_rule", self.backward_rule, BACKWARD_RULES)
        _check_choice("batch_reduction", self.batch_reduction, BATCH_REDUCTIONS)
        for field in ("hidden_activation", "last_activation", "backward_activation"):
            value = getattr(self, field)
            if value not in activations.names():
                raise ValueError(
                    f"BlurConfig.{field}={value!r} is not a known activation; "
                    f"expected one of {activations.names()}.")

    @classmethod
    def backprop(cls, hidden_activation="tanh", last_activation="linear", batch_reduction="sum",
                 feedback="error"):
        """The switches that make the k=2 backprop genome an exact SGD step (docs/spec.md §4):
        on ½‖y − t‖² (``feedback="error"``) or on the softmax cross-entropy (``"softmax"``)."""
        return cls(
            hidden_activation="backprop_" + hidden_activation,
            last_activation="backprop_" + last_activation,
            backward_activation="linear",
            feedback=feedback,
            backward_rule="multiplicative_second",
            symmetric=True,
            single_state=True,
            batch_reduction=batch_reduction,
        )

    @classmethod
    def momentum(cls, hidden_activation="tanh", last_activation="linear", batch_reduction="sum"):
        """The switches that make ``Genome.momentum`` (k=3) an exact step of SGD with momentum
        (docs/spec.md §8): the backprop switches, the synapse-channel mix, a velocity channel."""
        return cls.backprop(hidden_activation, last_activation, batch_reduction).replace(
            synapse_mix=True, velocity_channel=True)

    def replace(self, **changes):
        _check_fields(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        _check_fields(values)
        return cls(**values)


def backprop_config(hidden_activation="tanh", last_activation="linear", batch_reduction="sum",
                    **changes):
    """``BlurConfig.backprop(...)`` with ``changes`` on top (e.g. ``activation_norm=True``).

    For gin, which configures functions, not classmethods: a recipe that starts from the
    backprop switches binds only what it changes (gin/sgd_residual.gin).
    """
    return BlurConfig.backprop(hidden_activation, last_activation, batch_reduction).replace(
        **changes)


def _check_fields(values):
    known = {f.name for f in dataclasses.fields(BlurConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown BlurConfig fields {unknown}; known: {sorted(known)}.")


def _checked_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"BlurConfig.{name}={value!r} ({type(value).__name__}); expected a bool "
                        "(True or False).")
    return bool(value)


def _checked_epsilon(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"BlurConfig.{name}={value!r} ({type(value).__name__}); expected a "
                        "number (a positive float).")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"BlurConfig.{name}={value!r}; expected a positive finite number.")
    return float(value)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"BlurConfig.{name}={value!r}; expected one of {list(choices)}.")
