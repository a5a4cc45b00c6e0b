"""``BlurModel``: a Keras model trained by a genome's rule, not by an optimizer.

``BlurModel(network, genome)`` wraps a Keras ``Sequential`` or functional
model (or a list of layers) that ends in a chain of ``BlurDense`` layers.
Standard layers in front of the chain (Rescaling, Flatten, a frozen feature
extractor) compute the features that enter state 0 of the first BLUR layer.

* ``model(x)`` / ``predict``: forward pass, state 0 of the last layer;
* ``step(x, y)``: one inner step (docs/spec.md §2) on a batch;
* ``fit``: one inner step per batch; no loss, no gradient, no optimizer;
  compiled metrics (default: accuracy) are computed on the prediction the
  network made on each batch before learning from it;
* ``evaluate``: metrics of the forward pass.
"""

import keras
import numpy as np
import tensorflow as tf

from blur_keras.core.config import BlurConfig
from blur_keras.core.errors import NonFiniteError
from blur_keras.core.normalization import INFERENCE_MOMENTUM
from blur_keras.rules.genome import Genome, resolve_config
from blur_keras.core.step import forward_pass, inner_step, layer_activations
from blur_keras.keras.inference import check_inference, record_moments, step_moments
from blur_keras.keras import chain as blur_chain
from blur_keras.keras import guards
from blur_keras.keras.guards import BATCH_OF_ONE, NO_WEIGHTS, check_numeric_dtype
from blur_keras.keras.targets import (TARGET_ENCODINGS, check_encoding, encode_targets,
                                       feedback_loss)
from blur_keras.rules.schedule import at_step
from blur_keras.core.layout import synapses_in, synapses_out
from blur_keras.core.synapses import initial_ties, sync

__all__ = ["BlurModel", "TARGET_ENCODINGS"]

