"""The network a meta-loss runs through: layer sizes ``n_0 … n_L`` (a dense chain, the step of
``blur_keras.core.step``) or a ``Chain``: an input shape and a tuple of layer specs
(``blur_keras.core.layer_specs``: Dense, Conv2D, Pool2D, Flatten, Reshape; the step of
``blur_keras.core.network``, docs/conv.md).

The helpers below answer the same questions of either (features, classes, layer pairs, a
JSON-able description), so the run's code does not branch on the kind of network.
"""

import dataclasses

import numpy as np

from blur_keras.core.layer_specs import Conv2D, Dense, Flatten, Pool2D, Reshape, plan

__all__ = ["Chain", "as_network", "is_chain", "num_features", "num_classes", "num_pairs",
           "describe", "from_description", "export_arguments", "check_chain_options",
           "spec_to_dict", "spec_from_dict"]

SPEC_TYPES = (Dense, Conv2D, Pool2D, Flatten, Reshape)


@dataclasses.dataclass(frozen=True)
class Chain:
    """A network as layer specs on inputs of per-example shape ``input_shape`` (``(H, W, C)``
    or ``(n,)``); the last spec must be a Dense layer (its units: the classes). Data arrive
    flat (``[..., F]``, F = the input shape's product) and are reshaped to it."""

    input_shape: tuple
    specs: tuple

    def __post_init__(self):
        shape = tuple(int(s) for s in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "specs", tuple(self.specs))
        for spec in self.specs:
            if not isinstance(spec, SPEC_TYPES):
                raise ValueError(f"Chain spec {spec!r} is not a layer spec (Dense, Conv2D, "
                                 "Pool2D, Flatten, Reshape of blur_keras.core.layer_specs).")
        stages = plan(shape, self.specs)
        if not isinstance(stages[-1].layer, Dense):
            raise ValueError(f"The network's last layer is {stages[-1].layer!r}; a meta-trained "
                             "network ends in a Dense layer of one unit per class.")

    @property
    def stages(self):
        return plan(self.input_shape, self.specs)

    def __str__(self):
        return f"{self.input_shape} -> " + " -> ".join(map(repr, self.specs))


def is_chain(network):
    return isinstance(network, Chain)


def as_network(sizes):
    """A ``Chain`` unchanged; layer sizes as a tuple of ints."""
    return sizes if is_chain(sizes) else tuple(int(s) for s in sizes)


def num_features(network):
    return int(np.prod(network.input_shape)) if is_chain(network) else int(network[0])


def num_classes(network):
    return int(network.stages[-1].upper[0]) if is_chain(network) else int(network[-1])


def num_pairs(network):
    """Layer pairs (Dense/Conv2D specs; a dense chain's ``len(sizes) − 1``)."""
    return len(network.stages) if is_chain(network) else len(network) - 1


def spec_to_dict(spec):
    return {"layer": type(spec).__name__, **{
        f.name: list(v) if isinstance(v, tuple) else v
        for f in dataclasses.fields(spec) for v in [getattr(spec, f.name)]}}


def spec_from_dict(entry):
    types = {t.__name__: t for t in SPEC_TYPES}
    entry = dict(entry)
    kind = entry.pop("layer", None)
    if kind not in types:
        raise ValueError(f"Layer spec {entry!r}: unknown layer {kind!r}; expected one of "
                         f"{sorted(types)}.")
    return types[kind](**entry)


def describe(network):
    """JSON-able: the layer sizes, or ``{"input_shape": [...], "specs": [{...}, ...]}``."""
    if not is_chain(network):
        return list(network)
    return {"input_shape": list(network.input_shape),
            "specs": [spec_to_dict(s) for s in network.specs]}


def from_description(described):
    """Inverse of ``describe``."""
    if isinstance(described, dict):
        return Chain(described["input_shape"], [spec_from_dict(d) for d in described["specs"]])
    return tuple(int(n) for n in described)


def export_arguments(network):
    """``(sizes, specs)`` of ``rules.export.export_saved_model`` for the network."""
    if is_chain(network):
        return network.input_shape, network.specs
    return network, None


def check_chain_options(network, *, reverse=None, owner="meta_loss", reverse_name="reverse"):
    """A ``Chain`` takes no dense-only option: ``ValueError`` naming the option."""
    if is_chain(network) and reverse not in (None, "autodiff"):
        raise ValueError(f"{owner}: {reverse_name}={reverse!r}: the hand-derived reverse step is "
                         "for dense networks; a layer-spec network (Objective.specs) needs "
                         f"{reverse_name} = 'autodiff'.")
