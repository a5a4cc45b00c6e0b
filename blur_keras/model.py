"""``BlurModel``: a Keras model trained by a genome's rule, not by an optimizer.

``BlurModel(network, genome)`` wraps a Keras ``Sequential`` or functional
model (or a list of layers) that ends in a chain of ``BlurDense`` layers.
Standard layers in front of the chain (Rescaling, Flatten, a frozen feature
extractor) compute the features that enter state 0 of the first BLUR layer.

* ``model(x)`` / ``predict``: forward pass, state 0 of the last layer;
* ``step(x, y)``: one inner step (SPEC §2) on a batch;
* ``fit``: one inner step per batch; no loss, no gradient, no optimizer;
  compiled metrics (default: accuracy) are computed on the prediction the
  network made on each batch before learning from it;
* ``evaluate``: metrics of the forward pass.
"""

import keras
import numpy as np
import tensorflow as tf

from blur_keras.config import BlurConfig
from blur_keras.errors import NonFiniteError
from blur_keras.genome import Genome, resolve_config
from blur_keras.inner import inner_step, layer_activations, predict
from blur_keras.layers import BlurDense
from blur_keras.synapses import sync

__all__ = ["BlurModel", "TARGET_ENCODINGS"]

TARGET_ENCODINGS = ("pm1", "one_hot", "raw")


class _Stack:
    """The split of a network (kept out of Keras tracking: the layers belong to ``network``)."""

    def __init__(self, features, blur_layers):
        self.features, self.layers = features, blur_layers


def _split_network(network):
    """Split into a feature function and the trailing chain of BlurDense layers."""
    if isinstance(network, (list, tuple)):
        network = keras.Sequential(list(network))
    if not isinstance(network, keras.Model):
        raise TypeError(f"BlurModel needs a keras Sequential/functional model or a list of layers, "
                        f"got {type(network).__name__}.")
    layers = network.layers
    blur_idx = [i for i, l in enumerate(layers) if isinstance(l, BlurDense)]
    if not blur_idx:
        raise ValueError(f"Network {network.name!r} has no BlurDense layer.")
    first = blur_idx[0]
    blur_layers = layers[first:]
    others = [l.name for l in blur_layers if not isinstance(l, BlurDense)]
    if others:
        raise ValueError(
            f"The BlurDense layers of {network.name!r} must form a chain at the end of the network; "
            f"found non-BLUR layers {others} after the first BlurDense.")
    if isinstance(network, keras.Sequential):
        prefix = layers[:first]

        def features(x, training=False):
            for layer in prefix:
                x = layer(x, training=training)
            return x
    else:
        for prev, nxt in zip(blur_layers[:-1], blur_layers[1:]):
            if nxt.input is not prev.output:
                raise ValueError(f"BlurDense {nxt.name!r} must take the output of {prev.name!r} "
                                 "as its only input.")
        if network.outputs[0] is not blur_layers[-1].output or len(network.outputs) != 1:
            raise ValueError("The network's single output must be its last BlurDense layer.")
        start = blur_layers[0].input
        if any(start is t for t in network.inputs):
            features = lambda x, training=False: x  # noqa: E731
        else:
            sub = keras.Model(network.inputs, start)
            features = lambda x, training=False: sub(x, training=training)  # noqa: E731
    return network, features, blur_layers


