"""``BlurDense``: a Keras layer whose neurons and synapses carry k states.

The layer owns its forward synapses ``W`` (``[n_in + 1, units, k]``, last row
is the bias) and backward synapses ``V`` (``[units, n_in, k]``).  They are
non-trainable Keras weights: no optimizer touches them, the genome's rule
does (see ``BlurModel``).  The math lives in ``blur_keras.core.forward`` etc.; this
class is a thin stateful wrapper like ``keras.layers.Dense``.
"""

import keras
import numpy as np
import tensorflow as tf

from blur_keras.core import activations as activations_lib
from blur_keras.core.config import BlurConfig
from blur_keras.core.forward import forward_layer, input_states
from blur_keras.core.step import layer_params
from blur_keras.core.layout import states_in, states_out, synapses_in

__all__ = ["BlurDense"]


class LayerContext:
    """What a BLUR layer needs from its model to run alone (not Keras-tracked)."""

    def __init__(self, genome, config, index, activation, inference="moving"):
        self.genome, self.config, self.index, self.activation = genome, config, index, activation
        self.inference = inference


class TrackedLayer:
    """What the BLUR layers with synapses (``BlurDense``, ``BlurConv2D``) share towards
    ``BlurModel``: the context it attaches and, under activation normalisation, the statistics
    ``moving_mean`` / ``moving_variance`` ``[units or channels, k]`` tracked while the rule
    trains (docs/spec.md §9)."""

    def add_moving_statistics(self, units):
        """The tracked statistics' weights (built with the synapses)."""
        self.moving_mean = self.add_weight(name="moving_mean", shape=(units, self.k),
                                           initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=(units, self.k),
                                               initializer="ones", trainable=False)

    def attach(self, genome, config, index, activation, inference="moving"):
        """Called by ``BlurModel``: the genome, switches, position and σ this layer runs with,
        and its inference mode (``"moving"``: tracked statistics, ``"batch"``: the batch's)."""
        self._context = LayerContext(genome, config, index, activation, inference)

    @property
    def moments(self):
        """``(moving_mean, moving_variance)`` in the core's internal layout ``[k, 1, n]``."""
        return tuple(states_in(tf.convert_to_tensor(t)[None]) for t in
                     (self.moving_mean, self.moving_variance))


def _checked_int(name, value, low, expected):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise ValueError(f"BlurDense {name}={value!r}; expected {expected}.")
    return int(value)


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurDense(TrackedLayer, keras.layers.Layer):
    """Densely connected BLUR layer with k-state neurons and synapses.

    Args:
      units: number of neurons.
      k: number of states per neuron and channels per synapse (≥ 2).
      activation: forward σ of this layer; ``None`` takes the model's default
        (``BlurConfig.hidden_activation`` or ``last_activation`` by position).
      backward_activation: σ of the backward pass into this layer; ``None``
        takes ``BlurConfig.backward_activation``.
      kernel_initializer: initialiser of each channel of ``W[:n_in]``.
      bias_initializer: initialiser of the bias row ``W[n_in]``.
      backward_initializer: initialiser of ``V`` (ignored when the model's
        synapses are symmetric: then ``V = W[:n_in]ᵀ``).

    Input: ``[batch, n_in]`` (features enter state 0) or ``[batch, n_in, k]``
    (the states of a preceding BlurDense).  Output: ``[batch, units, k]``.

    Under ``BlurConfig.activation_norm`` the layer also keeps ``moving_mean`` and
    ``moving_variance`` (``[units, k]``, non-trainable): the statistics of its forward
    pre-activation tracked while the rule trains (``BlurModel``), which inference
    (``training=False``) normalises with, like Keras's ``BatchNormalization``.
    """

    def __init__(self, units, k=2, activation=None, backward_activation=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 backward_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        units = _checked_int("units", units, 1, "a positive int")
        k = _checked_int("k", k, 2, "an int >= 2 (number of states)")
        for name, value in (("activation", activation), ("backward_activation", backward_activation)):
            if value is not None and value not in activations_lib.names():
                raise ValueError(f"BlurDense {name}={value!r} is not a known activation; "
                                 f"expected one of {activations_lib.names()}.")
        self.units = units
        self.k = k
        self.activation = activation
        self.backward_activation = backward_activation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.backward_initializer = keras.initializers.get(backward_initializer)
        self._context = None

    def _input_width(self, input_shape):
        if len(input_shape) == 2:
            return input_shape[-1]
        if len(input_shape) == 3:
            if input_shape[-1] != self.k:
                raise ValueError(
                    f"BlurDense {self.name!r} has k={self.k} states but its multistate input has "
                    f"{input_shape[-1]} states (shape {tuple(input_shape)}).")
            return input_shape[-2]
        raise ValueError(
            f"BlurDense {self.name!r} expects input of shape [batch, features] or "
            f"[batch, features, k]; got shape {tuple(input_shape)}. Put a Flatten layer in front.")

    def build(self, input_shape):
        n = self._input_width(input_shape)
        if n is None:
            raise ValueError(f"BlurDense {self.name!r} needs a known input width; got {input_shape}.")
        self.input_width = n

        def kernel_init(shape, dtype=None):
            rows = [self.kernel_initializer((n, self.units), dtype=dtype) for _ in range(self.k)]
            bias = [self.bias_initializer((1, self.units), dtype=dtype) for _ in range(self.k)]
            return tf.concat([tf.stack(rows, -1), tf.stack(bias, -1)], axis=0)

        def backward_init(shape, dtype=None):
            return tf.stack([self.backward_initializer((self.units, n), dtype=dtype)
                             for _ in range(self.k)], -1)

        self.forward_synapses = self.add_weight(
            name="forward_synapses", shape=(n + 1, self.units, self.k),
            initializer=kernel_init, trainable=False)
        self.backward_synapses = self.add_weight(
            name="backward_synapses", shape=(self.units, n, self.k),
            initializer=backward_init, trainable=False)
        self.add_moving_statistics(self.units)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units, self.k)

    def call(self, inputs, genome=None, training=False):
        """Forward states of this layer from its input (docs/spec.md §2 step 2), after a reset.

        Needs a genome: the one ``BlurModel`` attached, or ``genome=``.  With activation
        normalisation, ``training=False`` normalises with the tracked statistics when the
        model's inference mode is ``"moving"`` (the default), else over the batch.
        """
        ctx = self._context
        if genome is None and ctx is None:
            raise ValueError(
                f"BlurDense {self.name!r} has no genome: wrap the network in "
                "blur_keras.BlurModel(network, genome=...) or call the layer with genome=.")
        genome = genome if genome is not None else ctx.genome
        config = ctx.config if ctx is not None else BlurConfig()
        activation = self.activation or (ctx.activation if ctx is not None else config.hidden_activation)
        per_layer = genome.per_layer
        index = ctx.index if (ctx and per_layer) else 0
        params = layer_params(genome.params(self.forward_synapses.dtype), index, per_layer, 0)
        inputs = tf.cast(inputs, self.forward_synapses.dtype)  # integer features (raw pixels)
        states = states_in(inputs) if len(inputs.shape) == 3 else input_states(inputs, self.k)
        w = synapses_in(tf.convert_to_tensor(self.forward_synapses))
        moving = (not training and config.activation_norm and ctx is not None
                  and ctx.inference == "moving")
        return states_out(forward_layer(states, w, params, config, activation,
                                        moments=self.moments if moving else None))

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, k=self.k, activation=self.activation,
            backward_activation=self.backward_activation,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            backward_initializer=keras.initializers.serialize(self.backward_initializer),
        )
        return config
