"""One BLUR inner step over a chain of dense, convolutional, pooling and flatten layers
(docs/conv.md), as pure functions; ``blur_keras.core.step`` stays the dense-only step.

The chain is a tuple of ``layer_specs`` (``Dense``, ``Conv2D``, ``Pool2D``, ``Flatten``) on
an input of per-example shape ``(H, W, C)`` or ``(n,)``.  Layer pair l (the l-th spec with
synapses) reads neuron layer l through the pools and flattens in front of it (its
*transforms*, fixed by the forward pass) and writes neuron layer l+1.  The step is
docs/spec.md §2 with every sum over lower neurons of a convolution running over its
kernel's window:

1. reset: the input layer holds ``x`` in state 0, the other states 0;
2. forward, l = 0 … L−1: ``a^{l+1} = σ(η · z(T_l a^l, W^l))``;
3. feedback into the last layer (``feedback.apply_feedback`` per position);
4. backward, l = L−1 … 1: the drive ``g`` through ``V^l`` goes down through ``T_lᵀ``
   (a pool routes it as its forward pass chose, a flatten reshapes it), then layer l's rule;
5. update of every pair from ``T_l a^l`` and ``a^{l+1}`` after step 4 (V⁰ is not updated).

Public layout: states ``[B, *shape, k]``, synapses as ``layer_specs.synapse_shapes``.
Population axes are not supported yet (synapses carry none).

Under ``BlurConfig.activation_norm`` a step normalises each layer's forward pre-activation
over the batch, and for a convolution over its positions too (per channel and state).
``step_moments`` gives those statistics, ``[(mean, var) [n, k], …]`` per layer pair (``n``:
units or channels); ``forward_pass`` and ``predict`` normalise with given ones
(``moments=``, e.g. tracked across steps, docs/spec.md §9) instead of the batch's.
"""

import tensorflow as tf

from blur_keras.core import conv, pooling
from blur_keras.core.config import BlurConfig
from blur_keras.core.checks import check_k
from blur_keras.core.forward import forward_layer, input_forward_layer, layer_moments
from blur_keras.core.layer_specs import Dense, plan, synapse_shapes
from blur_keras.core.layout import pairs_in, pairs_out
from blur_keras.core.normalization import synapse_view
from blur_keras.core.states import mix_states, per_state_matmul
from blur_keras.core.step import layer_activations, layer_params, moments_in, moments_out
from blur_keras.core.synapses import sync as dense_sync, update_pair as dense_update_pair

__all__ = ["forward_states", "forward_moments", "backward_states", "update_synapses", "step",
           "inner_step", "forward_pass", "predict", "step_moments", "init_synapses",
           "activations_of", "check_network", "check_moments"]


def activations_of(stages, config, forward=None, backward=None):
    """Forward and backward σ of layers 1…L: the config's, then each spec's own, then
    ``forward``/``backward`` (non-None entries override)."""
    fwd = [s.layer.activation for s in stages]
    bwd = [s.layer.backward_activation for s in stages]
    for merged, overrides in ((fwd, forward), (bwd, backward)):
        for i, name in enumerate(overrides or ()):
            if name is not None:
                merged[i] = name
    return layer_activations(config, len(stages), fwd, bwd)


def _params(params, l, per_layer):
    return layer_params(params, l, per_layer, 0)


def input_states(x, k):
    """``[k, B, *shape]``: ``x`` in state 0, the other states 0."""
    return tf.concat([x[None], tf.zeros(tf.concat([[k - 1], tf.shape(x)], 0), x.dtype)], 0)


def lower_states(a, stage, routes=None):
    """Neuron layer ``a`` through the stage's transforms: ``(T a, routes)``."""
    found = []
    for i, (spec, in_shape, _) in enumerate(stage.transforms):
        a, r = pooling.transform_forward(a, spec, in_shape, None if routes is None else routes[i])
        found.append(r)
    return a, tuple(found)


def _forward(lower, w, p, config, activation, stage, moments=None):
    """Layer l+1 from the states it reads; pair 0 reads only ``x`` (state 0 of the input).
    ``moments``: the statistics to normalise with (internal ``[k, 1, n]``), None: the batch's."""
    first, layer = stage.index == 0, stage.layer
    if isinstance(layer, Dense):
        if first:
            return input_forward_layer(lower[0], w, p, config, activation, moments)
        return forward_layer(lower, w, p, config, activation, moments=moments)
    if first:
        return conv.input_conv_forward_layer(lower[0], w, p, config, activation, layer, moments)
    return conv.conv_forward_layer(lower, w, p, config, activation, layer, moments)


