"""``BlurModel``'s checks: eager checks of its inputs and in-graph guards of its steps.

*Input checks* run in Python before a loop or a ``step`` starts and refuse, with one
sentence, what would fail deep inside TensorFlow or silently poison the synapses.
*In-graph guards* run inside the compiled step (any pipeline, any device): a ``Guard``
records the first failed batch of a loop, the step does not apply its update, and the
``Guardian`` callback raises with the batch it happened at.

Failure codes of a guard: 0 none, ``i > 0`` BLUR layer i went non-finite or runaway,
−1 bad labels, −2 a batch of one under batch statistics, ``COLLAPSED − i`` the step made the
network's output constant across its batch, layer i first (``first_collapsed_layer``).
"""

import keras
import numpy as np
import tensorflow as tf

from blur_keras.core.checks import collapsed_output, is_constant
from blur_keras.core.errors import NonFiniteError
from blur_keras.keras.targets import class_labels

__all__ = ["SYNAPSE_LIMIT", "COLLAPSED", "Guard", "Guardian", "first_nonfinite_layer",
           "first_collapsed_layer", "step_failure", "failure_message", "label_problem",
           "nonfinite_message", "check_arrays", "check_labels", "check_no_batch_of_one",
           "check_numeric_dtype", "check_step_batch", "is_array"]

# synapses beyond this magnitude are runaway: reported like non-finite ones, before they overflow
SYNAPSE_LIMIT = 1e8
# failure code COLLAPSED − i: the step made the output constant, BLUR layer i first
COLLAPSED = -10

NO_WEIGHTS = ("BlurModel.fit does not support {}: the genome's rule has no per-example weights "
              "(nothing is differentiated, so a weighted loss has no meaning here). Resample or "
              "repeat examples instead.")

BATCH_OF_ONE = ("BlurConfig.activation_norm normalises pre-activations over the batch, so with "
                "{} every hidden state becomes sigma(beta) whatever the input: use batches of "
                "2 or more examples (a batch_size that leaves no remainder of 1), or "
                "activation_norm=False; inference with BlurModel(inference='moving') takes "
                "any batch.")


# -- in-graph guards ---------------------------------------------------------------------------
def _all_finite(t):
    """Whether every entry of ``t`` is finite (a scalar bool tensor)."""
    return tf.reduce_all(tf.math.is_finite(t))


def _sane(t):
    """Finite, and no entry beyond ``SYNAPSE_LIMIT`` in magnitude."""
    return _all_finite(t) & (tf.reduce_max(tf.abs(t)) <= SYNAPSE_LIMIT)


def first_nonfinite_layer(synapses, states):
    """1-based index of the first BLUR layer with non-finite or runaway (``SYNAPSE_LIMIT``)
    synapses or non-finite states; 0 if none."""
    first = tf.constant(0, tf.int32)
    for i in range(len(synapses), 0, -1):
        w, v = synapses[i - 1]
        ok = _sane(w) & _sane(v) & _all_finite(states[i])
        first = tf.where(ok, first, tf.constant(i, tf.int32))
    return first


def first_collapsed_layer(before, outputs):
    """1-based index of the first BLUR layer whose output is constant across the batch after a
    step that made the network's output constant although it varied before
    (``core.checks.collapsed_output``); 0 when the step did not.

    ``before``: the network's output on the batch before the step, ``[B, C]``; ``outputs``:
    every BLUR layer's output (state 0, ``[B, n]``) on the same batch after the step, None for
    a layer not looked at (the last one is always given and named when no earlier one is
    constant).
    """
    first = tf.constant(len(outputs), tf.int32)
    for i in range(len(outputs) - 1, 0, -1):
        if outputs[i - 1] is not None:
            first = tf.where(is_constant(outputs[i - 1]), tf.constant(i, tf.int32), first)
    return tf.where(collapsed_output(before, outputs[-1]), first, 0)


def step_failure(synapses, states, outputs=None):
    """A step's failure code (module docstring): non-finite or runaway first, then a collapsed
    output (only when ``outputs``, the layers' outputs after the step, are given)."""
    nonfinite = first_nonfinite_layer(synapses, states)
    if outputs is None:
        return nonfinite
    collapsed = first_collapsed_layer(flat_examples(states[-1][..., 0]), outputs)
    return tf.where(nonfinite > 0, nonfinite, tf.where(collapsed > 0, COLLAPSED - collapsed, 0))


