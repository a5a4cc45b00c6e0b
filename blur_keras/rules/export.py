"""Export a learned rule as a SavedModel usable without blur_keras.

The module holds the genome as variables and functions on a flat list of *state* tensors:
the synapses ``W^0, V^0, W^1, V^1, …`` (no population axes) and, for a rule with
``activation_norm``, the tracked statistics after them (below).

* ``init(seed)`` -> the state of a fresh network of the export sizes;
* ``init_sized(seed, sizes)`` -> the same for other widths (same depth);
* ``train_step(*state, x, y)`` -> the state after one BLUR inner step on the batch
  ``x [B, n_0]`` (float32/float64) with integer labels ``y [B]`` (int32/int64) in
  ``[0, n_L)``;
* ``predict(*state, x)`` -> ``[B, n_L]`` (state 0 of the last layer);
* ``genome()`` -> dict of the genome entries; ``metadata_json``: the config,
  init scale, per-layer flag, sizes, inference and what the exporter added.

Under ``activation_norm`` the rule predicts as ``BlurModel(inference="moving")`` does: the
state holds, after the synapses, each layer's tracked mean and variance of its forward
pre-activation (``mean^1, var^1, …, mean^L, var^L``, ``[n_l, k]`` each) and ``steps``, the
number of steps they have seen (a float32 scalar).  ``train_step`` folds the batch's
statistics into them (``core.normalization.track_moments`` with the library's
``inference_momentum``, 0.9 by default); ``predict`` normalises with them, so a prediction
does not depend on the rest of its batch and a batch of one is fine.  Two more functions:
``init_moments(*synapses)`` -> the start statistics of given synapses, and
``predict_batch(*synapses, x)``, which normalises over the batch as training does
(``inference="batch"``; a batch of one is refused).  A rule without ``activation_norm`` has
only the synapses as its state.

With ``specs`` (a chain of ``blur_keras.core.layer_specs``: Conv2D, Pool2D, Flatten, Reshape,
Dense) the export is a network rule (``blur_keras.rules.export_network``), with the same state
and functions (``init_sized`` aside).

The layer sizes are given at export time; with ``dynamic=True`` (default) the
functions accept any widths with the export depth. Wrong shapes, widths and
labels stop with a one-line ``InvalidArgumentError`` before any computation, as do
what ``BlurModel.step`` refuses: an empty batch, NaN or Inf in ``x``, a batch of one
where statistics come from the batch, and a wrong number of state tensors.
Load with ``tf.saved_model.load(path)``; nothing of blur_keras is imported.
"""

import os

import tensorflow as tf

from blur_keras.core.feedback import pm1_targets
from blur_keras.core.layout import pairs_in
from blur_keras.core.normalization import INFERENCE_MOMENTUM
from blur_keras.core.step import forward_moments, inner_step, predict
from blur_keras.core.synapses import flatten_pairs, init_synapses, pair_up, sync
from blur_keras.rules.export_base import RuleModule, after, check, dims, join_shape

__all__ = ["LearnedRule", "export_saved_model"]


