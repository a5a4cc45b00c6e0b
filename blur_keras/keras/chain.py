"""What ``BlurModel`` needs to run a chain of BLUR layers that is more than ``BlurDense``
layers (docs/conv.md): which layers are BLUR layers, the layer specs of the chain, its checks,
its ties, and its inner step (``blur_keras.core.network``).  A chain of ``BlurDense`` layers
alone keeps the dense path (``blur_keras.core.step``).
"""

import tensorflow as tf

from blur_keras.core import conv, layer_specs, network
from blur_keras.core.layout import synapses_in, synapses_out
from blur_keras.core.synapses import sync as dense_sync
from blur_keras.keras.conv_layers import (BlurAveragePooling2D, BlurConv2D, BlurFlatten,
                                          BlurMaxPooling2D, BlurReshape)
from blur_keras.keras.layers import BlurDense

__all__ = ["BLUR_LAYERS", "is_blur_layer", "has_synapses", "is_dense_chain", "chain_specs",
           "chain_input_shape", "check_features",
           "check_chain", "sync_layer", "inner_step", "predict", "step_moments"]

BLUR_LAYERS = (BlurDense, BlurConv2D, BlurMaxPooling2D, BlurAveragePooling2D, BlurFlatten,
               BlurReshape)


def is_blur_layer(layer):
    return isinstance(layer, BLUR_LAYERS)


def has_synapses(layer):
    return isinstance(layer, (BlurDense, BlurConv2D))


def is_dense_chain(chain):
    return all(isinstance(layer, BlurDense) for layer in chain)


def _spec(layer):
    if isinstance(layer, BlurDense):
        return layer_specs.Dense(layer.units, layer.activation, layer.backward_activation)
    return layer.spec


def chain_specs(chain):
    return tuple(_spec(layer) for layer in chain)


def check_chain(chain, input_shape):
    """The chain fits its input (per-example ``input_shape``) and its own weights; returns
    the stages (``layer_specs.plan``).  Errors name the layer."""
    if isinstance(chain[0], (BlurFlatten, BlurReshape)):
        kind = type(chain[0]).__name__
        raise ValueError(f"{kind} {chain[0].name!r} is the first BLUR layer: shape plain "
                         f"features with keras.layers.{kind[4:]} instead.")
    if not isinstance(chain[-1], BlurDense):
        raise ValueError(f"BlurModel needs a BlurDense last layer (its outputs are the classes "
                         f"or targets); the chain ends in {chain[-1].name!r}.")
    stages = layer_specs.plan(input_shape, chain_specs(chain), [repr(l.name) for l in chain])
    layers = [layer for layer in chain if has_synapses(layer)]
    k = layers[0].k
    for stage, layer in zip(stages, layers):
        if layer.k != k:
            raise ValueError(f"BLUR layer {layer.name!r} has k={layer.k} but {layers[0].name!r} "
                             f"has k={k}.")
        for name, var, want in zip(("forward", "backward"), (layer.forward_synapses,
                                                             layer.backward_synapses),
                                   layer_specs.synapse_shapes(stage, k)):
            if tuple(var.shape) != want:
                raise ValueError(f"BLUR layer {layer.name!r} has {name} synapses of shape "
                                 f"{tuple(var.shape)} but its input needs {want}.")
    return stages


def sync_layer(layer, config, stage=None):
    """Apply the config's symmetric / single-state ties to a layer's stored synapses."""
    w, v = synapses_in(layer.forward_synapses), synapses_in(layer.backward_synapses)
    if isinstance(layer, BlurConv2D):
        w, v = conv.sync(w, v, layer.spec, config.symmetric, config.single_state)
    else:
        w, v = dense_sync(w, v, config.symmetric, config.single_state)
    layer.forward_synapses.assign(synapses_out(w))
    layer.backward_synapses.assign(synapses_out(v))


def inner_step(params, synapses, features, targets, chain, config, per_layer, fwd, bwd):
    """``network.inner_step`` of the chain on a batch of features."""
    return network.inner_step(params, synapses, features, tf.convert_to_tensor(targets),
                              chain_specs(chain), config, per_layer, fwd, bwd)


def predict(params, synapses, features, chain, config, per_layer, fwd):
    """``network.predict`` of the chain on a batch of features (state 0 of the last layer)."""
    return network.predict(params, synapses, features, chain_specs(chain), config, per_layer, fwd)


def step_moments(params, synapses, features, chain, config, per_layer, fwd):
    """``network.step_moments`` of the chain: the batch statistics a training step on
    ``features`` normalises with, ``[(mean, var) [n, k], …]`` per BLUR layer with synapses."""
    return network.step_moments(params, synapses, features, chain_specs(chain), config,
                                per_layer, fwd)


def chain_input_shape(chain):
    """Per-example shape of the features that enter the chain (its first layer built)."""
    first = chain[0]
    return (first.input_width,) if isinstance(first, BlurDense) else first.input_map


def check_features(features, chain, dtype):
    """The features entering the chain have its input shape; cast to the synapses' dtype."""
    features = tf.convert_to_tensor(features)
    want = chain_input_shape(chain)
    if tuple(features.shape[1:]) != tuple(want):
        raise ValueError(f"The first BLUR layer {chain[0].name!r} expects features of shape "
                         f"[batch, {', '.join(map(str, want))}]; got {tuple(features.shape)}.")
    if not (features.dtype.is_floating or features.dtype.is_integer or features.dtype.is_bool):
        raise TypeError(f"The features entering {chain[0].name!r} must hold numbers; got dtype "
                        f"{features.dtype.name}.")
    return tf.cast(features, dtype)