def flat_examples(t):
    """``[B, ...]`` -> ``[B, n]``: one row per example."""
    return tf.reshape(t, [-1, int(np.prod(t.shape[1:]))])


def failure_message(layers, code, where):
    """The sentence of the ``NonFiniteError`` for a step's failure code ``code`` > 0 or
    <= ``COLLAPSED``."""
    if code > 0:
        return nonfinite_message(layers, code, where)
    index = COLLAPSED - code
    return (f"BLUR layer {layers[index - 1].name!r} (layer {index} of {len(layers)}) gave the "
            f"same output for every example of the batch after {where}, though the network's "
            "output varied before it: the step collapsed the network to a constant output. "
            "Lower the genome's synapse update (eta_syn), check its synapse keep "
            "(f_syn), enable oja/saturation/synapse_norm in BlurConfig, or scale the inputs.")


def label_problem(y, targets, num_classes):
    """In-graph label check: ``(ok, first offending value)`` (any pipeline, any device)."""
    y = tf.convert_to_tensor(y)
    labels = class_labels(y, targets, num_classes)
    values = tf.reshape(tf.cast(y if labels is None else labels, tf.float64), [-1])
    bad = ~tf.math.is_finite(values)
    if labels is not None:
        bad |= (values < 0) | (values >= num_classes) | (values != tf.floor(values))
    first = tf.gather(tf.concat([values, [0.0]], 0),
                      tf.argmax(tf.concat([tf.cast(bad, tf.int32), [1]], 0)))
    return ~tf.reduce_any(bad), first


def nonfinite_message(layers, index, where):
    """The sentence of a ``NonFiniteError`` for BLUR layer ``index`` (1-based) of ``layers``."""
    layer = layers[index - 1]
    return (f"BLUR layer {layer.name!r} (layer {index} of {len(layers)}) got "
            f"non-finite synapses or activations (NaN/Inf, or synapses beyond "
            f"±{SYNAPSE_LIMIT:g}) at {where}. Lower the genome's synapse update (eta_syn), "
            "enable oja/saturation/synapse_norm in BlurConfig, or scale the inputs.")


class Guard:
    """In-graph record of the first failed batch of a loop (train or test).

    ``failure``: a failure code (module docstring); once set, no later batch of the loop
    changes the synapses (``steps_per_execution`` runs several batches in one call), and
    the ``Guardian`` raises with the batch it happened at.
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
        """Start a new loop: no failure, batch counter at 0."""
        for v in (self.failure, self.batch, self.label, self.counter):
            v.assign(tf.zeros_like(v))


class Guardian(keras.callbacks.Callback):
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
        loop = "training" if mode == "train" else "evaluation"
        where = f"{loop} batch {int(guard.batch.numpy())}"
        label = float(guard.label.numpy())
        guard.reset()
        raise _failure_error(self.model, failure, where, label, consequence)


def _failure_error(model, failure, where, label, consequence):
    """The exception that reports a guard's failure code."""
    if failure == -2:
        return ValueError(BATCH_OF_ONE.format(f"a batch of 1 at {where}") + f" ({consequence}.)")
    if failure > 0 or failure <= COLLAPSED:
        kept = "the last finite synapses" if failure > 0 else "the synapses before that step"
        return NonFiniteError(failure_message(model.blur_layers, failure, where) +
                              f" ({consequence}; {kept} were kept.)")
    if model.targets == "raw":
        return ValueError(f"Targets contain NaN or Inf at {where}; {consequence}.")
    return ValueError(
        f"Labels must be integers in [0, {model.num_classes}) for a last layer of "
        f"{model.num_classes} units; got label {label:g} at {where}; "
        f"{consequence}.")


# -- eager input checks ------------------------------------------------------------------------
def is_array(a):
    """Whether ``a`` is array data (NumPy, list, tensor) rather than a dataset or generator."""
    return isinstance(a, (np.ndarray, list)) or tf.is_tensor(a)


def check_no_batch_of_one(x, batch_size, batch_statistics):
    """Refuse, before a loop starts, array inputs that would make a batch of one where the
    pass normalises over its batch (``batch_statistics``: training, or inference in the
    ``"batch"`` mode)."""
    if not (is_array(x) and batch_statistics):
        return
    n = int(np.shape(x)[0])
    size = batch_size or 32
    if size == 1 and n > 1:
        raise ValueError(BATCH_OF_ONE.format("batch_size=1"))
    if n == 1 or (n > size and n % size == 1):
        raise ValueError(BATCH_OF_ONE.format(
            "a batch of 1" if n == 1 else f"{n} examples in batches of {size} (a last batch of 1)"))