class LearnedRule(RuleModule):
    """A genome (no species axis) with ``init``/``train_step``/``predict`` functions.

    ``sizes`` (``n_0 … n_L``) fixes the depth and ``init``'s widths. With
    ``dynamic=True`` (default) ``train_step``/``predict`` accept synapses of any widths
    with that depth (``init_sized(seed, sizes)`` draws them); with ``dynamic=False`` every
    width must equal ``sizes``. Under ``activation_norm`` the state also carries tracked
    statistics, updated with ``inference_momentum`` (module docstring). Every shape, label
    and dtype problem the functions can see is an error with a one-line message
    (``InvalidArgumentError``), checked before any computation.
    """

    def __init__(self, genome_values, config, sizes, init_scale=1.0, per_layer=False,
                 dynamic=True, metadata=None, inference_momentum=INFERENCE_MOMENTUM):
        self.sizes = tuple(int(s) for s in sizes)
        self.dynamic = bool(dynamic)
        super().__init__(genome_values, config, {
            "init_scale": float(init_scale), "per_layer": bool(per_layer),
            "sizes": list(self.sizes), "dynamic": self.dynamic}, metadata, inference_momentum)
        self._per_layer, self._init_scale = per_layer, float(init_scale)
        self.init = tf.function(self._init, input_signature=[tf.TensorSpec([], tf.int64)],
                                autograph=False)
        self.init_sized = tf.function(
            self._init_sized, autograph=False,
            input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([len(self.sizes)], tf.int32)])
        self._register()

    @property
    def depth(self):
        return len(self.sizes) - 1

    def depth_note(self):
        return f"(this rule has {self.depth} layer pairs)"

    # -- init -----------------------------------------------------------------
    def _init(self, seed):
        return self._with_moments(flatten_pairs(init_synapses(
            seed, self.sizes, self.k, (), self._config, self._init_scale)))

    def _init_sized(self, seed, sizes):
        """``init`` for other widths (same depth; ``dynamic`` exports only)."""
        if not self.dynamic:
            check(tf.reduce_all(tf.equal(sizes, self.sizes)), "init_sized: this rule was "
                  f"exported for the sizes {list(self.sizes)} only (dynamic=False); got ",
                  tf.strings.reduce_join(tf.strings.as_string(sizes), separator=","), ".")
        check(tf.reduce_all(sizes >= 1), "init_sized: every size must be >= 1.")
        seeds = tf.random.experimental.stateless_split(tf.stack([seed, tf.constant(0, tf.int64)]),
                                                       2 * self.depth)
        flat = []
        for l in range(self.depth):
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
        return self._with_moments(flat)

    # -- checks ---------------------------------------------------------------
    def _synapse_checks(self, name, flat):
        """Ranks and widths of the synapses: ``(checks, widths n_0 … n_L)``."""
        k, depth = self.k, self.depth
        checks = [check(tf.equal(tf.rank(t), 3), f"{name}: synapse {sym} must have rank 3 "
                        f"([rows, cols, k={k}]); got shape [", join_shape(t), "].")
                  for sym, t in zip(self._synapse_names(), flat)]
        shapes = [dims(t, 3) for t in flat]
        widths = [shapes[0][0] - 1] + [shapes[2 * l][1] for l in range(depth)]
        for l in range(depth):
            ws, vs = shapes[2 * l], shapes[2 * l + 1]
            checks.append(check(tf.reduce_all(tf.equal([ws[2], vs[2]], k)), f"{name}: synapses "
                                f"of layer pair {l} must have k={k} states (last axis)."))
            if l > 0:
                checks.append(check(tf.equal(ws[0] - 1, shapes[2 * l - 2][1]), f"{name}: W^{l} "
                                    "has ", ws[0], f" rows; expected W^{l - 1}'s ",
                                    shapes[2 * l - 2][1], " columns + 1 (bias)."))
            checks.append(check(tf.reduce_all(tf.equal([vs[0], vs[1]], [ws[1], ws[0] - 1])),
                                f"{name}: V^{l} must have shape [", ws[1], ", ", ws[0] - 1,
                                f", {k}] (W^{l} transposed without the bias row); got [", vs[0],
                                ", ", vs[1], ", ", vs[2], "]."))
        if not self.dynamic:
            checks.append(check(tf.reduce_all(tf.equal(tf.stack(widths), self.sizes)),
                                f"{name}: this rule was exported for the layer sizes "
                                f"{list(self.sizes)} only (dynamic=False); the synapses have "
                                "sizes [", tf.strings.reduce_join(
                                    tf.strings.as_string(tf.stack(widths)), separator=","), "]."))
        return checks, widths

    def _checked(self, name, state, x, y=None):
        """Assert every shape, width and label with one-line messages; return the state and
        tensors, usable only after every check passed (x cast to float32, y to int32)."""
        flat, moments = state[:2 * self.depth], state[2 * self.depth:]
        checks, widths = self._synapse_checks(name, flat)
        if moments:
            checks += self._moment_checks(name, moments, widths)
        rank_ok = tf.equal(tf.rank(x), 2)
        checks.append(check(rank_ok, f"{name}: x must have shape [batch, features]; got rank ",
                            tf.rank(x), "."))
        xs = dims(x, 2)
        checks.append(check(tf.equal(xs[-1], widths[0]), f"{name}: x has ", xs[-1],
                            " features per example but the synapses expect ", widths[0], "."))
        one_allowed = bool(moments) and name == "predict"
        checks += self.batch_checks(name, x, xs[0], rank_ok, one_allowed)
        x = tf.cast(x, tf.float32)
        if y is None:
            return after(checks, list(state), x)
        checks += self.label_checks(name, y, xs[0], widths[-1])
        return after(checks, list(state), x, tf.cast(y, tf.int32))

    def _static(self, flat):
        return [tf.ensure_shape(t, [None, None, self.k]) for t in flat]

    def _train_math(self, *args):
        *state, x, y = args
        flat = self._static(state[:2 * self.depth])
        x, y = tf.ensure_shape(x, [None, None]), tf.ensure_shape(y, [None])
        synapses = pair_up(flat)
        new, _ = inner_step(self._params(), synapses, x, pm1_targets(y, tf.shape(flat[-2])[1]),
                            self._config, self._per_layer)
        out = flatten_pairs(new)
        if self.moving:
            out += self._tracked(synapses, state[2 * self.depth:], x)
        return out

    def _batch_moments(self, synapses, x):
        """The batch statistics a step from ``synapses`` on ``x`` normalises with (internal)."""
        return forward_moments(self._params(), pairs_in(synapses), x, self._config,
                               self._per_layer)

    def _predict_math(self, *args):
        *state, x = args
        flat, x = self._static(state[:2 * self.depth]), tf.ensure_shape(x, [None, None])
        moments = self._moment_pairs(state[2 * self.depth:]) if len(state) > len(flat) else None
        return predict(self._params(), pair_up(flat), x, self._config, self._per_layer,
                       moments=moments)

    def _classes(self, state):
        return tf.shape(state[2 * self.depth - 2])[1]


def export_saved_model(path, genome_values, config, sizes, init_scale=1.0, per_layer=False,
                       dynamic=True, metadata=None, inference_momentum=INFERENCE_MOMENTUM,
                       specs=None):
    """Write the SavedModel of a species-free genome to ``path``; returns ``path``.

    ``sizes`` fixes the depth and ``init``'s widths; ``dynamic`` lets ``train_step`` and
    ``predict`` take other widths (``LearnedRule``). ``metadata``: extra JSON-able facts
    (logit scale, provenance) stored in ``metadata_json``. ``inference_momentum``: of the
    tracked statistics (``activation_norm`` rules; as ``BlurModel``'s).

    ``specs``: a network rule instead (``export_network.NetworkRule``): the chain of layer
    specs, with ``sizes`` the per-example input shape (``(H, W, C)`` or ``(n,)``).
    """
    if specs is not None:
        from blur_keras.rules.export_network import NetworkRule
        module = NetworkRule(genome_values, config, sizes, specs, init_scale, per_layer,
                             metadata, inference_momentum)
    else:
        module = LearnedRule(genome_values, config, sizes, init_scale, per_layer, dynamic,
                             metadata, inference_momentum)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.saved_model.save(module, path, signatures=module.signature_functions())
    return path
