"""What the exported rules share (``blur_keras.rules.export``): the genome as variables, the
metadata, signatures that take a flat list of state tensors, and in-graph checks that stop
with a one-line ``InvalidArgumentError`` before any computation.

A rule's functions take a flat list of *state* tensors (the synapses ``W^0, V^0, …`` and,
for rules with tracked statistics, the statistics after them) followed by named tensors
(``x``, ``y``).  A call with the wrong number of state tensors meets a function traced for
that count which only says so, in one line, instead of TensorFlow's listing of the
concrete functions.
"""

import json

import tensorflow as tf

from blur_keras.core.normalization import INFERENCE_MOMENTUM, track_moments
from blur_keras.core.step import moments_in, moments_out

__all__ = ["RuleModule", "check", "after", "dims", "join_shape"]

# how many wrong state-tensor counts beyond the right one get a one-line error of their own
_EXTRA_COUNTS = 4


def _fail(message_parts):
    """A one-line in-graph error: the message is a formatted string, nothing else printed."""
    return [tf.strings.join([tf.strings.as_string(p) if not isinstance(p, str) else p
                             for p in message_parts])]


def dims(t, n):
    """The first ``n`` dimensions of ``t`` (-1 where ``t`` has fewer axes): shape checks
    must not fail on a wrong rank before the rank check speaks."""
    return tf.concat([tf.shape(t), -tf.ones([n], tf.int32)], 0)[:n]


def join_shape(t):
    """``t``'s shape as ``"a,b,c"``, for messages."""
    return tf.strings.reduce_join(tf.strings.as_string(tf.shape(t)), separator=",")


def check(ok, *message):
    """An assertion whose message is the one line ``message`` (strings and scalars)."""
    return tf.debugging.Assert(ok, _fail(message), summarize=1)


def after(checks, *tensors):
    """The tensors, available only once every check has passed (asserts are otherwise
    unordered with respect to the math); lists stay lists."""
    with tf.control_dependencies(checks):
        return tuple([tf.identity(t) for t in v] if isinstance(v, list) else tf.identity(v)
                     for v in tensors)