def check_numeric_dtype(name, dtype):
    """``dtype`` (NumPy or TensorFlow) holds real numbers; ``TypeError`` naming ``name`` if not."""
    if isinstance(dtype, np.dtype) and dtype.kind in "USOV":
        raise TypeError(f"{name} must hold numbers (int or float); got dtype {dtype}.")
    dtype = tf.as_dtype(dtype)
    if dtype.is_complex:
        raise TypeError(f"{name} has complex dtype {dtype.name}; BLUR networks take real numbers "
                        "(pass the real part or the magnitude explicitly).")
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise TypeError(f"{name} must hold numbers (int or float); got dtype {dtype.name}.")


def check_step_batch(x, y, activation_norm):
    """The eager checks of ``BlurModel.step``: types, sizes, finiteness, batch of one."""
    for name, arr in (("x", x), ("labels", y)):
        check_numeric_dtype(name, arr.dtype if tf.is_tensor(arr) else np.asarray(arr).dtype)
    nx, ny = len(np.asarray(x)), len(np.asarray(y))
    if nx != ny:
        raise ValueError(f"x has {nx} examples but y has {ny}; they must be the same batch.")
    if nx == 0:
        raise ValueError("step() got an empty batch (0 examples); nothing to learn from.")
    if not np.all(np.isfinite(np.asarray(x, np.float64))):
        raise ValueError("x contains NaN or Inf; the inner step would poison the synapses.")
    if nx == 1 and activation_norm:
        raise ValueError(BATCH_OF_ONE.format("a batch of 1"))


def check_arrays(x, y, input_shape, num_classes, targets):
    """Eager checks of array inputs (datasets are checked in the graph by the guards);
    ``input_shape``: the built network's, or None."""
    if is_array(x):
        check_numeric_dtype("x", x.dtype if tf.is_tensor(x) else np.asarray(x).dtype)
        if np.shape(x)[:1] == (0,):
            raise ValueError("x is empty (0 examples).")
    if is_array(x) and isinstance(input_shape, tuple):
        shape = np.shape(x)
        if len(shape) != len(input_shape) or any(
                e is not None and s != e for s, e in zip(shape[1:], input_shape[1:])):
            raise ValueError(f"Input has shape {shape}; the network expects "
                             f"{tuple(input_shape)} (batch first).")
    if y is not None and is_array(y):
        check_labels(y, num_classes, targets)


def _check_raw_targets(y, num_classes):
    """Raw targets are finite rows of ``num_classes`` values."""
    arr = np.asarray(y, np.float64)
    if arr.ndim == 0 or arr.shape[-1] != num_classes:
        raise ValueError(f"Raw targets must have shape [batch, {num_classes}]; got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("Targets contain NaN or Inf.")


def check_labels(y, num_classes, targets):
    """Array labels fit the last layer: integer classes in range, or one-hot rows (raw
    targets: finite rows of ``num_classes`` values)."""
    if targets == "raw":
        return _check_raw_targets(y, num_classes)
    arr = np.asarray(y)
    if arr.dtype.kind in "USOV":
        raise TypeError(f"Labels must be numbers (integer classes or one-hot rows); got dtype "
                        f"{arr.dtype}.")
    if arr.dtype.kind == "c":
        raise TypeError(f"Labels have complex dtype {arr.dtype}; expected integers or one-hot "
                        "rows.")
    if arr.ndim == 2 and arr.shape[-1] == 1 and num_classes > 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError("Integer class labels expected; got non-integer values of "
                                 f"dtype {arr.dtype}.")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"Labels must be in [0, {num_classes}) for a last layer of "
                             f"{num_classes} units; got values in [{arr.min()}, {arr.max()}].")
    elif arr.ndim == 2:
        if arr.shape[-1] != num_classes:
            raise ValueError(f"One-hot labels must have {num_classes} columns; got shape "
                             f"{arr.shape}.")
    else:
        raise ValueError(f"Labels must be integers [batch] or one-hot [batch, {num_classes}]; "
                         f"got shape {arr.shape}.")