@keras.saving.register_keras_serializable(package="blur_keras")
class BlurModel(keras.Model):
    """A network of BLUR layers plus the genome that trains it.

    Args:
      network: Sequential/functional Keras model, or list of layers, ending in
        a chain of ``BlurDense`` layers (all with the genome's k).
      genome: a ``Genome`` (no species axis), or the path of a genome JSON file.
      config: ``BlurConfig`` switches, or its dict; default: the genome's own
        (a genome file carries the config it was trained with), else
        ``BlurConfig()``. An explicit config contradicting the genome's is an error.
      targets: how labels become the feedback targets: ``"pm1"`` (±1 one-hot,
        default, SPEC §2 step 3), ``"one_hot"`` (0/1 one-hot) or ``"raw"``
        (``y`` is used as given: regression, or the backprop genome's MSE).
        Integer labels and one-hot labels are both accepted for the first two.
      check_finite: in ``fit``, stop with ``NonFiniteError`` naming the layer
        when synapses or activations become NaN/Inf (the last finite synapses
        are kept).
    """

    def __init__(self, network, genome, config=None, targets="pm1", check_finite=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(genome, str):  # a genome file: it carries its config
            genome = Genome.load_json(genome)
        if isinstance(genome, Genome):
            config = resolve_config(genome, config)
        if isinstance(config, dict):
            config = BlurConfig.from_dict(config)
        config = config or BlurConfig()
        if not isinstance(config, BlurConfig):
            raise TypeError(f"config must be a BlurConfig or dict, got {type(config).__name__}.")
        if not isinstance(genome, Genome):
            raise TypeError(f"genome must be a blur_keras.Genome, got {type(genome).__name__}.")
        if targets not in TARGET_ENCODINGS:
            raise ValueError(f"targets={targets!r}; expected one of {list(TARGET_ENCODINGS)}.")
        if genome.species is not None:
            raise ValueError(f"BlurModel trains one network: pick one species of the genome "
                             f"(genome.species_member(i)); it has species={genome.species}.")
        genome.check_finite()
        network, features, blur_layers = _split_network(network)
        for layer in blur_layers:
            if layer.k != genome.k:
                raise ValueError(f"Genome has k={genome.k} states but BlurDense {layer.name!r} has "
                                 f"k={layer.k}; they must match.")
        if genome.per_layer and genome.num_layers != len(blur_layers):
            raise ValueError(f"Per-layer genome has num_layers={genome.num_layers} but the network "
                             f"has {len(blur_layers)} BlurDense layers.")
        self.network = network
        self.genome = genome
        self.config = config
        self.targets = targets
        self.check_finite = check_finite
        self._stack = _Stack(features, blur_layers)
        self._nonfinite = None
        self.optimizer = None  # the genome trains; Keras utilities look for this attribute
        # not a loss (nothing is differentiated): how far predictions are from the feedback targets
        self.feedback_mse = keras.metrics.Mean(name="feedback_mse")
        if network.built:
            self._on_network_built()

    # -- structure ------------------------------------------------------------
    @property
    def blur_layers(self):
        return list(self._stack.layers)

    @property
    def num_classes(self):
        return self._stack.layers[-1].units

    @property
    def activations(self):
        """Forward and backward σ names of layers 1…L."""
        return layer_activations(self.config, len(self._stack.layers),
                                 [l.activation for l in self._stack.layers],
                                 [l.backward_activation for l in self._stack.layers])

    def build(self, input_shape):
        if not self.network.built:
            self.network.build(input_shape)
        self._on_network_built()

    def _on_network_built(self):
        fwd, _ = self.activations
        for i, layer in enumerate(self._stack.layers):
            layer.attach(self.genome, self.config, i, fwd[i])
        prev = self._stack.layers[0].input_width
        for layer in self._stack.layers:
            if layer.input_width != prev:
                raise ValueError(f"BlurDense {layer.name!r} has input width {layer.input_width}, "
                                 f"expected {prev}.")
            prev = layer.units
        self.sync_synapses()
        if self._nonfinite is None:
            self._nonfinite = tf.Variable(0, dtype=tf.int32, trainable=False, name="nonfinite_layer")
        self.built = True

    def sync_synapses(self):
        """Apply the symmetric / single-state ties of the config to the stored synapses."""
        for layer in self._stack.layers:
            w, v = sync(layer.forward_synapses, layer.backward_synapses,
                        self.config.symmetric, self.config.single_state)
            layer.forward_synapses.assign(w)
            layer.backward_synapses.assign(v)

    def synapses(self):
        return tuple((tf.convert_to_tensor(l.forward_synapses), tf.convert_to_tensor(l.backward_synapses))
                     for l in self._stack.layers)

    def assign_synapses(self, synapses):
        for layer, (w, v) in zip(self._stack.layers, synapses):
            layer.forward_synapses.assign(w)
            layer.backward_synapses.assign(v)

    # -- the math -------------------------------------------------------------
    def _features(self, x, training=False):
        feats = self._stack.features(x, training=training)
        width = self._stack.layers[0].input_width
        if len(feats.shape) != 2 or feats.shape[-1] != width:
            raise ValueError(f"The first BlurDense layer expects features of shape [batch, {width}]; "
                             f"got {tuple(feats.shape)}.")
        return tf.cast(feats, self._stack.layers[0].forward_synapses.dtype)

    def call(self, x, training=False):
        fwd, _ = self.activations
        return predict(self.genome.params(), self.synapses(), self._features(x, training),
                       self.config, self.genome.per_layer, fwd)

    def encode_targets(self, y):
        """Labels (integer ``[B]``/``[B, 1]`` or one-hot ``[B, C]``) to feedback targets ``[B, C]``."""
        c = self.num_classes
        if self.targets == "raw":
            return tf.cast(y, tf.float32)
        y = tf.convert_to_tensor(y)
        if len(y.shape) == 2 and y.shape[-1] == 1 and c > 1:
            y = y[:, 0]
        if len(y.shape) == 1:
            one_hot = tf.one_hot(tf.cast(y, tf.int32), c)
        else:
            one_hot = tf.cast(y, tf.float32)
        if self.targets == "pm1":
            return 2.0 * one_hot - 1.0
        return one_hot

    def _inner(self, x, y):
        fwd, bwd = self.activations
        feats = self._features(x, training=False)
        return inner_step(self.genome.params(), self.synapses(), feats, self.encode_targets(y),
                          self.config, self.genome.per_layer, fwd, bwd)

    def step(self, x, y):
        """One inner step on a batch; returns the prediction made before the update."""
        if not self.built:
            self.build(tuple(np.shape(x)))
        _check_labels(y, self.num_classes, self.targets)
        new, states = self._inner(x, y)
        self.assign_synapses(new)
        return states[-1][..., 0]

    # -- Keras training -------------------------------------------------------
    def compile(self, metrics=("accuracy",), **kwargs):
        """Like ``keras.Model.compile`` but without optimizer or loss: the genome trains."""
        for arg in ("optimizer", "loss"):
            if kwargs.get(arg) is not None:
                raise ValueError(f"BlurModel is trained by its genome; {arg}= is not used.")
            kwargs.pop(arg, None)
        super().compile(optimizer=None, loss=None,
                        metrics=list(metrics) if metrics is not None else None, **kwargs)
        self._loss_tracker = None  # there is no loss
        self._blur_compile_config = {"metrics": metrics, **kwargs}

    def get_compile_config(self):
        if not self.compiled:
            return None
        config = dict(self._blur_compile_config)
        if config.get("metrics") is not None:
            config["metrics"] = [keras.saving.serialize_keras_object(m) for m in config["metrics"]]
        return config

    def compile_from_config(self, config):
        config = dict(config)
        if config.get("metrics") is not None:
            config["metrics"] = [keras.saving.deserialize_keras_object(m) for m in config["metrics"]]
        self.compile(**config)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        new, states = self._inner(x, y)
        prediction = states[-1][..., 0]
        if self.check_finite:
            first_bad = _first_nonfinite_layer(new, states)
            ok = tf.equal(first_bad, 0)
            new = tf.nest.map_structure(lambda n, o: tf.where(ok, n, o), new, self.synapses())
            self._nonfinite.assign(tf.where(tf.equal(self._nonfinite, 0), first_bad, self._nonfinite))
        self.assign_synapses(new)
        return self._metrics_for(x, y, prediction, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return self._metrics_for(x, y, self(x, training=False), sample_weight)

    def _metrics_for(self, x, y, prediction, sample_weight):
        err = tf.reduce_mean(tf.square(prediction - self.encode_targets(y)), axis=-1)
        self.feedback_mse.update_state(err, sample_weight)
        return self.compute_metrics(x, y, prediction, sample_weight)

    def fit(self, x=None, y=None, callbacks=None, validation_data=None, **kwargs):
        if not self.compiled:
            self.compile()
        self.genome.check_finite()
        _check_arrays(self, x, y)
        if isinstance(validation_data, tuple) and len(validation_data) >= 2:
            _check_arrays(self, validation_data[0], validation_data[1])
        callbacks = list(callbacks or [])
        if self.check_finite:
            callbacks.append(_NonFiniteGuard())
        return super().fit(x, y, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        if not self.compiled:
            self.compile()
        _check_arrays(self, x, y)
        return super().evaluate(x, y, **kwargs)

    def predict(self, x, **kwargs):
        _check_arrays(self, x, None)
        return super().predict(x, **kwargs)

    # -- serialisation --------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "genome": keras.saving.serialize_keras_object(self.genome),
            "config": self.config.to_dict(),
            "targets": self.targets,
            "check_finite": self.check_finite,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        genome = keras.saving.deserialize_keras_object(config.pop("genome"))
        return cls(network, genome, **config)


def _all_finite(t):
    return tf.reduce_all(tf.math.is_finite(t))


def _first_nonfinite_layer(synapses, states):
    """1-based index of the first BLUR layer with non-finite synapses or states; 0 if none."""
    first = tf.constant(0, tf.int32)
    for i in range(len(synapses), 0, -1):
        w, v = synapses[i - 1]
        ok = _all_finite(w) & _all_finite(v) & _all_finite(states[i])
        first = tf.where(ok, first, tf.constant(i, tf.int32))
    return first


class _NonFiniteGuard(keras.callbacks.Callback):
    """Stops ``fit`` with a clear error when a layer went non-finite."""

    def on_train_batch_end(self, batch, logs=None):
        index = int(self.model._nonfinite.numpy())
        if index:
            self.model._nonfinite.assign(0)
            layer = self.model.blur_layers[index - 1]
            raise NonFiniteError(
                f"BLUR layer {layer.name!r} (layer {index} of {len(self.model.blur_layers)}) got "
                f"non-finite synapses or activations (NaN/Inf) at training batch {batch}; training "
                "stopped and the last finite synapses were kept. Lower the genome's synapse update "
                "(eta_syn), enable oja/saturation/synapse_norm in BlurConfig, or scale the inputs.")


def _is_array(a):
    return isinstance(a, (np.ndarray, list)) or tf.is_tensor(a)


def _check_arrays(model, x, y):
    """Eager checks of array inputs (datasets/generators are checked by Keras and the layers)."""
    if _is_array(x) and model.built:
        shape = np.shape(x)
        expected = model.network.input_shape if hasattr(model.network, "input_shape") else None
        if expected is not None and isinstance(expected, tuple):
            if len(shape) != len(expected) or any(
                    e is not None and s != e for s, e in zip(shape[1:], expected[1:])):
                raise ValueError(f"Input has shape {shape}; the network expects "
                                 f"{tuple(expected)} (batch first).")
    if y is not None and _is_array(y):
        _check_labels(y, model.num_classes, model.targets)


def _check_labels(y, num_classes, targets):
    if targets == "raw":
        arr = np.asarray(y, np.float64)
        if arr.ndim == 0 or arr.shape[-1] != num_classes:
            raise ValueError(f"Raw targets must have shape [batch, {num_classes}]; got {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError("Targets contain NaN or Inf.")
        return
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[-1] == 1 and num_classes > 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError(f"Integer class labels expected; got non-integer values of dtype {arr.dtype}.")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"Labels must be in [0, {num_classes}) for a last layer of "
                             f"{num_classes} units; got values in [{arr.min()}, {arr.max()}].")
    elif arr.ndim == 2:
        if arr.shape[-1] != num_classes:
            raise ValueError(f"One-hot labels must have {num_classes} columns; got shape {arr.shape}.")
    else:
        raise ValueError(f"Labels must be integers [batch] or one-hot [batch, {num_classes}]; "
                         f"got shape {arr.shape}.")
