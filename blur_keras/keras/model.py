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
from blur_keras.core.feedback import pm1_from_one_hot, pm1_targets
from blur_keras.rules.genome import Genome, resolve_config
from blur_keras.core.step import inner_step, layer_activations
from blur_keras.keras.inference import check_inference, record_moments, step_moments
from blur_keras.keras import chain as blur_chain
from blur_keras.rules.schedule import at_step
from blur_keras.core.layout import synapses_in, synapses_out
from blur_keras.core.synapses import initial_ties, sync

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
      check_finite: in ``fit``, stop with ``NonFiniteError`` naming the layer
        when synapses or activations become NaN/Inf (the last finite synapses
        are kept).
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
                 inference="moving", inference_momentum=0.9, **kwargs):
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
        if targets not in TARGET_ENCODINGS:
            raise ValueError(f"targets={targets!r}; expected one of {list(TARGET_ENCODINGS)}.")
        if genome.species is not None:
            raise ValueError(f"BlurModel trains one network: pick one species of the genome "
                             f"(genome.species_member(i)); it has species={genome.species}.")
        genome.check_finite()
        network, features, chain_layers = _split_network(network)
        blur_layers = [l for l in chain_layers if blur_chain.has_synapses(l)]
        if not blur_chain.is_dense_chain(chain_layers) and config.activation_norm \
                and inference == "moving":
            raise ValueError("A network with BlurConv2D/pooling/BlurFlatten layers normalises "
                             "activations over the batch at inference too: pass "
                             "inference='batch' (tracked statistics exist for BlurDense "
                             "chains only).")
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
        # not a loss (nothing is differentiated): how far predictions are from the feedback targets
        self.feedback_mse = keras.metrics.Mean(name="feedback_mse")
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
            self._guards = {"train": _Guard("train"), "test": _Guard("test")}
        self.built = True

    def _ensure_built(self, x):
        """Build an unbuilt network (e.g. Sequential without ``keras.Input``) from the data."""
        if self.built:
            return
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, (tuple, list)) else spec
            shape = tuple(spec.shape)
        elif _is_array(x):
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
        _check_numeric_dtype("x", tf.convert_to_tensor(x).dtype)
        feats = self._stack.features(x, training=training)
        if self._conv_chain:
            return blur_chain.check_features(feats, self._stack.chain, self.synapse_dtype)
        width = self._stack.layers[0].input_width
        if len(feats.shape) != 2 or feats.shape[-1] != width:
            raise ValueError(f"The first BlurDense layer expects features of shape [batch, {width}]; "
                             f"got {tuple(feats.shape)}.")
        _check_numeric_dtype("the features entering the first BlurDense layer", feats.dtype)
        return tf.cast(feats, self.synapse_dtype)

    def call(self, x, training=False):
        """Prediction through the network's own layers: state 0 of the last BlurDense.

        Each ``BlurDense.call`` is ``forward.forward_layer`` on its synapses with the genome
        entries of its position, the same function ``inner_step`` runs for every layer, so
        ``model(x)`` equals ``core.step.predict`` on the same synapses (and, in the
        ``"moving"`` inference mode, the tracked statistics; tested).
        """
        _check_numeric_dtype("x", tf.convert_to_tensor(x).dtype)
        if self._batch_statistics(training) and tf.convert_to_tensor(x).shape[:1] == (1,):
            raise ValueError(_BATCH_OF_ONE.format("a batch of 1"))
        return self.network(x, training=training)[..., 0]

    def _batch_statistics(self, training):
        """Whether a forward pass normalises over its batch (so needs 2 or more examples)."""
        return self.config.activation_norm and (training or self.inference == "batch")

    def _class_labels(self, y):
        """Integer-label view of ``y`` (``[B]``), or None for one-hot / raw targets."""
        y = tf.convert_to_tensor(y)
        _check_numeric_dtype("labels", y.dtype)
        if self.targets == "raw":
            return None
        if len(y.shape) == 2 and y.shape[-1] == 1 and self.num_classes > 1:
            return y[:, 0]
        return y if len(y.shape) == 1 else None

    def encode_targets(self, y):
        """Labels (integer ``[B]``/``[B, 1]`` or one-hot ``[B, C]``) to feedback targets ``[B, C]``."""
        c, dtype = self.num_classes, self.synapse_dtype
        y = tf.convert_to_tensor(y)
        if self.targets == "raw":
            return tf.cast(y, dtype)
        labels = self._class_labels(y)
        if labels is not None and self.targets == "pm1":
            return pm1_targets(labels, c, dtype)
        if labels is not None:
            return tf.one_hot(tf.cast(labels, tf.int32), c, dtype=dtype)
        if len(y.shape) != 2 or y.shape[-1] != c:
            raise ValueError(f"Labels must be integers [batch] or one-hot [batch, {c}]; "
                             f"got shape {tuple(y.shape)}.")
        one_hot = tf.cast(y, dtype)
        return pm1_from_one_hot(one_hot) if self.targets == "pm1" else one_hot

    def _label_problem(self, y):
        """In-graph label check: ``(ok, first offending value)`` (any pipeline, any device)."""
        y = tf.convert_to_tensor(y)
        labels = self._class_labels(y)
        values = tf.reshape(tf.cast(y if labels is None else labels, tf.float64), [-1])
        bad = ~tf.math.is_finite(values)
        if labels is not None:
            bad |= (values < 0) | (values >= self.num_classes) | (values != tf.floor(values))
        first = tf.gather(tf.concat([values, [0.0]], 0),
                          tf.argmax(tf.concat([tf.cast(bad, tf.int32), [1]], 0)))
        return ~tf.reduce_any(bad), first

    def _inner(self, x, y, training=True):
        """One inner step on a batch: ``(new synapses, states, the batch's moments or None)``."""
        fwd, bwd = self.activations
        feats = self._features(x, training=training)
        if self.config.activation_norm and feats.shape[0] == 1:
            raise ValueError(_BATCH_OF_ONE.format("a batch of 1"))
        params, synapses = self._rule_params(), self.synapses()
        if self._conv_chain:
            return blur_chain.inner_step(params, synapses, feats, self.encode_targets(y),
                                         self._stack.chain, self.config, self.genome.per_layer,
                                         fwd, bwd) + (None,)
        new, states = inner_step(params, synapses, feats, self.encode_targets(y), self.config,
                                 self.genome.per_layer, fwd, bwd)
        moments = None
        if self.moments_count is not None:
            moments = step_moments(params, synapses, feats, self.config, self.genome.per_layer,
                                   fwd)
        return new, states, moments

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
        _check_step_batch(self, x, y)
        self._ensure_built(x)
        _check_arrays(self, x, y)
        new, states, moments = self._inner(x, y, training=True)
        if self.check_finite:
            index = int(_first_nonfinite_layer(new, states))
            if index:
                raise NonFiniteError(self._nonfinite_message(index, "this step") +
                                     " The synapses were left unchanged.")
        self.assign_synapses(new)
        self._record_moments(moments)
        if self.rule_step is not None:
            self.rule_step.assign_add(1)
        return states[-1][..., 0]

    def _nonfinite_message(self, index, where):
        layer = self.blur_layers[index - 1]
        return (f"BLUR layer {layer.name!r} (layer {index} of {len(self.blur_layers)}) got "
                f"non-finite synapses or activations (NaN/Inf, or synapses beyond "
                f"±{SYNAPSE_LIMIT:g}) at {where}. Lower the genome's synapse update (eta_syn), "
                "enable oja/saturation/synapse_norm in BlurConfig, or scale the inputs.")

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
            raise ValueError(_NO_WEIGHTS.format("sample_weight"))
        labels_ok, bad_label = self._label_problem(y)
        new, states, moments = self._inner(x, y, training=True)
        prediction = states[-1][..., 0]
        failure = tf.where(labels_ok, 0, -1)
        if self.check_finite:
            failure = tf.where(labels_ok, _first_nonfinite_layer(new, states), failure)
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
        labels_ok, bad_label = self._label_problem(y)
        self._guards["test"].record(tf.where(labels_ok, 0, -1), bad_label)
        return self._metrics_for(x, y, self(x, training=False), sample_weight)

    def _metrics_for(self, x, y, prediction, sample_weight):
        err = tf.reduce_mean(tf.square(prediction - self.encode_targets(y)), axis=-1)
        self.feedback_mse.update_state(err, sample_weight)
        return self.compute_metrics(x, y, prediction, sample_weight)

    def fit(self, x=None, y=None, callbacks=None, validation_data=None, **kwargs):
        for arg in ("sample_weight", "class_weight"):
            if kwargs.get(arg) is not None:
                raise ValueError(_NO_WEIGHTS.format(arg))
        _check_no_batch_of_one(self, x, kwargs.get("batch_size"), training=True)
        if not self.compiled:
            self.compile()
        self.genome.check_finite()
        self._ensure_built(x)
        _check_arrays(self, x, y)
        if isinstance(validation_data, tuple) and len(validation_data) >= 2:
            _check_arrays(self, validation_data[0], validation_data[1])
        callbacks = list(callbacks or []) + [_Guardian()]
        return super().fit(x, y, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, callbacks=None, **kwargs):
        if not self.compiled:
            self.compile()
        self._ensure_built(x)
        _check_arrays(self, x, y)
        _check_no_batch_of_one(self, x, kwargs.get("batch_size"), training=False)
        if not isinstance(callbacks, keras.callbacks.CallbackList):  # fit's validation passes one
            callbacks = list(callbacks or []) + [_Guardian()]
        return super().evaluate(x, y, callbacks=callbacks, **kwargs)

    def predict(self, x, **kwargs):
        self._ensure_built(x)
        _check_arrays(self, x, None)
        _check_no_batch_of_one(self, x, kwargs.get("batch_size"), training=False)
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


