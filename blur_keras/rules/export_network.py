"""The SavedModel of a rule on a network given at export time: a chain of layer specs
(``blur_keras.core.layer_specs``: ``Conv2D``, ``Pool2D``, ``Flatten``, ``Reshape``, ``Dense``;
docs/conv.md), run by ``blur_keras.core.network``.

Written by ``export_saved_model(path, values, config, input_shape, specs=...)``. Its functions,
with the synapses as a flat list ``W^0, V^0, …`` (shapes ``layer_specs.synapse_shapes``):

* ``init(seed)`` -> the synapses of a fresh network (``network.init_synapses``);
* ``train_step(*synapses, x, y)`` -> the synapses after one inner step on ``x
  [B, *input_shape]`` (float32/float64) with integer labels ``y [B]`` (int32/int64) in
  ``[0, units of the last Dense)``;
* ``predict(*synapses, x)`` -> ``[B, units]``, state 0 of the last layer;
* ``genome()``; ``metadata_json`` holds the input shape and the specs.

The shapes are those of the export (no other sizes). Under ``activation_norm`` a forward pass
normalises over its batch, as a ``BlurModel`` of such a chain does at inference
(``inference="batch"``): a batch of one is refused. Every wrong input is a one-line
``InvalidArgumentError`` before any computation; nothing of blur_keras is imported at load.
"""

import dataclasses

import tensorflow as tf

from blur_keras.core import network
from blur_keras.core.feedback import pm1_targets
from blur_keras.core.layer_specs import Dense, plan, synapse_shapes
from blur_keras.core.synapses import flatten_pairs, pair_up
from blur_keras.rules.export_base import RuleModule, after, check, dims, join_shape

__all__ = ["NetworkRule", "describe_specs"]


def describe_specs(specs):
    """JSON-able ``[{"layer": "Conv2D", "filters": 8, …}, …]`` of a chain of specs."""
    return [{"layer": type(s).__name__, **dataclasses.asdict(s)} for s in specs]


