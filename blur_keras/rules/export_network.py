"""The SavedModel of a rule on a network given at export time: a chain of layer specs
(``blur_keras.core.layer_specs``: ``Conv2D``, ``Pool2D``, ``Flatten``, ``Reshape``, ``Dense``;
docs/conv.md), run by ``blur_keras.core.network``.

Written by ``export_saved_model(path, values, config, input_shape, specs=...)``. Its functions
take a flat list of *state* tensors: the synapses ``W^0, V^0, …`` (shapes
``layer_specs.synapse_shapes``) and, for a rule with ``activation_norm``, the tracked
statistics after them (below).

* ``init(seed)`` -> the state of a fresh network (``network.init_synapses``);
* ``train_step(*state, x, y)`` -> the state after one inner step on ``x
  [B, *input_shape]`` (float32/float64) with integer labels ``y [B]`` (int32/int64) in
  ``[0, units of the last Dense)``;
* ``predict(*state, x)`` -> ``[B, units]``, state 0 of the last layer;
* ``genome()``; ``metadata_json`` holds the input shape, the specs and the inference.

Under ``activation_norm`` the rule predicts as a ``BlurModel`` of the chain does
(``inference="moving"``), as ``export.LearnedRule`` does: the state holds, after the synapses,
each layer pair's tracked mean and variance of its forward pre-activation (``mean^1, var^1, …,
mean^L, var^L``, ``[n_l, k]`` each, ``n_l`` its units or channels, a convolution's reduced over
batch and positions) and ``steps``, the number of steps they have seen (a float32 scalar).
``train_step`` folds the batch's statistics (``network.step_moments``, from the synapses it
starts from) into them with ``core.normalization.track_moments`` and ``inference_momentum``;
``predict`` normalises with them, so a batch of one is fine. ``predict_batch(*synapses, x)``
normalises over the batch, as training does (a batch of one is refused), and
``init_moments(*synapses)`` -> the start statistics (zeros and ones, ``steps`` 0). A rule
without ``activation_norm`` has only the synapses as its state.

The shapes are those of the export (no other sizes). Every wrong input (shapes, labels, the
number of state tensors) is a one-line ``InvalidArgumentError`` before any computation; nothing
of blur_keras is imported at load.
"""

import dataclasses

import tensorflow as tf

from blur_keras.core import network
from blur_keras.core.feedback import pm1_targets
from blur_keras.core.layer_specs import Dense, plan, synapse_shapes
from blur_keras.core.layout import pairs_in
from blur_keras.core.normalization import INFERENCE_MOMENTUM
from blur_keras.core.synapses import flatten_pairs, pair_up
from blur_keras.rules.export_base import RuleModule, after, check, dims, join_shape

__all__ = ["NetworkRule", "describe_specs"]


def describe_specs(specs):
    """JSON-able ``[{"layer": "Conv2D", "filters": 8, …}, …]`` of a chain of specs."""
    return [{"layer": type(s).__name__, **dataclasses.asdict(s)} for s in specs]