def _all_finite(t):
    return tf.reduce_all(tf.math.is_finite(t))


# synapses beyond this magnitude are runaway: reported like non-finite ones, before they overflow
SYNAPSE_LIMIT = 1e8


def _sane(t):
    return _all_finite(t) & (tf.reduce_max(tf.abs(t)) <= SYNAPSE_LIMIT)


def _first_nonfinite_layer(synapses, states):
    """1-based index of the first BLUR layer with non-finite or runaway (``SYNAPSE_LIMIT``)
    synapses or non-finite states; 0 if none."""
    first = tf.constant(0, tf.int32)
    for i in range(len(synapses), 0, -1):
        w, v = synapses[i - 1]
        ok = _sane(w) & _sane(v) & _all_finite(states[i])
        first = tf.where(ok, first, tf.constant(i, tf.int32))
    return first


class _Guard:
    """In-graph record of the first failed batch of a loop (train or test).

    ``failure``: 0 none, ``i > 0`` layer i went non-finite, −1 bad labels; once set, no
    later batch of the loop changes the synapses (``steps_per_execution`` runs several
    batches in one call), and the callback raises with the batch it happened at.
    """

    def __init__(self, mode):
        self.mode = mode
        self.failure = tf.Variable(0, dtype=tf.int32, trainable=False, name=f"{mode}_failure")
        self.batch = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{mode}_failed_batch")
        self.label = tf.Variable(0.0, dtype=tf.float64, trainable=False, name=f"{mode}_bad_label")
        self.counter = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{mode}_batch")

    def record(self, failure, bad_label):
        """Record this batch's failure code; returns whether its update may be applied."""
        clean = tf.equal(self.failure, 0)
        failed_now = clean & tf.not_equal(failure, 0)
        self.failure.assign(tf.where(clean, failure, self.failure))
        self.batch.assign(tf.where(failed_now, self.counter, self.batch))
        self.label.assign(tf.where(failed_now, bad_label, self.label))
        self.counter.assign_add(1)
        return clean & tf.equal(failure, 0)

    def reset(self):
        for v in (self.failure, self.batch, self.label, self.counter):
            v.assign(tf.zeros_like(v))


