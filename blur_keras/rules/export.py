"""Export a learned rule as a SavedModel usable without blur_keras.

The module holds the genome as variables and these functions, with the
synapses passed as a flat list ``W^0, V^0, W^1, V^1, …`` (no population
axes):

* ``init(seed)`` -> the flat synapses of a fresh network of the export sizes;
* ``init_sized(seed, sizes)`` -> the same for other widths (same depth);
* ``train_step(*synapses, x, y)`` -> the synapses after one BLUR inner step on
  the batch ``x [B, n_0]`` (float32/float64) with integer labels ``y [B]``
  (int32/int64) in ``[0, n_L)``;
* ``predict(*synapses, x)`` -> ``[B, n_L]`` (state 0 of the last layer);
* ``genome()`` -> dict of the genome entries; ``metadata_json``: the config,
  init scale, per-layer flag, sizes and what the exporter added.

The layer sizes are given at export time; with ``dynamic=True`` (default) the
functions accept any widths with the export depth. Wrong shapes, widths and
labels stop with a one-line ``InvalidArgumentError`` before any computation, as do
what ``BlurModel.step`` refuses: an empty batch, NaN or Inf in ``x``, a batch of one
under ``activation_norm`` (batch statistics), and a wrong number of synapse tensors.
Load with ``tf.saved_model.load(path)``; nothing of blur_keras is imported.
"""

import json
import os

import tensorflow as tf

from blur_keras.core.step import inner_step, predict
from blur_keras.core.feedback import pm1_targets
from blur_keras.core.synapses import flatten_pairs, init_synapses, pair_up, sync

__all__ = ["LearnedRule", "export_saved_model"]


def _fail(message_parts):
    """A one-line in-graph error: the message is a formatted string, nothing else printed."""
    return [tf.strings.join([tf.strings.as_string(p) if not isinstance(p, str) else p
                             for p in message_parts])]


def _dims(t, n):
    """The first ``n`` dimensions of ``t`` (-1 where ``t`` has fewer axes): shape checks
    must not fail on a wrong rank before the rank check speaks."""
    return tf.concat([tf.shape(t), -tf.ones([n], tf.int32)], 0)[:n]


def _check(ok, *message):
    return tf.debugging.Assert(ok, _fail(message), summarize=1)