def _moments(lower, w, p, config, stage):
    """The batch's ``(mean, var)`` of layer l+1's forward pre-activation, ``[k, 1, n]``: over
    the batch (dense), over batch and positions per channel (conv)."""
    first, layer = stage.index == 0, stage.layer
    below = lower[0] if first else lower
    if isinstance(layer, Dense):
        return layer_moments(below, w, p, config, input_layer=first)
    return conv.layer_moments(below, w, p, config, layer, input_layer=first)


@tf.autograph.experimental.do_not_convert
def forward_states(params, synapses, x, stages, config=BlurConfig(), per_layer=False,
                   forward_activations=None, moments=None):
    """Reset and forward (internal layout): ``(states [a⁰ … a^L], routes per pair)``.
    ``moments``: per pair the ``(mean, var)`` ``[k, 1, n]`` to normalise with (under
    ``config.activation_norm``), or None: the batch's, as a training step does."""
    fwd = forward_activations or activations_of(stages, config)[0]
    k = synapses[0][0].shape[0]
    states, routes = [input_states(tf.cast(x, synapses[0][0].dtype), k)], []
    for stage, (w, _) in zip(stages, synapses):
        lower, r = lower_states(states[-1], stage)
        routes.append(r)
        states.append(_forward(lower, w, _params(params, stage.index, per_layer), config,
                               fwd[stage.index], stage,
                               None if moments is None else moments[stage.index]))
    return states, routes


@tf.autograph.experimental.do_not_convert
def forward_moments(params, synapses, x, stages, config=BlurConfig(), per_layer=False,
                    forward_activations=None):
    """The statistics a training step on ``x`` normalises with (internal layout): per pair
    the batch's ``(mean, var)`` ``[k, 1, n]`` of its forward pre-activation in the forward
    pass from ``synapses`` (``_moments``), each layer normalised over the batch as in
    training."""
    fwd = forward_activations or activations_of(stages, config)[0]
    k = synapses[0][0].shape[0]
    a, out = input_states(tf.cast(x, synapses[0][0].dtype), k), []
    for stage, (w, _) in zip(stages, synapses):
        lower = lower_states(a, stage)[0]
        p = _params(params, stage.index, per_layer)
        out.append(_moments(lower, w, p, config, stage))
        if stage.index + 1 < len(stages):
            a = _forward(lower, w, p, config, fwd[stage.index], stage)
    return out


def _drive(a_above, v, p, config, stage):
    """The backward drive into the states the pair reads: ``Σ_j Σ_d a[d, b, j] μ[d, c]
    V[c, j, i]`` (dense) or its transposed convolution (conv)."""
    if isinstance(stage.layer, Dense):
        return per_state_matmul(mix_states(a_above, p["mu"]), synapse_view(v, p, config))
    return conv.conv_backward_drive(a_above, v, p, config, stage.layer, stage.lower)


@tf.autograph.experimental.do_not_convert
def backward_states(params, synapses, states, routes, stages, config=BlurConfig(),
                    per_layer=False, backward_activations=None):
    """Backward, l = L−1 … 1 (internal layout): ``a^l = rule(a^l, T_lᵀ g^l)``."""
    bwd = backward_activations or activations_of(stages, config)[1]
    states = list(states)
    for l in range(len(stages) - 1, 0, -1):
        stage, p = stages[l], _params(params, l, per_layer)
        g = _drive(states[l + 1], synapses[l][1], p, config, stage)
        for (spec, in_shape, _), r in reversed(list(zip(stage.transforms, routes[l]))):
            g = pooling.transform_transpose(g, spec, in_shape, r)
        states[l] = conv.backward_update(states[l], g, p, config, bwd[l - 1])
    return states