class NetworkRule(RuleModule):
    """A genome with ``init``/``train_step``/``predict`` on the network ``specs`` over inputs of
    per-example shape ``input_shape`` (module docstring)."""

    def __init__(self, genome_values, config, input_shape, specs, init_scale=1.0,
                 per_layer=False, metadata=None):
        self.input_shape, self.specs = tuple(int(s) for s in input_shape), tuple(specs)
        self.stages = plan(self.input_shape, self.specs)
        last = self.stages[-1]
        if not isinstance(last.layer, Dense):
            raise ValueError(f"The network ends in {type(last.layer).__name__}; an exported "
                             "rule needs a Dense last layer (its units are the classes).")
        super().__init__(genome_values, config, {
            "init_scale": float(init_scale), "per_layer": bool(per_layer),
            "input_shape": list(self.input_shape), "specs": describe_specs(self.specs),
            "inference": "batch", **(metadata or {})})
        if per_layer and genome_values["nu"].shape[0] != len(self.stages):
            raise ValueError(f"Per-layer genome has {genome_values['nu'].shape[0]} layers but "
                             f"the network has {len(self.stages)} layer pairs.")
        self._per_layer, self._init_scale = per_layer, float(init_scale)
        self.shapes = [s for stage in self.stages for s in synapse_shapes(stage, self.k)]
        self.init = tf.function(self._init, input_signature=[tf.TensorSpec([], tf.int64)],
                                autograph=False)
        self._train_math_fn = tf.function(self._train_math, autograph=False)
        self._predict_math_fn = tf.function(self._predict_math, autograph=False)
        self.train_step = self.variadic("train_step", self._train_step, ("x", "y"),
                                        lambda state, x, y: state)
        self.predict = self.variadic("predict", self._predict, ("x",), lambda state, x: x)
        self._trace_all()

    def state_names(self, name):
        return [f"{s}^{l}" for l in range(len(self.stages)) for s in ("W", "V")]

    def describe_state(self, name):
        names = self.state_names(name)
        return f"{len(names)} synapse tensors ({', '.join(names)})"

    def depth_note(self):
        return f"(this network has {len(self.stages)} layer pairs)"

    def _trace_all(self):
        """One concrete function per accepted dtype and synapse count (``RuleModule``)."""
        for x_dtype in (tf.float32, tf.float64):
            x_spec = tf.TensorSpec(None, x_dtype, name="x")
            for count in self.trace_counts("predict"):
                state = [tf.TensorSpec(None, tf.float32)] * count
                self.predict.get_concrete_function(*state, x_spec)
                for y_dtype in (tf.int32, tf.int64):
                    self.train_step.get_concrete_function(*state, x_spec,
                                                          tf.TensorSpec(None, y_dtype, name="y"))

    def signature_functions(self):
        """The serving signatures (float32 ``x``, int32 ``y``)."""
        state = [tf.TensorSpec(None, tf.float32)] * len(self.shapes)
        x_spec = tf.TensorSpec(None, tf.float32, name="x")
        return {"train_step": self.train_step.get_concrete_function(
                    *state, x_spec, tf.TensorSpec(None, tf.int32, name="y")),
                "predict": self.predict.get_concrete_function(*state, x_spec)}

    def _init(self, seed):
        return flatten_pairs(network.init_synapses(seed, self.input_shape, self.specs, self.k,
                                                   self._config, self._init_scale))

    def _checked(self, name, flat, x, y=None):
        """Every shape and label, with one-line messages; the tensors once they passed (x
        cast to float32, y to int32)."""
        checks = []
        for sym, t, want in zip(self.state_names(name), flat, self.shapes):
            ok = tf.equal(tf.rank(t), len(want)) & tf.reduce_all(tf.equal(dims(t, 3), want))
            checks.append(check(ok, f"{name}: synapse {sym} must have shape "
                                f"[{', '.join(map(str, want))}]; got [", join_shape(t), "]."))
        rank_ok = tf.equal(tf.rank(x), 1 + len(self.input_shape))
        per_example = ", ".join(map(str, self.input_shape))
        shape_ok = rank_ok & tf.reduce_all(tf.equal(dims(x, 1 + len(self.input_shape))[1:],
                                                    self.input_shape))
        checks.append(check(shape_ok, f"{name}: x must have shape [batch, {per_example}]; got [",
                            join_shape(x), "]."))
        batch = dims(x, 1)[0]
        checks += self.batch_checks(name, x, batch, rank_ok, one_allowed=False)
        x = tf.cast(x, tf.float32)
        if y is None:
            return after(checks, list(flat), x)
        checks += self.label_checks(name, y, batch, self.stages[-1].upper[0])
        return after(checks, list(flat), x, tf.cast(y, tf.int32))

    def _static(self, flat, x):
        """Static shapes for the math (``network`` plans the chain from them)."""
        flat = [tf.ensure_shape(t, want) for t, want in zip(flat, self.shapes)]
        return pair_up(flat), tf.ensure_shape(x, (None,) + self.input_shape)

    # as in ``LearnedRule``: the math is a nested function, behind a cond, so that a loaded
    # SavedModel meets the checks before any static shape of the math
    def _train_math(self, *args):
        *flat, x, y = args
        synapses, x = self._static(flat, x)
        targets = pm1_targets(tf.ensure_shape(y, [None]), self.stages[-1].upper[0])
        new, _ = network.inner_step(self._params(), synapses, x, targets, self.specs,
                                    self._config, self._per_layer)
        return flatten_pairs(new)

    def _predict_math(self, *args):
        *flat, x = args
        synapses, x = self._static(flat, x)
        return network.predict(self._params(), synapses, x, self.specs, self._config,
                               self._per_layer)

    def _train_step(self, flat, x, y):
        flat, x, y = self._checked("train_step", flat, x, y)
        return tf.cond(tf.size(y) >= 0, lambda: self._train_math_fn(*flat, x, y),
                       lambda: list(flat))

    def _predict(self, flat, x):
        flat, x = self._checked("predict", flat, x)
        return tf.cond(tf.size(x) >= 0, lambda: self._predict_math_fn(*flat, x),
                       lambda: tf.zeros(tf.stack([tf.shape(x)[0], self.stages[-1].upper[0]])))