class RuleModule(tf.Module):
    """The genome (no species axis) as variables, ``config_json``, ``metadata_json``,
    ``genome()``, and what every rule's functions share: their state (the synapses
    ``W^0, V^0, …`` and, under ``activation_norm``, the tracked statistics ``mean^1, var^1, …,
    steps``), their registration and tracing, and their checks.

    A subclass gives its ``depth`` (layer pairs), ``_synapse_checks``, ``_checked``,
    ``_static``, ``_batch_moments``, ``_classes``, ``_train_math`` and ``_predict_math``, then
    calls ``_register``.
    """

    def __init__(self, genome_values, config, info, metadata=None,
                 inference_momentum=INFERENCE_MOMENTUM):
        super().__init__(name="learned_rule")
        self.moving, self.momentum = bool(config.activation_norm), float(inference_momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"inference_momentum={inference_momentum!r}; expected a number "
                             "in [0, 1).")
        self.k = int(genome_values["nu"].shape[-1])
        self._config = config
        self.genome_vars = {n: tf.Variable(v, name=n, trainable=False)
                            for n, v in sorted(genome_values.items())}
        self.config_json = tf.Variable(json.dumps(config.to_dict()), trainable=False)
        self.metadata_json = tf.Variable(json.dumps({
            "config": config.to_dict(), "k": self.k, **info,
            "inference": "moving" if self.moving else "batch",
            "inference_momentum": self.momentum, **(metadata or {})}), trainable=False)
        self.genome = tf.function(self._genome, input_signature=[], autograph=False)

    def _genome(self):
        return self._params()

    def _params(self):
        return {n: tf.convert_to_tensor(v) for n, v in self.genome_vars.items()}

    # -- the state ------------------------------------------------------------
    def _synapse_names(self):
        return [f"{s}^{l}" for l in range(self.depth) for s in ("W", "V")]

    def _moment_names(self):
        return [f"{s}^{l}" for l in range(1, self.depth + 1) for s in ("mean", "var")] + ["steps"]

    def state_names(self, name):
        """The names of the state tensors function ``name`` takes, in order."""
        plain = not self.moving or name in ("predict_batch", "init_moments")
        return self._synapse_names() + ([] if plain else self._moment_names())

    def describe_state(self, name):
        """How a count message names the state tensors."""
        syn, names = self._synapse_names(), self.state_names(name)
        if len(names) == len(syn):
            return f"{len(syn)} synapse tensors ({', '.join(syn)})"
        return (f"{len(names)} state tensors (the synapses {', '.join(syn)}, then the tracked "
                f"statistics {', '.join(self._moment_names())})")

    # -- the functions --------------------------------------------------------
    def _register(self):
        """``train_step``, ``predict`` and (tracking) ``predict_batch``, ``init_moments``, traced
        for every accepted dtype and state count."""
        self._train_math_fn = tf.function(self._train_math, autograph=False)
        self._predict_math_fn = tf.function(self._predict_math, autograph=False)
        self.train_step = self.variadic("train_step", self._train_step, ("x", "y"),
                                        lambda state, x, y: state)
        self.predict = self.variadic("predict", self._predict, ("x",), lambda state, x: x)
        if self.moving:
            self.predict_batch = self.variadic("predict_batch", self._predict_batch, ("x",),
                                               lambda state, x: x)
            self.init_moments = self.variadic("init_moments", self._init_moments, (),
                                              lambda state: [tf.zeros([])])
        self._trace_all()

    def _trace_all(self):
        """One concrete function per accepted dtype and state count (``variadic``); shapes,
        even ranks, are checked inside, so the caller gets a sentence rather than a dump of
        the arguments."""
        for x_dtype in (tf.float32, tf.float64):
            x_spec = tf.TensorSpec(None, x_dtype, name="x")
            for name in ("train_step", "predict") + (("predict_batch",) if self.moving else ()):
                for count in self.trace_counts(name):
                    state = [tf.TensorSpec(None, tf.float32)] * count
                    fn = getattr(self, name)
                    if name != "train_step":
                        fn.get_concrete_function(*state, x_spec)
                        continue
                    for y_dtype in (tf.int32, tf.int64):
                        fn.get_concrete_function(*state, x_spec,
                                                 tf.TensorSpec(None, y_dtype, name="y"))
        for count in self.trace_counts("init_moments") if self.moving else ():
            self.init_moments.get_concrete_function(*[tf.TensorSpec(None, tf.float32)] * count)

    def signature_functions(self):
        """The serving signatures (float32 ``x``, int32 ``y``)."""
        def spec(name):
            return [tf.TensorSpec(None, tf.float32)] * len(self.state_names(name))
        x_spec = tf.TensorSpec(None, tf.float32, name="x")
        out = {"train_step": self.train_step.get_concrete_function(
                   *spec("train_step"), x_spec, tf.TensorSpec(None, tf.int32, name="y")),
               "predict": self.predict.get_concrete_function(*spec("predict"), x_spec)}
        if self.moving:
            out["predict_batch"] = self.predict_batch.get_concrete_function(
                *spec("predict_batch"), x_spec)
            out["init_moments"] = self.init_moments.get_concrete_function(*spec("init_moments"))
        return out

    def variadic(self, name, math, trailing, fallback):
        """A ``tf.function`` taking the state tensors of ``name`` then ``trailing`` named
        tensors: ``math(state, *named)`` for the right count, a one-line error otherwise
        (``fallback(state, *named)`` builds what that error path returns)."""
        expected = len(self.state_names(name))

        def entry(*args):
            cut = len(args) - len(trailing)
            state, named = list(args[:cut]), args[cut:]
            if cut == expected:
                return math(state, *named)
            then = f" then {', '.join(trailing)}" if trailing else ""
            before = f" before {', '.join(trailing)}" if trailing else ""
            probe = (named or state or [tf.constant(0)])[0]
            error = check(tf.less(tf.rank(probe), -1), f"{name}: expected "
                          f"{self.describe_state(name)}{then}; got {cut} tensors{before} "
                          f"{self.depth_note()}.")
            return after([error], fallback(state, *named))[0]

        return tf.function(entry, autograph=False)

    def depth_note(self):
        """What ends a count message, e.g. ``(this rule has 2 layer pairs)``."""
        raise NotImplementedError

    def trace_counts(self, name):
        """The state-tensor counts ``name`` is traced for: the right one first, then every
        other count up to a few beyond the largest state (the whole state passed to a function
        that takes the synapses alone is a one-line error too)."""
        expected = len(self.state_names(name))
        largest = max(expected, len(self.state_names("train_step")))
        return [expected] + [c for c in range(largest + _EXTRA_COUNTS + 1) if c != expected]

    # -- tracked statistics ---------------------------------------------------
    def _with_moments(self, flat):
        """The state of fresh synapses ``flat``: they, then (tracking) their start statistics."""
        return list(flat) + (self._start_moments(flat) if self.moving else [])

    def _start_moments(self, flat):
        """The statistics before the first step: per layer zeros and ones ``[n_l, k]`` (as
        ``normalization.start_moments``; the first update replaces them), then ``steps`` 0.
        ``n_l``: the columns of ``W^{l-1}``, read at run time, so that a bad shape meets the
        checks rather than a static shape error."""
        out = []
        for w in flat[0::2]:
            shape = tf.stack([tf.shape(w)[1], self.k])
            out += [tf.zeros(shape), tf.ones(shape)]
        return out + [tf.zeros([])]

    def _init_moments(self, flat):
        return self._start_moments(after(self._synapse_checks("init_moments", flat)[0], flat)[0])

    def _moment_pairs(self, moments, widths=None):
        """``[(mean^l, var^l), …]`` with static shapes ``[n_l or None, k]``."""
        widths = widths or [None] * self.depth
        return [(tf.ensure_shape(moments[2 * l], [widths[l], self.k]),
                 tf.ensure_shape(moments[2 * l + 1], [widths[l], self.k]))
                for l in range(self.depth)]

    def _tracked(self, synapses, moments, x):
        """The tracked statistics after a step from ``synapses`` (public pairs) on ``x``: the
        step's batch statistics (``_batch_moments``, internal layout) folded in with
        ``normalization.track_moments`` and the momentum, as ``BlurModel`` does."""
        moving = moments_in(self._moment_pairs(moments))
        steps = tf.ensure_shape(moments[-1], [])
        new = track_moments(moving, self._batch_moments(synapses, x), steps, self.momentum)
        return [t for m in moments_out(new) for t in m] + [steps + 1.0]

    def _moment_checks(self, name, moments, widths):
        """Each ``mean^l`` / ``var^l`` is ``[n_l, k]`` (``widths``: ``n_0 … n_L``), ``steps`` a
        scalar."""
        checks = []
        for sym, t, n in zip(self._moment_names(), moments,
                             [w for w in widths[1:] for _ in range(2)]):
            ok = tf.equal(tf.rank(t), 2) & tf.reduce_all(tf.equal(dims(t, 2), tf.stack([n, self.k])))
            layer = int(sym.split("^")[1])
            checks.append(check(ok, f"{name}: tracked statistic {sym} must have shape [", n,
                                f", {self.k}] ({self._unit_word(layer)} of layer {layer}, k); "
                                "got [", join_shape(t), "]."))
        checks.append(check(tf.equal(tf.rank(moments[-1]), 0), f"{name}: steps (the last "
                            "state tensor) must be a scalar; got shape [",
                            join_shape(moments[-1]), "]."))
        return checks

    def _unit_word(self, layer):
        """What the statistics of neuron layer ``layer`` are per, for messages."""
        return "units"

    # -- the math behind the checks -------------------------------------------
    # The math runs in a nested function: a loaded SavedModel re-derives shapes from the
    # caller's arguments, and a bad shape must meet the checks, not a static shape error deep
    # inside the math (a nested call's outputs have unknown shapes); a cond keeps the caller's
    # static shapes away from it.
    def _train_step(self, state, x, y):
        state, x, y = self._checked("train_step", state, x, y)
        return tf.cond(tf.size(y) >= 0, lambda: self._train_math_fn(*state, x, y),
                       lambda: list(state))

    def _predict(self, state, x, name="predict"):
        state, x = self._checked(name, state, x)
        return tf.cond(tf.size(x) >= 0, lambda: self._predict_math_fn(*state, x),
                       lambda: tf.zeros(tf.stack([tf.shape(x)[0], self._classes(state)])))

    def _predict_batch(self, state, x):
        return self._predict(state, x, "predict_batch")

    def batch_checks(self, name, x, batch, rank_ok, one_allowed):
        """What ``BlurModel.step`` refuses: an empty batch, NaN / Inf in ``x`` (also values
        that overflow float32), and (unless ``one_allowed``) a batch of one under batch
        statistics.  ``rank_ok``: whether ``x`` has its rank (else the rank check speaks)."""
        checks = [check(~rank_ok | (batch != 0), f"{name}: x holds no examples (an empty "
                        "batch); every call needs at least one example.")]
        finite = tf.reduce_all(tf.math.is_finite(tf.cast(x, tf.float32)))
        checks.append(check(finite, f"{name}: x contains NaN or Inf (or values beyond "
                            "float32); the step would poison the synapses."))
        if self._config.activation_norm and not one_allowed:
            checks.append(check(~rank_ok | tf.not_equal(batch, 1), f"{name}: a batch of 1 example: this "
                                "rule normalises activations over the batch (activation_norm), "
                                "which erases a single example; use batches of 2 or more."))
        return checks

    @staticmethod
    def label_checks(name, y, batch, num_classes):
        """``y`` is a vector of ``batch`` integer labels in ``[0, num_classes)``."""
        checks = [check(tf.equal(tf.rank(y), 1), f"{name}: y must be a vector of integer "
                        "labels [batch]; got rank ", tf.rank(y), "."),
                  check(tf.equal(tf.size(y), batch), f"{name}: x has ", batch,
                        " examples but y has ", tf.size(y), " labels.")]
        limit = tf.cast(num_classes, y.dtype)
        checks.append(check(tf.reduce_all((y >= 0) & (y < limit)), f"{name}: labels must be "
                            "integers in [0, ", num_classes, "); got values from ",
                            tf.reduce_min(y), " to ", tf.reduce_max(y), "."))
        return checks
