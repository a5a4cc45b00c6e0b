"""Descriptions of the layers of a BLUR network that is more than a dense chain
(docs/conv.md): dense and convolutional layers (with synapses) and the parameter-free
layers between them (pooling, flatten, reshape), and the shapes they imply.

A network is a tuple of specs applied to an input of per-example shape ``(H, W, C)`` or
``(n,)``.  Specs with synapses (``Dense``, ``Conv2D``) are the *layer pairs*; each pair
reads the neuron layer below it through the parameter-free specs (``Pool2D``,
``Flatten``, ``Reshape``) that precede it (its *transforms*).  ``plan`` checks the chain and
returns one ``Stage`` per layer pair.
"""

import collections
import dataclasses

import numpy as np

__all__ = ["Dense", "Conv2D", "Pool2D", "Flatten", "Reshape", "Stage", "plan", "conv_output_size",
           "same_padding", "synapse_shapes", "has_synapses", "network_output_shape"]

PADDINGS = ("valid", "same")


def _pair(value, name, owner):
    """An int or a pair of ints -> a tuple of two positive ints."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               or v < 1 for v in values):
        raise ValueError(f"{owner} {name}={value!r}; expected a positive int or a pair of them.")
    return tuple(int(v) for v in values)


def _padding(value, owner):
    if not isinstance(value, str) or value.lower() not in PADDINGS:
        raise ValueError(f"{owner} padding={value!r}; expected 'valid' or 'same'.")
    return value.lower()


@dataclasses.dataclass(frozen=True)
class Dense:
    """A dense BLUR layer pair onto ``units`` neurons (``None`` activations: the config's)."""

    units: int
    activation: str = None
    backward_activation: str = None

    def __post_init__(self):
        if isinstance(self.units, bool) or not isinstance(self.units, (int, np.integer)) \
                or self.units < 1:
            raise ValueError(f"Dense units={self.units!r}; expected a positive int.")


@dataclasses.dataclass(frozen=True)
class Conv2D:
    """A convolutional BLUR layer pair: ``filters`` output channels, ``kernel_size``
    ``(kh, kw)``, ``strides`` ``(sh, sw)``, ``padding`` ``"valid"`` or ``"same"`` (TensorFlow's
    convention: ``same`` pads ``max((out − 1)·s + kh − H, 0)`` rows, the extra one at the end)."""

    filters: int
    kernel_size: tuple = (3, 3)
    strides: tuple = (1, 1)
    padding: str = "valid"
    activation: str = None
    backward_activation: str = None

    def __post_init__(self):
        if isinstance(self.filters, bool) or not isinstance(self.filters, (int, np.integer)) \
                or self.filters < 1:
            raise ValueError(f"Conv2D filters={self.filters!r}; expected a positive int.")
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size", "Conv2D"))
        object.__setattr__(self, "strides", _pair(self.strides, "strides", "Conv2D"))
        object.__setattr__(self, "padding", _padding(self.padding, "Conv2D"))


@dataclasses.dataclass(frozen=True)
class Pool2D:
    """Max (``kind="max"``) or average (``"avg"``) pooling of all k states; ``strides``
    default to ``pool_size`` (as in Keras)."""

    kind: str = "max"
    pool_size: tuple = (2, 2)
    strides: tuple = None
    padding: str = "valid"

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise ValueError(f"Pool2D kind={self.kind!r}; expected 'max' or 'avg'.")
        object.__setattr__(self, "pool_size", _pair(self.pool_size, "pool_size", "Pool2D"))
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", _pair(strides, "strides", "Pool2D"))
        object.__setattr__(self, "padding", _padding(self.padding, "Pool2D"))

    @property
    def kernel_size(self):
        return self.pool_size


@dataclasses.dataclass(frozen=True)
class Flatten:
    """All positions and channels of a feature map as one neuron axis (row-major H, W, C)."""


@dataclasses.dataclass(frozen=True)
class Reshape:
    """The neurons of a layer in another per-example shape ``target_shape`` (row-major, the
    same number of neurons): e.g. a dense layer's ``(n,)`` as a feature map ``(H, W, C)``."""

    target_shape: tuple

    def __post_init__(self):
        shape = (self.target_shape,) if isinstance(self.target_shape, (int, np.integer)) \
            else tuple(self.target_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                            for s in shape):
            raise ValueError(f"Reshape target_shape={self.target_shape!r}; expected positive "
                             "ints.")
        object.__setattr__(self, "target_shape", tuple(int(s) for s in shape))


def has_synapses(spec):
    return isinstance(spec, (Dense, Conv2D))


Stage = collections.namedtuple("Stage", ["index", "transforms", "layer", "below", "lower",
                                         "upper"])
Stage.__doc__ = """One layer pair: its ``transforms`` (``(spec, in_shape, out_shape)`` each)
lead from the neuron layer below (per-example shape ``below``) to the shape the pair reads
(``lower``); ``layer`` (``Dense`` or ``Conv2D``) writes neurons of shape ``upper``."""


def conv_output_size(size, kernel, stride, padding):
    """Output length of a window op: ``⌊(size − kernel)/stride⌋ + 1`` (valid), ``⌈size/stride⌉``
    (same)."""
    if padding == "valid":
        return (size - kernel) // stride + 1
    return -(-size // stride)


def same_padding(size, kernel, stride, padding):
    """``(before, after)`` zero rows of a window op: none for valid; for same
    ``total = max((out − 1)·stride + kernel − size, 0)``, ``before = ⌊total / 2⌋``."""
    if padding == "valid":
        return 0, 0
    out = conv_output_size(size, kernel, stride, padding)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _window_shape(spec, shape, name):
    """Output ``(H', W', C)`` of a conv or pool on ``shape``, with the checks."""
    kind = type(spec).__name__
    if len(shape) != 3:
        raise ValueError(f"{kind} layer {name} needs a feature map [height, width, channels]; "
                         f"its input has per-example shape {tuple(shape)}.")
    out = []
    for axis, (size, kernel, stride) in enumerate(zip(shape[:2], spec.kernel_size, spec.strides)):
        if spec.padding == "valid" and kernel > size:
            raise ValueError(f"{kind} layer {name}: its window {spec.kernel_size} is larger than "
                             f"its input {tuple(shape[:2])} (padding 'valid').")
        out.append(conv_output_size(size, kernel, stride, spec.padding))
    channels = spec.filters if isinstance(spec, Conv2D) else shape[2]
    return (out[0], out[1], channels)


def output_shape(spec, shape, name="?"):
    """Per-example output shape of ``spec`` applied to per-example shape ``shape``."""
    shape = tuple(int(s) for s in shape)
    if isinstance(spec, Dense):
        if len(shape) != 1:
            raise ValueError(f"Dense layer {name} needs a flat input; its input has per-example "
                             f"shape {shape}: put a Flatten in front of it.")
        return (spec.units,)
    if isinstance(spec, (Conv2D, Pool2D)):
        return _window_shape(spec, shape, name)
    if isinstance(spec, Flatten):
        return (int(np.prod(shape)),)
    if isinstance(spec, Reshape):
        if int(np.prod(shape)) != int(np.prod(spec.target_shape)):
            raise ValueError(f"Reshape layer {name}: its input has per-example shape {shape} "
                             f"({int(np.prod(shape))} neurons), which cannot be reshaped to "
                             f"{spec.target_shape} ({int(np.prod(spec.target_shape))}).")
        return spec.target_shape
    raise TypeError(f"Layer {name}: {spec!r} is not a BLUR layer spec (Dense, Conv2D, Pool2D, "
                    "Flatten, Reshape).")


def plan(input_shape, specs, names=None):
    """The layer pairs of the chain ``specs`` on per-example input shape ``input_shape``.

    ``names`` (optional, one per spec) name the layers in error messages.
    """
    specs = tuple(specs)
    names = list(names) if names is not None else [f"#{i}" for i in range(len(specs))]
    shape, transforms, stages, below = tuple(input_shape), [], [], tuple(input_shape)
    for spec, name in zip(specs, names):
        out = output_shape(spec, shape, name)
        if has_synapses(spec):
            stages.append(Stage(len(stages), tuple(transforms), spec, below, shape, out))
            transforms, below = [], out
        else:
            transforms.append((spec, shape, out))
        shape = out
    if not stages:
        raise ValueError("A BLUR network needs at least one Dense or Conv2D layer.")
    if transforms:
        trailing = names[len(specs) - len(transforms):]
        raise ValueError(f"The network ends in {trailing}, which hold no neurons; the last "
                         "layer must be Dense or Conv2D.")
    return tuple(stages)


def network_output_shape(stages):
    return stages[-1].upper


def synapse_shapes(stage, k):
    """Public shapes of ``(W, V)``: dense ``[n + 1, m, k]``, ``[m, n, k]``; conv
    ``[kh·kw·c_in + 1, c_out, k]`` (rows ``(dy, dx, i)`` row-major, then the bias) and
    ``[kh·kw·c_out, c_in, k]`` (rows ``(dy, dx, o)``)."""
    if isinstance(stage.layer, Dense):
        n, m = stage.lower[0], stage.upper[0]
        return (n + 1, m, k), (m, n, k)
    kh, kw = stage.layer.kernel_size
    c_in, c_out = stage.lower[-1], stage.upper[-1]
    return (kh * kw * c_in + 1, c_out, k), (kh * kw * c_out, c_in, k)