class NetworkRule(RuleModule):
    """A genome with ``init``/``train_step``/``predict`` on the network ``specs`` over inputs of
    per-example shape ``input_shape`` (module docstring). Under ``activation_norm`` the state
    also carries tracked statistics, updated with ``inference_momentum``, and the rule has
    ``predict_batch`` and ``init_moments``, as ``export.LearnedRule``."""

    def __init__(self, genome_values, config, input_shape, specs, init_scale=1.0,
                 per_layer=False, metadata=None, inference_momentum=INFERENCE_MOMENTUM):
        self.input_shape, self.specs = tuple(int(s) for s in input_shape), tuple(specs)
        self.stages = plan(self.input_shape, self.specs)
        last = self.stages[-1]
        if not isinstance(last.layer, Dense):
            raise ValueError(f"The network ends in {type(last.layer).__name__}; an exported "
                             "rule needs a Dense last layer (its units are the classes).")
        super().__init__(genome_values, config, {
            "init_scale": float(init_scale), "per_layer": bool(per_layer),
            "input_shape": list(self.input_shape), "specs": describe_specs(self.specs)},
            metadata, inference_momentum)
        if per_layer and genome_values["nu"].shape[0] != len(self.stages):
            raise ValueError(f"Per-layer genome has {genome_values['nu'].shape[0]} layers but "
                             f"the network has {len(self.stages)} layer pairs.")
        self._per_layer, self._init_scale = per_layer, float(init_scale)
        self.shapes = [s for stage in self.stages for s in synapse_shapes(stage, self.k)]
        self.widths = [None] + [stage.upper[-1] for stage in self.stages]
        self.init = tf.function(self._init, input_signature=[tf.TensorSpec([], tf.int64)],
                                autograph=False)
        self._register()

    @property
    def depth(self):
        return len(self.stages)

    def depth_note(self):
        return f"(this network has {self.depth} layer pairs)"

    def _unit_word(self, layer):
        return "units" if isinstance(self.stages[layer - 1].layer, Dense) else "channels"

    def _init(self, seed):
        return self._with_moments(flatten_pairs(network.init_synapses(
            seed, self.input_shape, self.specs, self.k, self._config, self._init_scale)))

    def _synapse_checks(self, name, flat):
        """Each synapse has its export shape: ``(checks, widths)`` (``n_l``: units or channels
        of neuron layer l; None for the input)."""
        checks = []
        for sym, t, want in zip(self._synapse_names(), flat, self.shapes):
            ok = tf.equal(tf.rank(t), len(want)) & tf.reduce_all(tf.equal(dims(t, 3), want))
            checks.append(check(ok, f"{name}: synapse {sym} must have shape "
                                f"[{', '.join(map(str, want))}]; got [", join_shape(t), "]."))
        return checks, self.widths

    def _checked(self, name, state, x, y=None):
        """Every shape and label, with one-line messages; the tensors once they passed (x
        cast to float32, y to int32)."""
        moments = state[2 * self.depth:]
        checks = self._synapse_checks(name, state[:2 * self.depth])[0]
        if moments:
            checks += self._moment_checks(name, moments, self.widths)
        rank_ok = tf.equal(tf.rank(x), 1 + len(self.input_shape))
        per_example = ", ".join(map(str, self.input_shape))
        shape_ok = rank_ok & tf.reduce_all(tf.equal(dims(x, 1 + len(self.input_shape))[1:],
                                                    self.input_shape))
        checks.append(check(shape_ok, f"{name}: x must have shape [batch, {per_example}]; got [",
                            join_shape(x), "]."))
        batch = dims(x, 1)[0]
        one_allowed = bool(moments) and name == "predict"
        checks += self.batch_checks(name, x, batch, rank_ok, one_allowed)
        x = tf.cast(x, tf.float32)
        if y is None:
            return after(checks, list(state), x)
        checks += self.label_checks(name, y, batch, self._classes(state))
        return after(checks, list(state), x, tf.cast(y, tf.int32))

    def _static(self, flat):
        """Static shapes for the math (``network`` plans the chain from them)."""
        return [tf.ensure_shape(t, want) for t, want in zip(flat, self.shapes)]

    def _inputs(self, state, x):
        """The synapse pairs and ``x`` with static shapes."""
        return (pair_up(self._static(state[:2 * self.depth])),
                tf.ensure_shape(x, (None,) + self.input_shape))

    def _train_math(self, *args):
        *state, x, y = args
        synapses, x = self._inputs(state, x)
        targets = pm1_targets(tf.ensure_shape(y, [None]), self._classes(state))
        new, _ = network.inner_step(self._params(), synapses, x, targets, self.specs,
                                    self._config, self._per_layer)
        out = flatten_pairs(new)
        if self.moving:
            out += self._tracked(synapses, state[2 * self.depth:], x)
        return out

    def _batch_moments(self, synapses, x):
        """The batch statistics a step from ``synapses`` on ``x`` normalises with (internal)."""
        return network.forward_moments(self._params(), pairs_in(synapses), x, self.stages,
                                       self._config, self._per_layer)

    def _predict_math(self, *args):
        *state, x = args
        synapses, x = self._inputs(state, x)
        moments = None
        if len(state) > 2 * self.depth:
            moments = self._moment_pairs(state[2 * self.depth:], self.widths[1:])
        return network.predict(self._params(), synapses, x, self.specs, self._config,
                               self._per_layer, moments=moments)

    def _classes(self, state):
        return self.stages[-1].upper[0]