class _Guardian(keras.callbacks.Callback):
    """Raises, with the batch it happened at, what the in-graph guards recorded."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model._guards["train"].reset()

    def on_test_begin(self, logs=None):
        self.model._guards["test"].reset()

    def on_train_batch_end(self, batch, logs=None):
        self._raise_if_failed("train", "training stopped: no synapse changed from that batch on")

    def on_test_batch_end(self, batch, logs=None):
        self._raise_if_failed("test", "evaluation stopped")

    def _raise_if_failed(self, mode, consequence):
        guard = self.model._guards[mode]
        failure = int(guard.failure.numpy())
        if not failure:
            return
        where = f"{'training' if mode == 'train' else 'evaluation'} batch {int(guard.batch.numpy())}"
        label = float(guard.label.numpy())
        guard.reset()
        if failure == -2:
            raise ValueError(_BATCH_OF_ONE.format(f"a batch of 1 at {where}") + f" ({consequence}.)")
        if failure > 0:
            raise NonFiniteError(self.model._nonfinite_message(failure, where) +
                                 f" ({consequence}; the last finite synapses were kept.)")
        model = self.model
        if model.targets == "raw":
            raise ValueError(f"Targets contain NaN or Inf at {where}; {consequence}.")
        raise ValueError(
            f"Labels must be integers in [0, {model.num_classes}) for a last layer of "
            f"{model.num_classes} units; got label {label:g} at {where}; "
            f"{consequence}.")


_NO_WEIGHTS = ("BlurModel.fit does not support {}: the genome's rule has no per-example weights "
               "(nothing is differentiated, so a weighted loss has no meaning here). Resample or "
               "repeat examples instead.")

_BATCH_OF_ONE = ("BlurConfig.activation_norm normalises pre-activations over the batch, so with "
                 "{} every hidden state becomes sigma(beta) whatever the input: use batches of "
                 "2 or more examples (a batch_size that leaves no remainder of 1), or "
                 "activation_norm=False; inference with BlurModel(inference='moving') takes "
                 "any batch.")


def _check_no_batch_of_one(model, x, batch_size, training):
    """Refuse, before a loop starts, array inputs that would make a batch of one where the
    pass normalises over its batch (training, or inference in the ``"batch"`` mode)."""
    if not (_is_array(x) and model._batch_statistics(training)):
        return
    n = int(np.shape(x)[0])
    size = batch_size or 32
    if size == 1 and n > 1:
        raise ValueError(_BATCH_OF_ONE.format("batch_size=1"))
    if n == 1 or (n > size and n % size == 1):
        raise ValueError(_BATCH_OF_ONE.format(
            "a batch of 1" if n == 1 else f"{n} examples in batches of {size} (a last batch of 1)"))


def _check_numeric_dtype(name, dtype):
    if isinstance(dtype, np.dtype) and dtype.kind in "USOV":
        raise TypeError(f"{name} must hold numbers (int or float); got dtype {dtype}.")
    dtype = tf.as_dtype(dtype)
    if dtype.is_complex:
        raise TypeError(f"{name} has complex dtype {dtype.name}; BLUR networks take real numbers "
                        "(pass the real part or the magnitude explicitly).")
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise TypeError(f"{name} must hold numbers (int or float); got dtype {dtype.name}.")


def _check_step_batch(model, x, y):
    """The eager checks of ``step``: types, sizes, finiteness, batch of one."""
    for name, arr in (("x", x), ("labels", y)):
        _check_numeric_dtype(name, arr.dtype if tf.is_tensor(arr) else np.asarray(arr).dtype)
    nx, ny = len(np.asarray(x)), len(np.asarray(y))
    if nx != ny:
        raise ValueError(f"x has {nx} examples but y has {ny}; they must be the same batch.")
    if nx == 0:
        raise ValueError("step() got an empty batch (0 examples); nothing to learn from.")
    if not np.all(np.isfinite(np.asarray(x, np.float64))):
        raise ValueError("x contains NaN or Inf; the inner step would poison the synapses.")
    if nx == 1 and model.config.activation_norm:
        raise ValueError(_BATCH_OF_ONE.format("a batch of 1"))


def _is_array(a):
    return isinstance(a, (np.ndarray, list)) or tf.is_tensor(a)


def _check_arrays(model, x, y):
    """Eager checks of array inputs (datasets are checked in the graph by the guards)."""
    if _is_array(x):
        _check_numeric_dtype("x", x.dtype if tf.is_tensor(x) else np.asarray(x).dtype)
        if np.shape(x)[:1] == (0,):
            raise ValueError("x is empty (0 examples).")
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
    if arr.dtype.kind in "USOV":
        raise TypeError(f"Labels must be numbers (integer classes or one-hot rows); got dtype "
                        f"{arr.dtype}.")
    if arr.dtype.kind == "c":
        raise TypeError(f"Labels have complex dtype {arr.dtype}; expected integers or one-hot rows.")
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
