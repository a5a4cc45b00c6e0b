"""Neuron non-linearities σ (docs/spec.md §2).

An activation maps a k-state pre-activation ``u`` to new k states; ``u`` is in the
core's internal layout ``[*P, k, B, n]`` (``blur_keras.core.layout``), which is also
what a callable passed instead of a name receives.
Plain activations act elementwise on every state.  A *state-aware* activation
``backprop_<name>`` writes ``σ(u[0])`` into state 0 and ``σ'(u[1:])``
into the other states: with it, the k=2 BLUR step is exactly an SGD step
(docs/spec.md §4).

Activations are referred to by name so that layers and models serialise;
``get(name)`` returns the function.
"""

import types

import tensorflow as tf

__all__ = ["get", "names", "derivative", "derivative_from_output", "canonical"]


def _relu_tanh(u):
    return tf.nn.relu(tf.tanh(u))


def _identity(u):
    return tf.identity(u)


# name -> (σ, σ')
_ELEMENTWISE = types.MappingProxyType({
    "relu_tanh": (_relu_tanh, lambda u: tf.cast(u > 0, u.dtype) * (1.0 - tf.square(tf.tanh(u)))),
    "tanh": (tf.tanh, lambda u: 1.0 - tf.square(tf.tanh(u))),
    "relu": (tf.nn.relu, lambda u: tf.cast(u > 0, u.dtype)),
    "sigmoid": (tf.sigmoid, lambda u: tf.sigmoid(u) * (1.0 - tf.sigmoid(u))),
    "linear": (_identity, tf.ones_like),
})
_ALIASES = types.MappingProxyType({"identity": "linear", None: "linear"})
_BACKPROP_PREFIX = "backprop_"


def names():
    """All accepted activation names."""
    base = sorted(_ELEMENTWISE) + sorted(k for k in _ALIASES if k)
    return base + [_BACKPROP_PREFIX + n for n in sorted(_ELEMENTWISE)]


def canonical(name):
    """The name an activation is stored under: ``identity`` and ``None`` -> ``linear``."""
    return _ALIASES.get(name, name)



def strip_backprop(name):
    """The elementwise activation of a name: ``backprop_relu`` -> ``relu`` (others unchanged)."""
    return name[len(_BACKPROP_PREFIX):] if name.startswith(_BACKPROP_PREFIX) else name


def derivative(name):
    """σ' of an elementwise activation, in closed form (no autodiff)."""
    name = canonical(name)
    if name not in _ELEMENTWISE:
        raise ValueError(f"Unknown activation {name!r}; expected one of {names()}.")
    return _ELEMENTWISE[name][1]


# σ' written with σ's output y, where that is exact (no σ to recompute in a backward pass)
_FROM_OUTPUT = types.MappingProxyType({
    "relu_tanh": lambda y: tf.cast(y > 0, y.dtype) * (1.0 - tf.square(y)),
    "tanh": lambda y: 1.0 - tf.square(y),
    "relu": lambda y: tf.cast(y > 0, y.dtype),
    "sigmoid": lambda y: y * (1.0 - y),
    "linear": tf.ones_like,
})


def derivative_from_output(name):
    """σ' as a function of ``y = σ(u)`` for the elementwise activations where that is exact;
    ``None`` otherwise (the state-aware ``backprop_*`` ones, callables)."""
    return _FROM_OUTPUT.get(canonical(name)) if isinstance(name, str) else None


def _state_aware(name):
    sigma, dsigma = _ELEMENTWISE[name]

    def backprop_activation(u):
        return tf.concat([sigma(u[..., :1, :, :]), dsigma(u[..., 1:, :, :])], axis=-3)

    backprop_activation.__name__ = _BACKPROP_PREFIX + name
    return backprop_activation


def get(activation):
    """Return the activation function for a name (or pass a callable through)."""
    if callable(activation):
        return activation
    name = canonical(activation)
    if isinstance(name, str) and name.startswith(_BACKPROP_PREFIX):
        base = canonical(strip_backprop(name))
        if base in _ELEMENTWISE:
            return _state_aware(base)
    elif name in _ELEMENTWISE:
        return _ELEMENTWISE[name][0]
    raise ValueError(f"Unknown activation {activation!r}; expected one of {names()} or a callable.")