class LearnedRule(tf.Module):
    """A genome (no species axis) with ``init``/``train_step``/``predict`` functions.

    ``sizes`` (``n_0 … n_L``) fixes the depth and ``init``'s widths. With
    ``dynamic=True`` (default) ``train_step``/``predict`` accept synapses of any widths
    with that depth (``init_sized(seed, sizes)`` draws them); with ``dynamic=False`` every
    width must equal ``sizes``. Every shape, label and dtype problem the functions can
    see is an error with a one-line message (``InvalidArgumentError``), checked before
    any computation.
    """

    def __init__(self, genome_values, config, sizes, init_scale=1.0, per_layer=False,
                 dynamic=True, metadata=None):
        super().__init__(name="learned_rule")
        self.sizes = tuple(int(s) for s in sizes)
        self.k = int(genome_values["nu"].shape[-1])
        self.dynamic = bool(dynamic)
        self._config, self._per_layer, self._init_scale = config, per_layer, float(init_scale)
        self.genome_vars = {n: tf.Variable(v, name=n, trainable=False)
                            for n, v in sorted(genome_values.items())}
        self.config_json = tf.Variable(json.dumps(config.to_dict()), trainable=False)
        info = {"config": config.to_dict(), "init_scale": float(init_scale),
                "per_layer": bool(per_layer), "sizes": list(self.sizes), "k": self.k,
                "dynamic": self.dynamic, **(metadata or {})}
        self.metadata_json = tf.Variable(json.dumps(info), trainable=False)
        num_syn = 2 * (len(self.sizes) - 1)
        self.init = tf.function(self._init, input_signature=[tf.TensorSpec([], tf.int64)],
                                autograph=False)
        self.init_sized = tf.function(
            self._init_sized, autograph=False,
            input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([len(self.sizes)], tf.int32)])
        self._train_math_fn = tf.function(self._train_math, autograph=False)
        self._predict_math_fn = tf.function(self._predict_math, autograph=False)
        self.train_step = tf.function(self._train_step, autograph=False)
        self.predict = tf.function(self._predict, autograph=False)
        # one concrete function per accepted dtype pair; shapes (even ranks) are checked
        # inside, so the caller gets a sentence rather than a dump of the arguments
        for count in [num_syn] + self._wrong_counts():
            self._trace(count)
        self.genome = tf.function(self._genome, input_signature=[], autograph=False)

    def _wrong_counts(self):
        """Synapse counts that get a function saying the count is wrong (one line), rather
        than TensorFlow's "Could not find matching concrete function" listing."""
        num_syn = 2 * (len(self.sizes) - 1)
        return [c for c in range(0, num_syn + 5) if c != num_syn]

    def _trace(self, count):
        """``train_step`` and ``predict`` for ``count`` synapse tensors, every accepted dtype."""
        any_float = [tf.TensorSpec(None, tf.float32)] * count
        for x_dtype in (tf.float32, tf.float64):
            x_spec = tf.TensorSpec(None, x_dtype, name="x")
            for y_dtype in (tf.int32, tf.int64):
                self.train_step.get_concrete_function(*any_float, x_spec,
                                                      tf.TensorSpec(None, y_dtype, name="y"))
            self.predict.get_concrete_function(*any_float, x_spec)

    def _count_error(self, name, flat, x):
        """A check that always fails: ``flat`` holds the wrong number of synapse tensors."""
        depth = len(self.sizes) - 1
        expected = ", ".join(f"W^{l}, V^{l}" for l in range(depth))
        after = "x, y" if name == "train_step" else "x"
        return _check(tf.equal(tf.rank(x), -1), f"{name}: expected {2 * depth} synapse "
                      f"tensors ({expected}) then {after}; got {len(flat)} tensors before "
                      f"{after} (this rule has {depth} layer pairs).")

    def signature_functions(self):
        num_syn = 2 * (len(self.sizes) - 1)
        any_float = [tf.TensorSpec(None, tf.float32)] * num_syn
        x_spec = tf.TensorSpec(None, tf.float32, name="x")
        return {"train_step": self.train_step.get_concrete_function(
                    *any_float, x_spec, tf.TensorSpec(None, tf.int32, name="y")),
                "predict": self.predict.get_concrete_function(*any_float, x_spec)}

    def _params(self):
        return {n: tf.convert_to_tensor(v) for n, v in self.genome_vars.items()}

    def _pack(self, flat):
        return pair_up(flat)

    def _init(self, seed):
        return flatten_pairs(init_synapses(seed, self.sizes, self.k, (), self._config,
                                           self._init_scale))

    def _init_sized(self, seed, sizes):
        """``init`` for other widths (same depth; ``dynamic`` exports only)."""
        if not self.dynamic:
            _check(tf.reduce_all(tf.equal(sizes, self.sizes)), "init_sized: this rule was "
                   f"exported for the sizes {list(self.sizes)} only (dynamic=False); got ",
                   tf.strings.reduce_join(tf.strings.as_string(sizes), separator=","), ".")
        _check(tf.reduce_all(sizes >= 1), "init_sized: every size must be >= 1.")
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, tf.constant(0, tf.int64)]),
                                                       2 * (len(self.sizes) - 1))
        flat = []
        for l in range(len(self.sizes) - 1):
            n, m = sizes[l], sizes[l + 1]
            nf, mf = tf.cast(n, tf.float32), tf.cast(m, tf.float32)
            w = tf.random.stateless_normal(tf.stack([n, m, self.k]), seeds[2 * l]) * (
                self._init_scale / tf.sqrt(nf))
            w = tf.concat([w, tf.zeros(tf.stack([1, m, self.k]))], axis=0)
            v = tf.random.stateless_normal(tf.stack([m, n, self.k]), seeds[2 * l + 1]) * (
                self._init_scale / tf.sqrt(mf))
            w, v = sync(w, v, self._config.symmetric, self._config.single_state,
                        self._config.velocity_channel)
            flat += [w, v]
        return flat

    def _checked(self, name, flat, x, y=None):
        """Assert ranks, widths and labels with one-line messages; return the tensors,
        usable only after every check passed (x cast to float32, y to int32)."""
        k, depth = self.k, len(self.sizes) - 1
        checks = []
        for l in range(depth):
            w, v = flat[2 * l], flat[2 * l + 1]
            for sym, t in ((f"W^{l}", w), (f"V^{l}", v)):
                checks.append(_check(tf.equal(tf.rank(t), 3), f"{name}: synapse {sym} must have rank 3 "
                       f"([rows, cols, k={k}]); got shape [",
                       tf.strings.reduce_join(tf.strings.as_string(tf.shape(t)), separator=","), "]."))
        shapes = [_dims(t, 3) for t in flat]
        widths = [shapes[0][0] - 1] + [shapes[2 * l][1] for l in range(depth)]
        for l in range(depth):
            ws, vs = shapes[2 * l], shapes[2 * l + 1]
            checks.append(_check(tf.reduce_all(tf.equal([ws[2], vs[2]], k)), f"{name}: synapses of layer pair "
                   f"{l} must have k={k} states (last axis)."))
            if l > 0:
                checks.append(_check(tf.equal(ws[0] - 1, shapes[2 * l - 2][1]), f"{name}: W^{l} has ", ws[0],
                       f" rows; expected W^{l - 1}'s ", shapes[2 * l - 2][1], " columns + 1 (bias)."))
            checks.append(_check(tf.reduce_all(tf.equal([vs[0], vs[1]], [ws[1], ws[0] - 1])),
                   f"{name}: V^{l} must have shape [", ws[1], ", ", ws[0] - 1, f", {k}] (W^{l} "
                   "transposed without the bias row); got [", vs[0], ", ", vs[1], ", ", vs[2], "]."))
        if not self.dynamic:
            checks.append(_check(tf.reduce_all(tf.equal(tf.stack(widths), self.sizes)),
                   f"{name}: this rule was exported for the layer sizes {list(self.sizes)} "
                   "only (dynamic=False); the synapses have sizes [",
                   tf.strings.reduce_join(tf.strings.as_string(tf.stack(widths)), separator=","), "]."))
        checks.append(_check(tf.equal(tf.rank(x), 2), f"{name}: x must have shape [batch, features]; got rank ",
               tf.rank(x), "."))
        xs = _dims(x, 2)
        checks.append(_check(tf.equal(xs[-1], widths[0]), f"{name}: x has ", xs[-1], " features per example "
               "but the synapses expect ", widths[0], "."))
        checks += self._batch_checks(name, x, xs[0])
        x = tf.cast(x, tf.float32)
        if y is None:
            return self._after(checks, flat, x)
        checks.append(_check(tf.equal(tf.rank(y), 1), f"{name}: y must be a vector of integer labels [batch]; "
               "got rank ", tf.rank(y), "."))
        checks.append(_check(tf.equal(tf.size(y), xs[0]), f"{name}: x has ", xs[0], " examples but y has ",
               tf.size(y), " labels."))
        num_classes = tf.cast(widths[-1], y.dtype)
        checks.append(_check(tf.reduce_all(tf.logical_and(y >= 0, y < num_classes)),
                             f"{name}: labels must be integers in [0, ", widths[-1],
                             "); got values from ", tf.reduce_min(y), " to ", tf.reduce_max(y),
                             "."))
        return self._after(checks, flat, x, tf.cast(y, tf.int32))

    def _batch_checks(self, name, x, batch):
        """What ``BlurModel.step`` refuses: an empty batch, NaN / Inf in ``x`` (also values
        that overflow float32), and a batch of one under batch statistics."""
        other_rank = tf.not_equal(tf.rank(x), 2)  # the rank check speaks instead
        checks = [_check(other_rank | (batch > 0), f"{name}: x holds no examples (an empty batch); "
                         "every call needs at least one example.")]
        finite = tf.reduce_all(tf.math.is_finite(tf.cast(x, tf.float32)))
        checks.append(_check(finite, f"{name}: x contains NaN or Inf (or values beyond "
                             "float32); the step would poison the synapses."))
        if self._config.activation_norm:
            checks.append(_check(other_rank | tf.not_equal(batch, 1), f"{name}: a batch of 1 example: "
                                 "this rule normalises activations over the batch "
                                 "(activation_norm), which erases a single example; use "
                                 "batches of 2 or more."))
        return checks

    @staticmethod
    def _after(checks, *tensors):
        """The tensors, available only once every check has passed (asserts are otherwise
        unordered with respect to the math); non-float inputs are cast inside the checks."""
        with tf.control_dependencies(checks):
            return tuple([tf.identity(t) for t in v] if isinstance(v, list) else tf.identity(v)
                         for v in tensors)

    def _static(self, flat, x):
        k = self.k
        return ([tf.ensure_shape(t, [None, None, k]) for t in flat],
                tf.ensure_shape(x, [None, None]))

    # The math runs in a nested function: a loaded SavedModel re-derives shapes from the
    # caller's arguments, and a bad shape must meet the checks above, not a static shape
    # error deep inside the math (a nested call's outputs have unknown shapes).
    def _train_math(self, *args):
        *flat, x, y = args
        flat, x = self._static(flat, x)
        y = tf.ensure_shape(y, [None])
        targets = pm1_targets(y, tf.shape(flat[-2])[1])
        new, _ = inner_step(self._params(), self._pack(flat), x, targets, self._config,
                            self._per_layer)
        return [t for pair in new for t in pair]

    def _predict_math(self, *args):
        *flat, x = args
        flat, x = self._static(flat, x)
        return predict(self._params(), self._pack(flat), x, self._config, self._per_layer)

    def _train_step(self, *args):
        *flat, x, y = args
        if len(flat) != 2 * (len(self.sizes) - 1):
            return self._after([self._count_error("train_step", flat, x)], list(flat))[0]
        flat, x, y = self._checked("train_step", flat, x, y)
        # a cond keeps the caller's static shapes away from the math (see above)
        return tf.cond(tf.size(y) >= 0, lambda: self._train_math_fn(*flat, x, y),
                       lambda: list(flat))

    def _predict(self, *args):
        *flat, x = args
        if len(flat) != 2 * (len(self.sizes) - 1):
            return self._after([self._count_error("predict", flat, x)], x)[0]
        flat, x = self._checked("predict", flat, x)
        return tf.cond(tf.size(x) >= 0, lambda: self._predict_math_fn(*flat, x),
                       lambda: tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(flat[-2])[1]])))

    def _genome(self):
        return self._params()


def export_saved_model(path, genome_values, config, sizes, init_scale=1.0, per_layer=False,
                       dynamic=True, metadata=None):
    """Write the SavedModel of a species-free genome to ``path``; returns ``path``.

    ``sizes`` fixes the depth and ``init``'s widths; ``dynamic`` lets ``train_step`` and
    ``predict`` take other widths (``LearnedRule``). ``metadata``: extra JSON-able facts
    (logit scale, provenance) stored in ``metadata_json``.
    """
    module = LearnedRule(genome_values, config, sizes, init_scale, per_layer, dynamic, metadata)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.saved_model.save(module, path, signatures=module.signature_functions())
    return path
