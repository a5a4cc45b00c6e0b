"""Keras layers of convolutional BLUR networks (docs/conv.md): ``BlurConv2D`` and the
parameter-free ``BlurMaxPooling2D``, ``BlurAveragePooling2D``, ``BlurFlatten`` and
``BlurReshape`` that pass all k states between BLUR layers.  Thin wrappers: the math is ``blur_keras.core.conv`` and
``blur_keras.core.pooling``; ``BlurModel`` trains them by the genome's rule.

Multistate tensors put the state axis last: feature maps ``[batch, H, W, C, k]``, flat
layers ``[batch, n, k]``.  A plain ``[batch, H, W, C]`` input enters state 0.
"""

import keras
import numpy as np
import tensorflow as tf

from blur_keras.core import activations as activations_lib
from blur_keras.core import conv, layer_specs, pooling
from blur_keras.core.config import BlurConfig
from blur_keras.core.layout import synapses_in
from blur_keras.core.step import layer_params
from blur_keras.keras.layers import TrackedLayer, LayerContext

__all__ = ["BlurConv2D", "BlurMaxPooling2D", "BlurAveragePooling2D", "BlurFlatten",
           "BlurReshape"]


def _to_internal(states):
    """``[B, …, k] -> [k, B, …]``."""
    rank = states.shape.rank
    return tf.transpose(states, [rank - 1] + list(range(rank - 1)))


def _to_public(states):
    """``[k, B, …] -> [B, …, k]``."""
    return tf.transpose(states, list(range(1, states.shape.rank)) + [0])


