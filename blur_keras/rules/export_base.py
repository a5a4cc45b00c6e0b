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
    ``genome()``, and the checks every rule's functions make.

    A subclass names its state tensors per function (``state_names``) and registers its
    functions with ``variadic``.
    """

    def __init__(self, genome_values, config, info):
        super().__init__(name="learned_rule")
        self.k = int(genome_values["nu"].shape[-1])
        self._config = config
        self.genome_vars = {n: tf.Variable(v, name=n, trainable=False)
                            for n, v in sorted(genome_values.items())}
        self.config_json = tf.Variable(json.dumps(config.to_dict()), trainable=False)
        self.metadata_json = tf.Variable(json.dumps({"config": config.to_dict(), "k": self.k,
                                                     **info}), trainable=False)
        self.genome = tf.function(self._genome, input_signature=[], autograph=False)

    def _genome(self):
        return self._params()

    def _params(self):
        return {n: tf.convert_to_tensor(v) for n, v in self.genome_vars.items()}

    def state_names(self, name):
        """The names of the state tensors function ``name`` takes, in order."""
        raise NotImplementedError

    def describe_state(self, name):
        """How a count message names the state tensors (a subclass may say more)."""
        names = self.state_names(name)
        return f"{len(names)} tensors ({', '.join(names)})"

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
        """The state-tensor counts ``name`` is traced for: the right one first."""
        expected = len(self.state_names(name))
        return [expected] + [c for c in range(expected + _EXTRA_COUNTS + 1) if c != expected]

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
