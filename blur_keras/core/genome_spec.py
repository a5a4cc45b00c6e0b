"""The genome's entries, as a Keras-free description (docs/spec.md §1).

The pure core and the meta side use a genome as a plain ``dict`` name -> array
or tensor.  This module says which entries exist, their shapes, their neutral
values, how to pick one layer pair's or one species' entries, and how to
align the species axis with the population axes of the synapses.  The Keras
``Genome`` layer (``genome.py``) is a thin wrapper holding the same dict as
variables.

Shapes: a k×k transform is ``[*species, (layers,) k, k]``, a per-state vector
``[*species, (layers,) k]`` and a scalar ``[*species, (layers,)]``; the
``layers`` axis exists only for a per-layer genome.
"""

import types

import numpy as np
import tensorflow as tf

from blur_keras.core.layout import reshape_axes

__all__ = [
    "CORE_NAMES", "OPTIONAL_NAMES", "FILE_OPTIONAL_NAMES", "NAMES", "DESCRIPTIONS", "core_rank", "core_shape",
    "used_entries", "num_core_numbers", "default_values", "full_values", "member", "select_layer",
    "align_to_population", "trainable_entries",
]

# name -> number of trailing "core" axes (2: k×k, 1: k, 0: scalar)
_CORE_RANK = types.MappingProxyType({
    "nu": 2, "mu": 2, "pre": 2, "post": 2,
    "f": 0, "eta": 0, "f_syn": 0, "eta_syn": 0,
    "gamma": 1, "beta": 1, "oja": 0, "alpha": 0, "syn_scale": 0, "syn_mix": 2,
})
CORE_NAMES = ("nu", "mu", "pre", "post", "f", "eta", "f_syn", "eta_syn")
OPTIONAL_NAMES = ("gamma", "beta", "oja", "alpha", "syn_scale", "syn_mix")
# entries a genome file may leave out (files written before they existed): neutral values
FILE_OPTIONAL_NAMES = ("syn_mix",)
NAMES = CORE_NAMES + OPTIONAL_NAMES

DESCRIPTIONS = types.MappingProxyType({
    "nu": "forward neuron transform nu[d, c]",
    "mu": "backward neuron transform mu[d, c]",
    "pre": "Hebbian pre-synaptic transform pre[e, c]",
    "post": "Hebbian post-synaptic transform post[c, d]",
    "f": "neuron keep", "eta": "neuron update",
    "f_syn": "synapse keep", "eta_syn": "synapse update",
    "gamma": "activation-norm scale", "beta": "activation-norm shift",
    "oja": "Oja multiplier", "alpha": "saturation scale",
    "syn_scale": "synapse-norm rescale",
    "syn_mix": "synapse channel transition syn_mix[c, d]",
})


def core_rank(name):
    return _CORE_RANK[name]


def core_shape(name, k):
    return (k,) * _CORE_RANK[name]


def num_core_numbers(k):
    """4k² + 4: the size of the core genome (docs/spec.md §1)."""
    return 4 * k * k + 4


def default_values(k):
    """Neutral values: identity transforms, keeps/updates 1, synapse update −1e-3."""
    eye = np.eye(k)
    return {
        "nu": eye, "mu": eye, "pre": eye, "post": eye,
        "f": 1.0, "eta": 1.0, "f_syn": 1.0, "eta_syn": -1e-3,
        "gamma": np.ones(k), "beta": np.zeros(k),
        "oja": 1.0, "alpha": 1.0, "syn_scale": 1.0, "syn_mix": eye,
    }



def full_values(values, k, num_layers=None, species=None, dtype="float32"):
    """Every entry at its full shape: given ones broadcast, missing ones neutral (NumPy).

    Raises ``ValueError`` naming the entry for an unknown name, a shape that does not
    broadcast, or a non-finite value.
    """
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise ValueError(f"Unknown genome entries {unknown}; known: {list(NAMES)}.")
    lead = (() if species is None else (species,)) + (() if num_layers is None else (num_layers,))
    base = default_values(k)
    full = {}
    for name in NAMES:
        arr = np.asarray(values.get(name, base[name]), dtype=dtype)
        target = lead + core_shape(name, k)
        try:
            arr = np.broadcast_to(arr, target).copy()
        except ValueError:
            raise ValueError(
                f"Genome entry {name!r} ({DESCRIPTIONS[name]}) has shape {arr.shape}; "
                f"expected {target} (k={k}, num_layers={num_layers}, species={species}) or a "
                "shape that broadcasts to it.") from None
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Genome entry {name!r} ({DESCRIPTIONS[name]}) contains "
                             f"non-finite values (NaN or Inf): {arr.tolist()}.")
        full[name] = arr
    return full


# the optional entries and the BlurConfig switch that makes the rule read them
_USED_WHEN = types.MappingProxyType({"gamma": "activation_norm", "beta": "activation_norm", "oja": "oja",
              "alpha": "saturation", "syn_scale": "synapse_norm", "syn_mix": "synapse_mix"})


def used_entries(config):
    """The genome entries the rule reads under ``config``: the core entries and the optional
    ones its switches turn on."""
    return CORE_NAMES + tuple(n for n in OPTIONAL_NAMES if getattr(config, _USED_WHEN[n]))


def trainable_entries(trainable, config):
    """The genome entries an outer optimiser changes: ``trainable`` (checked), or by default
    those the rule reads (``used_entries``)."""
    if not trainable:
        return used_entries(config)
    unknown = sorted(set(trainable) - set(NAMES))
    if unknown:
        raise ValueError(f"Unknown trainable genome entries {unknown}; known: {list(NAMES)}.")
    return tuple(trainable)


def member(values, index):
    """The entries of species ``index`` of a genome with a species axis."""
    return {name: v[index] for name, v in values.items()}


def select_layer(params, layer, per_layer):
    """The entries that layer pair ``layer`` uses (identity for a shared genome)."""
    if not per_layer:
        return params
    return {name: tf.gather(v, layer, axis=len(v.shape) - _CORE_RANK[name] - 1)
            for name, v in params.items()}


def align_to_population(params, num_population_axes):
    """Give every entry exactly ``num_population_axes`` leading axes.

    Genome axes are *left-aligned* with the population axes of the synapses:
    a genome ``[S, k, k]`` with synapses ``[S, R, n, m, k]`` becomes
    ``[S, 1, k, k]`` so it broadcasts over the replica axis.
    """
    out = {}
    for name, v in params.items():
        v = tf.convert_to_tensor(v)
        lead = len(v.shape) - _CORE_RANK[name]
        if lead > num_population_axes:
            raise ValueError(
                f"Genome entry {name!r} has {lead} leading (species) axes but the synapses "
                f"have only {num_population_axes} population axes.")
        units = [1] * (num_population_axes - lead)
        out[name] = reshape_axes(v, lead, lead, units) if units else v
    return out