def _checked(owner, name, make):
    try:
        return make()
    except ValueError as err:
        raise ValueError(f"{owner} {name!r}: {err}") from None


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurConv2D(TrackedLayer, keras.layers.Layer):
    """Convolutional BLUR layer: every position of the output map holds k states.

    Args:
      filters, kernel_size, strides, padding: as ``keras.layers.Conv2D`` (``"valid"`` or
        ``"same"``).
      k: states per neuron and channels per synapse (≥ 2).
      activation, backward_activation: σ names; ``None`` takes the model's.
      kernel_initializer, bias_initializer, backward_initializer: Keras initialisers of each
        channel of the kernel ``[kh, kw, c_in, c_out]``, the bias and of V
        ``[kh, kw, c_out, c_in]``.

    Weights: ``forward_synapses`` ``[kh·kw·c_in + 1, c_out, k]`` (the kernel's rows
    ``(dy, dx, i)``, then the bias row), ``backward_synapses`` ``[kh·kw·c_out, c_in, k]``, and
    ``moving_mean``, ``moving_variance`` ``[c_out, k]``: under ``BlurConfig.activation_norm``
    the statistics of its forward pre-activation (per channel and state, over batch and
    positions) tracked while the rule trains (``BlurModel``), which inference
    (``training=False``) normalises with, as ``BlurDense`` does.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", k=2, activation=None,
                 backward_activation=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", backward_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.spec = _checked("BlurConv2D", self.name, lambda: layer_specs.Conv2D(
            filters, kernel_size, strides, padding, activation, backward_activation))
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"BlurConv2D {self.name!r} k={k!r}; expected an int >= 2.")
        for name, value in (("activation", activation), ("backward_activation",
                                                         backward_activation)):
            if value is not None and value not in activations_lib.names():
                raise ValueError(f"BlurConv2D {self.name!r} {name}={value!r} is not a known "
                                 f"activation; expected one of {activations_lib.names()}.")
        self.k = int(k)
        self.initializers = [keras.initializers.get(i) for i in
                             (kernel_initializer, bias_initializer, backward_initializer)]
        self._context = None

    filters = property(lambda self: self.spec.filters)
    activation = property(lambda self: self.spec.activation)
    backward_activation = property(lambda self: self.spec.backward_activation)

    def _map_shape(self, input_shape):
        if len(input_shape) == 5 and input_shape[-1] != self.k:
            raise ValueError(f"BlurConv2D {self.name!r} has k={self.k} states but its "
                             f"multistate input has {input_shape[-1]} (shape "
                             f"{tuple(input_shape)}).")
        if len(input_shape) not in (4, 5) or None in tuple(input_shape[1:4]):
            raise ValueError(f"BlurConv2D {self.name!r} expects [batch, height, width, channels]"
                             f" (or with a last state axis of {self.k}) of known size; got "
                             f"{tuple(input_shape)}.")
        return tuple(int(s) for s in input_shape[1:4])

    def build(self, input_shape):
        self.input_map = self._map_shape(input_shape)
        self.output_map = layer_specs.output_shape(self.spec, self.input_map, repr(self.name))
        (kh, kw), c_in, c_out, k = self.spec.kernel_size, self.input_map[-1], self.filters, self.k
        kernel, bias, backward = self.initializers

        def forward_init(shape, dtype=None):
            rows = [tf.reshape(kernel((kh, kw, c_in, c_out), dtype=dtype), [-1, c_out])
                    for _ in range(k)]
            biases = [tf.reshape(bias((c_out,), dtype=dtype), [1, c_out]) for _ in range(k)]
            return tf.concat([tf.stack(rows, -1), tf.stack(biases, -1)], axis=0)

        def backward_init(shape, dtype=None):
            return tf.stack([tf.reshape(backward((kh, kw, c_out, c_in), dtype=dtype), [-1, c_in])
                             for _ in range(k)], -1)

        self.forward_synapses = self.add_weight(
            name="forward_synapses", shape=(kh * kw * c_in + 1, c_out, k),
            initializer=forward_init, trainable=False)
        self.backward_synapses = self.add_weight(
            name="backward_synapses", shape=(kh * kw * c_out, c_in, k),
            initializer=backward_init, trainable=False)
        self.add_moving_statistics(c_out)

    def compute_output_shape(self, input_shape):
        shape = layer_specs.output_shape(self.spec, self._map_shape(input_shape), repr(self.name))
        return (input_shape[0],) + shape + (self.k,)

    @property
    def kernel(self):
        """Channel c of the forward kernel as ``[kh, kw, c_in, c_out, k]`` (a copy)."""
        return tf.reshape(self.forward_synapses[:-1], [*self.spec.kernel_size, -1, self.filters,
                                                       self.k])

    @property
    def bias(self):
        """``[c_out, k]`` (a copy)."""
        return tf.convert_to_tensor(self.forward_synapses[-1])

    def call(self, inputs, genome=None, training=False):
        """Forward states of this layer after a reset (docs/conv.md): ``[B, H', W', c_out, k]``.

        With activation normalisation, ``training=False`` normalises with the tracked
        statistics when the model's inference mode is ``"moving"`` (the default), else over
        the batch and positions."""
        if genome is None and self._context is None:
            raise ValueError(f"BlurConv2D {self.name!r} has no genome: wrap the network in "
                             "blur_keras.BlurModel(network, genome=...) or call it with genome=.")
        ctx = self._context or LayerContext(None, BlurConfig(), 0, None, "batch")
        genome = genome if genome is not None else ctx.genome
        config, index, inference = ctx.config, ctx.index, ctx.inference
        activation = self.activation or ctx.activation or config.hidden_activation
        dtype = self.forward_synapses.dtype
        params = layer_params(genome.params(dtype), index if genome.per_layer else 0,
                              genome.per_layer, 0)
        w = synapses_in(tf.convert_to_tensor(self.forward_synapses))
        inputs = tf.cast(inputs, dtype)
        moving = not training and config.activation_norm and inference == "moving"
        moments = self.moments if moving else None
        if inputs.shape.rank == 4:
            out = conv.input_conv_forward_layer(inputs, w, params, config, activation, self.spec,
                                                moments)
        else:
            out = conv.conv_forward_layer(_to_internal(inputs), w, params, config, activation,
                                          self.spec, moments)
        return _to_public(out)

    def load_own_variables(self, store):
        """A file written before conv layers tracked statistics holds the synapses alone: they
        load, and ``moving_mean`` / ``moving_variance`` keep their start values."""
        if len(store.keys()) == 2:
            for i, var in enumerate((self.forward_synapses, self.backward_synapses)):
                var.assign(store[str(i)])
            return
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        spec = self.spec
        config.update(filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
                      padding=spec.padding, k=self.k, activation=spec.activation,
                      backward_activation=spec.backward_activation)
        for key, init in zip(("kernel_initializer", "bias_initializer", "backward_initializer"),
                             self.initializers):
            config[key] = keras.initializers.serialize(init)
        return config


class _BlurPooling2D(keras.layers.Layer):
    """Pooling of all k states (``pooling.pool_routes``); a plain map pools as itself."""

    kind = None

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.spec = _checked(type(self).__name__, self.name, lambda: layer_specs.Pool2D(
            self.kind, pool_size, strides, padding))

    def _map_shape(self, input_shape):
        if len(input_shape) not in (4, 5) or None in tuple(input_shape[1:4]):
            raise ValueError(f"{type(self).__name__} {self.name!r} expects a feature map "
                             f"[batch, height, width, channels(, k)] of known size; got "
                             f"{tuple(input_shape)}.")
        return tuple(int(s) for s in input_shape[1:4])

    def compute_output_shape(self, input_shape):
        shape = layer_specs.output_shape(self.spec, self._map_shape(input_shape), repr(self.name))
        return (input_shape[0],) + shape + tuple(input_shape[4:])

    def build(self, input_shape):
        self.input_map = self._map_shape(input_shape)
        self.output_map = layer_specs.output_shape(self.spec, self.input_map, repr(self.name))

    def call(self, inputs):
        states = inputs[None] if inputs.shape.rank == 4 else _to_internal(inputs)
        out, _ = pooling.transform_forward(states, self.spec, self.input_map)
        return out[0] if inputs.shape.rank == 4 else _to_public(out)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.spec.pool_size, strides=self.spec.strides,
                      padding=self.spec.padding)
        return config


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurMaxPooling2D(_BlurPooling2D):
    """Max pooling in BLUR form: every state is read at, and every backward state routed to,
    the position where state 0 is largest in the window (as backprop routes a max)."""

    kind = "max"


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurAveragePooling2D(_BlurPooling2D):
    """Average pooling of every state; the backward states spread evenly over the window."""

    kind = "avg"


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurFlatten(keras.layers.Layer):
    """``[batch, H, W, C, k] -> [batch, H·W·C, k]``: every state of every position and channel
    as one neuron axis, forward and backward."""

    spec = layer_specs.Flatten()

    def build(self, input_shape):
        if len(input_shape) < 3 or None in tuple(input_shape[1:]):
            raise ValueError(f"{type(self).__name__} {self.name!r} expects multistate input "
                             f"[batch, …, k] of known size (the output of a BLUR layer); got "
                             f"{tuple(input_shape)}.")
        self.input_map = tuple(int(s) for s in input_shape[1:-1])
        layer_specs.output_shape(self.spec, self.input_map, repr(self.name))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:-1])), input_shape[-1])

    def call(self, inputs):
        return tf.reshape(inputs, [-1, int(np.prod(inputs.shape[1:-1])), inputs.shape[-1]])


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurReshape(BlurFlatten):
    """``[batch, …, k] -> [batch, *target_shape, k]``: the neurons of a BLUR layer in another
    per-example shape (row-major), every state forward and backward, e.g. a ``BlurDense``
    layer's ``(n,)`` as a feature map ``(H, W, C)`` for a ``BlurConv2D`` (``build`` checks
    like ``BlurFlatten``'s)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.spec = _checked("BlurReshape", self.name, lambda: layer_specs.Reshape(target_shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.spec.target_shape + (input_shape[-1],)

    def call(self, inputs):
        return tf.reshape(inputs, [-1, *self.spec.target_shape, inputs.shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(target_shape=self.spec.target_shape)
        return config
