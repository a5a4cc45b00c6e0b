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
Dense) the export is a network rule (``blur_keras.rules.export_network``).

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
from blur_keras.core.normalization import INFERENCE_MOMENTUM, start_moments, track_moments
from blur_keras.core.step import forward_moments, inner_step, moments_in, moments_out, predict
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
        self.dynamic, self.moving = bool(dynamic), bool(config.activation_norm)
        self.momentum = float(inference_momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"inference_momentum={inference_momentum!r}; expected a number "
                             "in [0, 1).")
        super().__init__(genome_values, config, {
            "init_scale": float(init_scale), "per_layer": bool(per_layer),
            "sizes": list(self.sizes), "dynamic": self.dynamic,
            "inference": "moving" if self.moving else "batch",
            "inference_momentum": self.momentum, **(metadata or {})})
        self._per_layer, self._init_scale = per_layer, float(init_scale)
        self.init = tf.function(self._init, input_signature=[tf.TensorSpec([], tf.int64)],
                                autograph=False)
        self.init_sized = tf.function(
            self._init_sized, autograph=False,
            input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([len(self.sizes)], tf.int32)])
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

    # -- the state ------------------------------------------------------------
    @property
    def depth(self):
        return len(self.sizes) - 1

    def _synapse_names(self):
        return [f"{s}^{l}" for l in range(self.depth) for s in ("W", "V")]

    def _moment_names(self):
        return [f"{s}^{l}" for l in range(1, self.depth + 1) for s in ("mean", "var")] + ["steps"]

    def state_names(self, name):
        plain = not self.moving or name in ("predict_batch", "init_moments")
        return self._synapse_names() + ([] if plain else self._moment_names())

    def describe_state(self, name):
        syn, names = self._synapse_names(), self.state_names(name)
        if len(names) == len(syn):
            return f"{len(syn)} synapse tensors ({', '.join(syn)})"
        return (f"{len(names)} state tensors (the synapses {', '.join(syn)}, then the tracked "
                f"statistics {', '.join(self._moment_names())})")

    def depth_note(self):
        return f"(this rule has {self.depth} layer pairs)"

    def _trace_all(self):
        """One concrete function per accepted dtype and state count (``RuleModule``);
        shapes, even ranks, are checked inside, so the caller gets a sentence rather than
        a dump of the arguments."""
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

    # -- init -----------------------------------------------------------------
    def _with_moments(self, flat):
        """The state of fresh synapses ``flat``: they, then (tracking) their start statistics."""
        return list(flat) + (self._start_moments(flat) if self.moving else [])

    def _start_moments(self, flat):
        internal = start_moments([w for w, _ in pairs_in(pair_up(flat))])
        return [t for m in moments_out(internal) for t in m] + [tf.zeros([])]

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

    def _init_moments(self, flat):
        flat = after(self._synapse_checks("init_moments", flat)[0], flat)[0]
        return self._start_moments(self._static(flat))

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

    def _moment_checks(self, name, moments, widths):
        """Each ``mean^l`` / ``var^l`` is ``[n_l, k]``, ``steps`` a scalar."""
        checks = []
        for sym, t, n in zip(self._moment_names(), moments,
                             [w for w in widths[1:] for _ in range(2)]):
            ok = tf.equal(tf.rank(t), 2) & tf.reduce_all(tf.equal(dims(t, 2), tf.stack([n, self.k])))
            checks.append(check(ok, f"{name}: tracked statistic {sym} must have shape [", n,
                                f", {self.k}] (units of layer {sym.split('^')[1]}, k); got [",
                                join_shape(t), "]."))
        checks.append(check(tf.equal(tf.rank(moments[-1]), 0), f"{name}: steps (the last "
                            "state tensor) must be a scalar; got shape [",
                            join_shape(moments[-1]), "]."))
        return checks

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

    # The math runs in a nested function: a loaded SavedModel re-derives shapes from the
    # caller's arguments, and a bad shape must meet the checks above, not a static shape
    # error deep inside the math (a nested call's outputs have unknown shapes).
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

    def _tracked(self, synapses, moments, x):
        """The tracked statistics after a step from ``synapses`` on ``x`` (as ``BlurModel``)."""
        batch = forward_moments(self._params(), pairs_in(synapses), x, self._config,
                                self._per_layer)
        moving = moments_in(self._moment_pairs(moments))
        steps = tf.ensure_shape(moments[-1], [])
        new = track_moments(moving, batch, steps, self.momentum)
        return [t for m in moments_out(new) for t in m] + [steps + 1.0]

    def _moment_pairs(self, moments):
        return [(tf.ensure_shape(moments[2 * l], [None, self.k]),
                 tf.ensure_shape(moments[2 * l + 1], [None, self.k])) for l in range(self.depth)]

    def _predict_math(self, *args):
        *state, x = args
        flat, x = self._static(state[:2 * self.depth]), tf.ensure_shape(x, [None, None])
        moments = self._moment_pairs(state[2 * self.depth:]) if len(state) > len(flat) else None
        return predict(self._params(), pair_up(flat), x, self._config, self._per_layer,
                       moments=moments)

    def _train_step(self, state, x, y):
        state, x, y = self._checked("train_step", state, x, y)
        # a cond keeps the caller's static shapes away from the math (see above)
        return tf.cond(tf.size(y) >= 0, lambda: self._train_math_fn(*state, x, y),
                       lambda: list(state))

    def _predict(self, state, x, name="predict"):
        state, x = self._checked(name, state, x)
        return tf.cond(tf.size(x) >= 0, lambda: self._predict_math_fn(*state, x),
                       lambda: tf.zeros(tf.stack([tf.shape(x)[0],
                                                 tf.shape(state[2 * self.depth - 2])[1]])))

    def _predict_batch(self, state, x):
        return self._predict(state, x, "predict_batch")


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
                             metadata)
    else:
        module = LearnedRule(genome_values, config, sizes, init_scale, per_layer, dynamic,
                             metadata, inference_momentum)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.saved_model.save(module, path, signatures=module.signature_functions())
    return path