SYNAPSE_LIMIT = guards.SYNAPSE_LIMIT


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
    blur_idx = [i for i, l in enumerate(layers) if blur_chain.is_blur_layer(l)]
    if not blur_idx:
        raise ValueError(f"Network {network.name!r} has no BlurDense layer.")
    first = blur_idx[0]
    blur_layers = layers[first:]
    others = [l.name for l in blur_layers if not blur_chain.is_blur_layer(l)]
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
        default, docs/spec.md §2 step 3), ``"one_hot"`` (0/1 one-hot) or ``"raw"``
        (``y`` is used as given: regression, or the backprop genome's MSE).
        Integer labels and one-hot labels are both accepted for the first two.
      check_finite: in ``fit`` and ``step``, stop with ``NonFiniteError`` naming the layer
        when synapses or activations become NaN/Inf, synapses run away (beyond
        ``SYNAPSE_LIMIT``), or a step makes the network's output constant across its batch
        (``core.checks.collapsed_output``); the synapses from before that step are kept.
      inference: under ``BlurConfig.activation_norm``, how ``predict``, ``evaluate`` and
        ``model(x)`` normalise: ``"moving"`` (default) with the statistics tracked while
        the rule trains (``blur_keras.keras.inference``), so a prediction does not depend
        on the rest of its batch; ``"batch"`` over the batch, as the training step does
        (a batch of one is then refused).
      inference_momentum: the tracked statistics' exponential-average momentum; the first
        ``1 / (1 − momentum)`` steps are averaged equally.

    A genome with a schedule (``blur_keras.rules.schedule``: synapse-update entries that ramp over
    the inner steps) gets a counter ``rule_step``, the steps the rule has taken on these
    synapses (saved with the model; ``fit`` and ``step`` advance it, a skipped step does
    not); set it to 0 when you give the model fresh synapses. Without a schedule
    ``rule_step`` is ``None``.
    """

    def __init__(self, network, genome, config=None, targets="pm1", check_finite=True,
                 inference="moving", inference_momentum=INFERENCE_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        check_inference(inference, inference_momentum)
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
        check_encoding(targets)
        if genome.species is not None:
            raise ValueError(f"BlurModel trains one network: pick one species of the genome "
                             f"(genome.species_member(i)); it has species={genome.species}.")
        genome.check_finite()
        network, features, chain_layers = _split_network(network)
        blur_layers = [l for l in chain_layers if blur_chain.has_synapses(l)]
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
        self.inference, self.inference_momentum = inference, float(inference_momentum)
        self.rule_step = None if not genome.schedule else self.add_weight(
            name="rule_step", shape=(), dtype="int64", initializer="zeros", trainable=False)
        self.moments_count = None if not config.activation_norm else self.add_weight(
            name="moments_count", shape=(), dtype="int64", initializer="zeros", trainable=False)
        self._stack = _Stack(features, blur_layers)
        self._stack.chain = chain_layers
        self._guards = None
        self.optimizer = None  # the genome trains; Keras utilities look for this attribute
        # not a loss (nothing is differentiated): the loss whose gradient the feedback writes
        self.feedback_loss = keras.metrics.Mean(name="feedback_loss")
        if network.built:
            self._on_network_built()

    # -- structure ------------------------------------------------------------
    @property
    def blur_layers(self):
        return list(self._stack.layers)

    @property
    def _conv_chain(self):
        """Whether the BLUR layers are more than BlurDense layers (``blur_keras.keras.chain``)."""
        return not blur_chain.is_dense_chain(self._stack.chain)

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
            layer.attach(self.genome, self.config, i, fwd[i], self.inference)
        if self._conv_chain:
            chain = self._stack.chain
            blur_chain.check_chain(chain, blur_chain.chain_input_shape(chain))
        prev = None if self._conv_chain else self._stack.layers[0].input_width
        for layer in () if self._conv_chain else self._stack.layers:
            if layer.input_width != prev:
                raise ValueError(f"BlurDense {layer.name!r} has input width {layer.input_width}, "
                                 f"expected {prev}.")
            prev = layer.units
        self.sync_synapses(initial=True)
        if self._guards is None:
            self._guards = {"train": guards.Guard("train"), "test": guards.Guard("test")}
        self.built = True

    def _ensure_built(self, x):
        """Build an unbuilt network (e.g. Sequential without ``keras.Input``) from the data."""
        if self.built:
            return
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, (tuple, list)) else spec
            shape = tuple(spec.shape)
        elif guards.is_array(x):
            shape = (None,) + tuple(np.shape(x))[1:]
        else:
            raise ValueError(
                f"BlurModel {self.name!r} is not built and its input shape cannot be read from "
                f"{type(x).__name__}: start the network with keras.Input(shape) or call "
                "model.build((None, *feature_shape)) first.")
        self.build(shape)

    def sync_synapses(self, initial=False):
        """Apply the symmetric / single-state ties of the config to the stored synapses
        (``initial``: also start a velocity channel at 0, ``BlurConfig.velocity_channel``)."""
        cfg = self.config
        for layer in self._stack.layers:
            if self._conv_chain:
                blur_chain.sync_layer(layer, self.config)
                continue
            w, v = synapses_in(layer.forward_synapses), synapses_in(layer.backward_synapses)
            w, v = (initial_ties(w, v, cfg) if initial else
                    sync(w, v, cfg.symmetric, cfg.single_state, cfg.velocity_channel))
            layer.forward_synapses.assign(synapses_out(w))
            layer.backward_synapses.assign(synapses_out(v))

    def synapses(self):
        return tuple((tf.convert_to_tensor(l.forward_synapses), tf.convert_to_tensor(l.backward_synapses))
                     for l in self._stack.layers)

    def assign_synapses(self, synapses):
        for layer, (w, v) in zip(self._stack.layers, synapses):
            layer.forward_synapses.assign(w)
            layer.backward_synapses.assign(v)

    # -- the math -------------------------------------------------------------
    @property
    def synapse_dtype(self):
        return self._stack.layers[0].forward_synapses.dtype

    def _features(self, x, training=False):
        check_numeric_dtype("x", tf.convert_to_tensor(x).dtype)
        feats = self._stack.features(x, training=training)
        if self._conv_chain:
            return blur_chain.check_features(feats, self._stack.chain, self.synapse_dtype)
        width = self._stack.layers[0].input_width
        if len(feats.shape) != 2 or feats.shape[-1] != width:
            raise ValueError(f"The first BlurDense layer expects features of shape [batch, {width}]; "
                             f"got {tuple(feats.shape)}.")
        check_numeric_dtype("the features entering the first BlurDense layer", feats.dtype)
        return tf.cast(feats, self.synapse_dtype)

    def call(self, x, training=False):
        """Prediction through the network's own layers: state 0 of the last BlurDense.

        Each ``BlurDense.call`` is ``forward.forward_layer`` on its synapses with the genome
        entries of its position, the same function ``inner_step`` runs for every layer, so
        ``model(x)`` equals ``core.step.predict`` on the same synapses (and, in the
        ``"moving"`` inference mode, the tracked statistics; tested); a chain with
        convolutions: ``core.network.predict``, likewise.
        """
        check_numeric_dtype("x", tf.convert_to_tensor(x).dtype)
        if self._batch_statistics(training) and tf.convert_to_tensor(x).shape[:1] == (1,):
            raise ValueError(BATCH_OF_ONE.format("a batch of 1"))
        return self.network(x, training=training)[..., 0]

    def _batch_statistics(self, training):
        """Whether a forward pass normalises over its batch (so needs 2 or more examples)."""
        return self.config.activation_norm and (training or self.inference == "batch")

    def encode_targets(self, y):
        """Labels (integer ``[B]``/``[B, 1]`` or one-hot ``[B, C]``) to feedback targets ``[B, C]``
        (``blur_keras.keras.targets``)."""
        y = tf.convert_to_tensor(y)
        check_numeric_dtype("labels", y.dtype)
        return encode_targets(y, self.targets, self.num_classes, self.synapse_dtype)

    def _inner(self, x, y, training=True):
        """One inner step on a batch: ``(new synapses, states, the batch's moments or None,
        the layers' outputs after the step or None)`` (``_outputs_after``)."""
        fwd, bwd = self.activations
        feats = self._features(x, training=training)
        if self.config.activation_norm and feats.shape[0] == 1:
            raise ValueError(BATCH_OF_ONE.format("a batch of 1"))
        params, synapses = self._rule_params(), self.synapses()
        if self._conv_chain:
            new, states = blur_chain.inner_step(params, synapses, feats, self.encode_targets(y),
                                                self._stack.chain, self.config,
                                                self.genome.per_layer, fwd, bwd)
        else:
            new, states = inner_step(params, synapses, feats, self.encode_targets(y),
                                     self.config, self.genome.per_layer, fwd, bwd)
        return new, states, self._step_moments(params, synapses, feats, fwd), \
            self._outputs_after(params, new, feats, fwd)

    def _step_moments(self, params, synapses, feats, fwd):
        """The batch statistics a step on ``feats`` normalises with (``inference``), per BLUR
        layer with synapses, ``[(mean, var) [n, k], …]``; None without ``activation_norm``."""
        if self.moments_count is None:
            return None
        if self._conv_chain:
            return blur_chain.step_moments(params, synapses, feats, self._stack.chain,
                                           self.config, self.genome.per_layer, fwd)
        return step_moments(params, synapses, feats, self.config, self.genome.per_layer, fwd)

    def _outputs_after(self, params, synapses, feats, fwd):
        """With ``check_finite``: every BLUR layer's output (state 0, ``[B, n]``) on the step's
        batch from the new synapses (a chain with convolutions: the last layer's only), for
        the collapse guard (``guards.first_collapsed_layer``); None without."""
        if not self.check_finite:
            return None
        per_layer = self.genome.per_layer
        if self._conv_chain:
            out = blur_chain.predict(params, synapses, feats, self._stack.chain, self.config,
                                     per_layer, fwd)
            return [None] * (len(synapses) - 1) + [guards.flat_examples(out)]
        states = forward_pass(params, synapses, feats, self.config, per_layer, fwd)
        return [a[..., 0] for a in states[1:]]

    def _record_moments(self, moments, apply=True):
        """Fold a step's batch statistics into the layers' tracked ones (``inference``)."""
        if moments is None:
            return
        record_moments(self._stack.layers, moments, self.moments_count, self.inference_momentum,
                       apply)
        self.moments_count.assign_add(tf.cast(apply, tf.int64))

    def _rule_params(self):
        """The genome's entries for the next step (its schedule at ``rule_step``)."""
        params = self.genome.params(self.synapse_dtype)
        if not self.genome.schedule:
            return params
        if self.rule_step is None:
            raise ValueError("The genome got a schedule after this BlurModel was built; build "
                             "the model from the scheduled genome.")
        return at_step(params, self.genome.schedule, self.rule_step)

    def step(self, x, y):
        """One inner step on a batch; returns the prediction made before the update.

        The batch is checked first (shapes, labels, finite values, not empty), and
        with ``check_finite`` the synapses are left unchanged, with a
        ``NonFiniteError``, when the step would make them non-finite.
        """
        guards.check_step_batch(x, y, self.config.activation_norm)
        self._ensure_built(x)
        self._check_arrays(x, y)
        new, states, moments, after = self._inner(x, y, training=True)
        if self.check_finite:
            code = int(guards.step_failure(new, states, after))
            if code:
                raise NonFiniteError(guards.failure_message(self.blur_layers, code, "this step")
                                     + " The synapses were left unchanged.")
        self.assign_synapses(new)
        self._record_moments(moments)
        if self.rule_step is not None:
            self.rule_step.assign_add(1)
        return states[-1][..., 0]

    def _check_arrays(self, x, y):
        """``guards.check_arrays`` against this model's input shape, classes and targets."""
        network = self.network
        shape = network.input_shape if self.built and hasattr(network, "input_shape") else None
        guards.check_arrays(x, y, shape, self.num_classes, self.targets)

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
        if sample_weight is not None:
            raise ValueError(NO_WEIGHTS.format("sample_weight"))
        labels_ok, bad_label = guards.label_problem(y, self.targets, self.num_classes)
        new, states, moments, after = self._inner(x, y, training=True)
        prediction = states[-1][..., 0]
        failure = tf.where(labels_ok, 0, -1)
        if self.check_finite:
            failure = tf.where(labels_ok, guards.step_failure(new, states, after), failure)
        if self.config.activation_norm:  # a batch of one (e.g. a remainder) is refused
            failure = tf.where(tf.shape(prediction)[0] == 1, -2, failure)
        apply = self._guards["train"].record(failure, bad_label)
        new = tf.nest.map_structure(lambda n, o: tf.where(apply, n, o), new, self.synapses())
        self.assign_synapses(new)
        self._record_moments(moments, apply)
        if self.rule_step is not None:
            self.rule_step.assign_add(tf.cast(apply, tf.int64))
        return self._metrics_for(x, y, prediction, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels_ok, bad_label = guards.label_problem(y, self.targets, self.num_classes)
        self._guards["test"].record(tf.where(labels_ok, 0, -1), bad_label)
        return self._metrics_for(x, y, self(x, training=False), sample_weight)

    def _metrics_for(self, x, y, prediction, sample_weight):
        self.feedback_loss.update_state(
            feedback_loss(prediction, self.encode_targets(y), self.config.feedback),
            sample_weight)
        return self.compute_metrics(x, y, prediction, sample_weight)

    def fit(self, x=None, y=None, callbacks=None, validation_data=None, **kwargs):
        for arg in ("sample_weight", "class_weight"):
            if kwargs.get(arg) is not None:
                raise ValueError(NO_WEIGHTS.format(arg))
        guards.check_no_batch_of_one(x, kwargs.get("batch_size"), self._batch_statistics(True))
        if not self.compiled:
            self.compile()
        self.genome.check_finite()
        self._ensure_built(x)
        self._check_arrays(x, y)
        if isinstance(validation_data, tuple) and len(validation_data) >= 2:
            self._check_arrays(validation_data[0], validation_data[1])
        callbacks = list(callbacks or []) + [guards.Guardian()]
        return super().fit(x, y, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, callbacks=None, **kwargs):
        if not self.compiled:
            self.compile()
        self._ensure_built(x)
        self._check_arrays(x, y)
        guards.check_no_batch_of_one(x, kwargs.get("batch_size"), self._batch_statistics(False))
        if not isinstance(callbacks, keras.callbacks.CallbackList):  # fit's validation passes one
            callbacks = list(callbacks or []) + [guards.Guardian()]
        return super().evaluate(x, y, callbacks=callbacks, **kwargs)

    def predict(self, x, **kwargs):
        self._ensure_built(x)
        self._check_arrays(x, None)
        guards.check_no_batch_of_one(x, kwargs.get("batch_size"), self._batch_statistics(False))
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
            "inference": self.inference,
            "inference_momentum": self.inference_momentum,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        genome = keras.saving.deserialize_keras_object(config.pop("genome"))
        return cls(network, genome, **config)