@tf.autograph.experimental.do_not_convert
def update_synapses(params, synapses, states, routes, stages, config=BlurConfig(),
                    per_layer=False):
    """Update of every pair from ``T_l a^l`` and ``a^{l+1}`` (internal layout); V⁰ is kept."""
    new = []
    for stage, (w, v) in zip(stages, synapses):
        l, p = stage.index, _params(params, stage.index, per_layer)
        lower = lower_states(states[l], stage, routes[l])[0]
        if isinstance(stage.layer, Dense):
            new.append(dense_update_pair(w, v, lower, states[l + 1], p, config,
                                         update_backward=l > 0, input_layer=l == 0))
        else:
            new.append(conv.update_pair(w, v, lower, states[l + 1], p, config, stage.layer,
                                        update_backward=l > 0,
                                        input_x=lower[0] if l == 0 else None))
    return tuple(new)


@tf.autograph.experimental.do_not_convert
def step(params, synapses, x, targets, stages, config=BlurConfig(), per_layer=False,
         forward_activations=None, backward_activations=None):
    """One inner step in the internal layout, without checks: ``(new synapses, states)``."""
    fwd, bwd = activations_of(stages, config, forward_activations, backward_activations)
    states, routes = forward_states(params, synapses, x, stages, config, per_layer, fwd)
    states[-1] = conv.feedback(states[-1], targets, config.feedback)
    states = backward_states(params, synapses, states, routes, stages, config, per_layer, bwd)
    return update_synapses(params, synapses, states, routes, stages, config, per_layer), states


def _states_out(a):
    """Internal ``[k, B, *shape]`` -> public ``[B, *shape, k]``."""
    return tf.transpose(a, list(range(1, a.shape.rank)) + [0])


@tf.autograph.experimental.do_not_convert
def inner_step(params, synapses, x, targets, specs, config=BlurConfig(), per_layer=False,
               forward_activations=None, backward_activations=None):
    """One inner step of the network ``specs`` on a batch (docs/conv.md).

    ``synapses``: one ``(W, V)`` pair per Dense/Conv2D spec, public layout; ``x``:
    ``[B, *input_shape]``; ``targets``: ``[B, *output_shape]``.  Returns ``(new synapses,
    states)``, states public ``[B, *shape, k]``; ``states[-1][..., 0]`` is the prediction
    made before the update.
    """
    x, targets = tf.convert_to_tensor(x), tf.convert_to_tensor(targets)
    stages = check_network(params, synapses, x, specs, targets)
    new, states = step(params, pairs_in(synapses), x, targets, stages, config, per_layer,
                       forward_activations, backward_activations)
    return pairs_out(new), [_states_out(a) for a in states]


@tf.autograph.experimental.do_not_convert
def forward_pass(params, synapses, x, specs, config=BlurConfig(), per_layer=False,
                 forward_activations=None, moments=None):
    """Reset and forward: the states ``[a⁰ … a^L]``, public layout.

    ``moments``: under ``config.activation_norm``, per layer pair the ``(mean, var)``
    ``[n, k]`` (``step_moments``' layout) to normalise with, so that one example's states do
    not depend on the rest of its batch; None normalises over the batch, as training does.
    """
    x = tf.convert_to_tensor(x)
    stages = check_network(params, synapses, x, specs, moments=moments)
    fwd = activations_of(stages, config, forward_activations)[0]
    states, _ = forward_states(params, pairs_in(synapses), x, stages, config, per_layer, fwd,
                               moments_in(moments))
    return [_states_out(a) for a in states]


@tf.autograph.experimental.do_not_convert
def predict(params, synapses, x, specs, config=BlurConfig(), per_layer=False,
            forward_activations=None, moments=None):
    """State 0 of the last layer after a forward pass, ``[B, *output_shape]``; ``moments``:
    as in ``forward_pass``."""
    return forward_pass(params, synapses, x, specs, config, per_layer,
                        forward_activations, moments)[-1][..., 0]


@tf.autograph.experimental.do_not_convert
def step_moments(params, synapses, x, specs, config=BlurConfig(), per_layer=False,
                 forward_activations=None):
    """The batch statistics a training step on ``x`` normalises with: per layer pair the
    ``(mean, var)`` ``[n, k]`` of its forward pre-activation ``η z`` (``n``: units, or a
    convolution's channels, reduced over batch and positions), computed from ``synapses``
    (the ones the step starts from).  What inference tracks (``normalization.track_moments``)
    and normalises with (``predict(..., moments=...)``)."""
    x = tf.convert_to_tensor(x)
    stages = check_network(params, synapses, x, specs)
    fwd = activations_of(stages, config, forward_activations)[0]
    return moments_out(forward_moments(params, pairs_in(synapses), x, stages, config, per_layer,
                                       fwd))


def check_network(params, synapses, x, specs, targets=None, moments=None):
    """Trace-time checks of a network call; returns the stages (``layer_specs.plan``)."""
    stages = plan(tuple(x.shape[1:]), specs)
    if not isinstance(synapses, (tuple, list)) or len(synapses) != len(stages):
        count = len(synapses) if isinstance(synapses, (tuple, list)) else type(synapses).__name__
        raise ValueError(f"The network has {len(stages)} layer pairs (Dense/Conv2D specs) but "
                         f"got {count} synapse pairs.")
    k = tuple(synapses[0][0].shape)[-1]
    check_k(k, "network synapses")
    for stage, pair in zip(stages, synapses):
        for name, t, want in zip(("W", "V"), pair, synapse_shapes(stage, k)):
            if tuple(t.shape) != want:
                raise ValueError(f"Layer pair {stage.index} ({type(stage.layer).__name__}) has "
                                 f"{name} of shape {tuple(t.shape)}; expected {want} (no "
                                 "population axes).")
    genome_k = tuple(params["nu"].shape)[-1]
    if genome_k != k:
        raise ValueError(f"The genome has k={genome_k} states but the synapses have k={k}.")
    if targets is not None and tuple(targets.shape[1:]) != tuple(stages[-1].upper):
        raise ValueError(f"targets have shape {tuple(targets.shape)}; the last layer has "
                         f"per-example shape {stages[-1].upper}.")
    if moments is not None:
        check_moments(moments, stages, k)
    return stages


def check_moments(moments, stages, k):
    """``moments`` holds a ``(mean, var)`` pair ``[n, k]`` per layer pair (``n``: its units or
    channels)."""
    if not isinstance(moments, (tuple, list)) or len(moments) != len(stages):
        count = len(moments) if isinstance(moments, (tuple, list)) else type(moments).__name__
        raise ValueError(f"The network has {len(stages)} layer pairs but got {count} moments.")
    for stage, pair in zip(stages, moments):
        want = (stage.upper[-1], k)
        shapes = [tuple(tf.convert_to_tensor(t).shape) for t in pair]
        if len(shapes) != 2 or any(s != want for s in shapes):
            raise ValueError(f"Layer pair {stage.index} ({type(stage.layer).__name__}) has "
                             f"moments of shapes {shapes}; expected (mean, var) of {want}.")


def init_synapses(seed, input_shape, specs, k, config=None, scale=1.0, dtype=tf.float32):
    """Random synapses of the network ``specs`` on ``input_shape``, public layout.

    Rows of W ~ N(0, scale² / fan_in) (``fan_in``: n, or kh·kw·c_in), bias row 0;
    V ~ N(0, scale² / fan) with ``fan`` its rows (m, or kh·kw·c_out); stateless, then the
    config's ties.
    """
    check_k(k, "init_synapses")
    stages = plan(tuple(input_shape), specs)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    seeds = tf.random.experimental.stateless_split(seed, 2 * len(stages))
    pairs = []
    for stage in stages:
        (rows, m, _), (v_rows, n, _) = synapse_shapes(stage, k)
        w = _normal([k, rows - 1, m], seeds[2 * stage.index], dtype) * (scale / (rows - 1) ** 0.5)
        w = tf.concat([w, tf.zeros([k, 1, m], dtype)], axis=1)
        v = _normal([k, v_rows, n], seeds[2 * stage.index + 1], dtype) * (scale / v_rows ** 0.5)
        pairs.append(sync_pair(w, v, stage, config))
    return pairs_out(tuple(pairs))


def sync_pair(w, v, stage, config):
    """The config's ties on one pair (internal layout); no config: unchanged."""
    if config is None:
        return w, v
    if isinstance(stage.layer, Dense):
        return dense_sync(w, v, config.symmetric, config.single_state)
    return conv.sync(w, v, stage.layer, config.symmetric, config.single_state)


def _normal(shape, seed, dtype):
    return tf.random.stateless_normal(shape, seed, dtype=dtype, alg="philox")
