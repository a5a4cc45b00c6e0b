"""One BLUR inner step (an "unroll") and prediction, as pure functions (docs/spec.md §2).

State in, state out: ``inner_step(genome_params, synapses, x, targets, config)``
returns new synapses and the layer states, so it can be unrolled, compiled
with XLA and differentiated with respect to the genome.  No loss and no
gradient exist inside.

``inner_step``, ``forward_pass`` and ``predict`` take and return the public
layout (the state axis last) and check their inputs; ``step`` and
``forward_states`` are the same math in the internal layout
(``blur_keras.core.layout``), for callers that keep synapses internal across many
steps (a meta-training unroll).

Population axes (docs/spec.md §6): synapses may carry leading axes ``P`` (species,
replicas); genome entries carry a prefix of them (left-aligned, e.g. species
only); ``x`` and ``targets`` broadcast against them.
"""

import tensorflow as tf

from blur_keras.core import step_reverse
from blur_keras.core.backward import backward_layer_parts
from blur_keras.core.checks import check_inputs
from blur_keras.core.config import BlurConfig
from blur_keras.core.feedback import apply_feedback
from blur_keras.core.forward import (forward_layer, forward_layer_parts, input_forward_layer,
                                     input_states, layer_moments)
from blur_keras.core.genome_spec import align_to_population, select_layer
from blur_keras.core.layout import pairs_in, pairs_out, states_in, states_out
from blur_keras.core.synapses import update_pair_parts

__all__ = ["REVERSES", "layer_activations", "forward_pass", "inner_step", "predict", "layer_params",
           "forward_states", "forward_moments", "backward_states", "update_synapses", "run_step",
           "step", "moments_in", "moments_out"]


def layer_activations(config, num_layers, forward=None, backward=None):
    """Forward and backward σ names for layers 1…L (index 0 is layer 1).

    Hidden layers use ``config.hidden_activation``, layer L
    ``config.last_activation``, the backward pass ``config.backward_activation``;
    a non-None entry of ``forward``/``backward`` overrides its layer.
    """
    fwd = [config.hidden_activation] * (num_layers - 1) + [config.last_activation]
    bwd = [config.backward_activation] * num_layers
    for defaults, overrides in ((fwd, forward), (bwd, backward)):
        for i, name in enumerate(overrides or ()):
            if name is not None:
                defaults[i] = name
    return tuple(fwd), tuple(bwd)


def layer_params(params, layer, per_layer, num_population_axes):
    """Genome entries of layer pair ``layer``, aligned to the population axes."""
    return align_to_population(select_layer(params, layer, per_layer), num_population_axes)


def _num_population_axes(synapses):
    return len(synapses[0][0].shape) - 3


@tf.autograph.experimental.do_not_convert
def forward_pass(params, synapses, x, config=BlurConfig(), per_layer=False,
                 forward_activations=None, moments=None):
    """Reset and forward (docs/spec.md §2 steps 1–2). Returns the states ``[a^0, …, a^L]``,
    each ``[*P, B, n_l, k]`` (the public layout, like ``synapses``).

    ``moments``: under ``config.activation_norm``, the tracked statistics of each layer's
    forward pre-activation (``forward_moments``, public layout ``[*P, n_l, k]`` each) that
    inference normalises with; None normalises over the batch, as training does.
    """
    x = tf.convert_to_tensor(x)
    check_inputs(params, synapses, x)
    states = forward_states(params, pairs_in(synapses), x, config, per_layer,
                            forward_activations, moments_in(moments))
    return [states_out(a) for a in states]


@tf.autograph.experimental.do_not_convert
def forward_states(params, synapses, x, config=BlurConfig(), per_layer=False,
                   forward_activations=None, moments=None):
    """``forward_pass`` in the internal layout (``blur_keras.core.layout``), without its checks."""
    fwd = layer_activations(config, len(synapses), forward_activations)[0]
    return _forward(_layers_params(params, synapses, per_layer), synapses, x, config, fwd,
                    moments)[0]


def _layers_params(params, synapses, per_layer):
    """``layer_params`` of every layer pair."""
    num_pop = _num_population_axes(synapses)
    return [layer_params(params, l, per_layer, num_pop) for l in range(len(synapses))]


def _forward(layer_p, synapses, x, config, fwd, moments=None):
    """The forward pass over the layer pairs' genome entries ``layer_p``: ``(states, parts)``,
    ``parts[l]`` the intermediates of layer l+1 (``forward.forward_layer_parts``)."""
    states, parts = [input_states(x, _k(synapses))], []
    for l, (w, _) in enumerate(synapses):
        m = None if moments is None else moments[l]
        # from x directly at l = 0: the input layer's other states are 0
        a, kept = forward_layer_parts(x if l == 0 else states[-1], w, layer_p[l], config, fwd[l],
                                      moments=m, input_layer=l == 0)
        states.append(a)
        parts.append(kept)
    return states, parts


@tf.autograph.experimental.do_not_convert
def forward_moments(params, synapses, x, config=BlurConfig(), per_layer=False,
                    forward_activations=None):
    """The batch statistics of every layer's forward pre-activation in the forward pass on
    ``x`` (normalised over the batch, as in training): ``[(mean, var) of layer 1, …]``, each
    ``[*P, k, 1, n_l]`` (internal layout; ``moments_out`` gives the public one).

    What inference tracks across training steps (``normalization.track_moments``) and
    normalises with (``predict(..., moments=...)``).
    """
    num_pop = _num_population_axes(synapses)
    fwd = layer_activations(config, len(synapses), forward_activations)[0]
    below, out = x, []
    for l, (w, _) in enumerate(synapses):
        p = layer_params(params, l, per_layer, num_pop)
        out.append(layer_moments(below, w, p, config, input_layer=l == 0))
        if l + 1 < len(synapses):
            below = (input_forward_layer(x, w, p, config, fwd[l]) if l == 0
                     else forward_layer(below, w, p, config, fwd[l]))
    return out


def moments_in(moments):
    """Public ``[(mean, var) [*P, n, k], …]`` -> internal ``[*P, k, 1, n]`` (None stays None)."""
    if moments is None:
        return None
    return [tuple(states_in(tf.convert_to_tensor(t)[..., None, :, :]) for t in m)
            for m in moments]


def moments_out(moments):
    """Internal ``[(mean, var) [*P, k, 1, n], …]`` -> public ``[*P, n, k]``."""
    return [tuple(states_out(t)[..., 0, :, :] for t in m) for m in moments]


def _k(synapses):
    return synapses[0][0].shape[-3]


@tf.autograph.experimental.do_not_convert
def backward_states(params, synapses, states, config=BlurConfig(), per_layer=False,
                    backward_activations=None):
    """Backward (docs/spec.md §2 step 4), l = L−1 … 1; the input layer is never changed.
    Internal layout."""
    bwd = layer_activations(config, len(synapses), backward=backward_activations)[1]
    return _backward(_layers_params(params, synapses, per_layer), synapses, states, config,
                     bwd)[0]


def _backward(layer_p, synapses, states, config, bwd):
    """The backward pass over ``layer_p``: ``(states, parts)``, ``parts[l]`` the
    intermediates of layer l (``backward.backward_layer_parts``), l = L−1 … 1."""
    states, parts = list(states), {}
    for l in range(len(synapses) - 1, 0, -1):
        # V^l connects layer l+1 to layer l; layer l is written with its own backward σ
        states[l], parts[l] = backward_layer_parts(states[l + 1], states[l], synapses[l][1],
                                                   layer_p[l], config, bwd[l - 1])
    return states, parts


@tf.autograph.experimental.do_not_convert
def update_synapses(params, synapses, states, config=BlurConfig(), per_layer=False):
    """Hebbian update of every pair (docs/spec.md §2 step 5). Internal layout.

    The backward synapses V⁰ of the first pair are passed through unchanged:
    they would only feed the input layer, which the backward pass never
    writes, so nothing ever reads them (they are kept for shapes and files).
    """
    return _update(_layers_params(params, synapses, per_layer), synapses, states, config)[0]


def _update(layer_p, synapses, states, config):
    """The synapse update over ``layer_p``: ``(new synapses, parts)``, ``parts[l]`` those of
    pair l (``synapses.update_pair_parts``)."""
    new, parts = [], []
    for l, (w, v) in enumerate(synapses):
        pair, kept = update_pair_parts(w, v, states[l], states[l + 1], layer_p[l], config,
                                       update_backward=l > 0, input_layer=l == 0)
        new.append(pair)
        parts.append(kept)
    return tuple(new), parts


def run_step(layer_p, synapses, x, targets, config, forward_activations, backward_activations):
    """The whole step over the layer pairs' genome entries ``layer_p`` (``layer_params``) and
    layer activations: forward, feedback, backward, update (docs/spec.md §2 steps 1–5).
    Returns ``(new synapses, states, parts)``, ``parts`` the intermediates a hand-derived reverse reads (``step_reverse``):
    ``"forward"`` the states after the forward pass, and ``"fwd"``, ``"bwd"``, ``"upd"``
    those of ``forward.forward_layer_parts``, ``backward.backward_layer_parts`` and
    ``synapses.update_pair_parts``."""
    states, fwd = _forward(layer_p, synapses, x, config, forward_activations)
    forward = list(states)
    states[-1] = apply_feedback(states[-1], targets, config.feedback)
    states, bwd = _backward(layer_p, synapses, states, config, backward_activations)
    new, upd = _update(layer_p, synapses, states, config)
    return new, states, {"forward": forward, "fwd": fwd, "bwd": bwd, "upd": upd}


# how a step's gradient is taken: its hand-derived reverse (``step_reverse``), or TensorFlow's
# autodiff of the formulas of ``forward``, ``backward``, ``feedback`` and ``synapses``
REVERSES = ("hand", "autodiff")


@tf.autograph.experimental.do_not_convert
def inner_step(params, synapses, x, targets, config=BlurConfig(), per_layer=False,
               forward_activations=None, backward_activations=None, reverse="hand"):
    """One inner step on a batch: reset, forward, feedback, backward, synapse update.

    Args:
      params: genome dict (``Genome.params()``).
      synapses: tuple of ``(W^l, V^l)`` in the public layout (``blur_keras.core.layout``).
      x: inputs ``[*P', B, n_0]``.
      targets: ``[*P', B, n_L]`` (±1 one-hot for target feedback, the
        regression target for error feedback).
      reverse: how a gradient through the step is taken (``REVERSES``); the values are
        the same either way.
    Returns:
      ``(new_synapses, states)``, public layout; ``states[-1][..., 0]`` is the
      prediction the network made on ``x`` before this update.
    """
    x, targets = tf.convert_to_tensor(x), tf.convert_to_tensor(targets)
    check_inputs(params, synapses, x, targets)
    new, states = step(params, pairs_in(synapses), x, targets, config, per_layer,
                       forward_activations, backward_activations, reverse)
    return pairs_out(new), [states_out(a) for a in states]


@tf.autograph.experimental.do_not_convert
def step(params, synapses, x, targets, config=BlurConfig(), per_layer=False,
         forward_activations=None, backward_activations=None, reverse="hand"):
    """``inner_step`` in the internal layout, without its checks: synapses in and out, and
    the states, are ``[*P, k, ·, ·]``.  What a meta-training unroll runs (``meta.unroll``).

    Both ``reverse`` choices run the same forward (``run_step``); ``"hand"`` wraps it in its
    hand-derived reverse (``step_reverse.reversed_step``)."""
    targets = tf.convert_to_tensor(targets)
    if reverse not in REVERSES:
        raise ValueError(f"reverse={reverse!r}; expected one of {REVERSES}.")
    fwd, bwd = layer_activations(config, len(synapses), forward_activations, backward_activations)
    layer_p = _layers_params(params, synapses, per_layer)
    if reverse == "autodiff":
        return run_step(layer_p, synapses, x, targets, config, fwd, bwd)[:2]
    new, states = step_reverse.reversed_step(
        lambda p, syn, xx, tt: run_step(p, syn, xx, tt, config, fwd, bwd), layer_p, synapses, x,
        tf.cast(targets, synapses[0][0].dtype), config, fwd, bwd)
    return new, [input_states(x, _k(synapses))] + states


@tf.autograph.experimental.do_not_convert
def predict(params, synapses, x, config=BlurConfig(), per_layer=False, forward_activations=None,
            moments=None):
    """A forward pass on new inputs; the output is state 0 of the last layer
    (docs/spec.md §2 step 6), ``[*P, B, n_L]``.  ``moments``: as in ``forward_pass``."""
    x = tf.convert_to_tensor(x)
    check_inputs(params, synapses, x)
    states = forward_states(params, pairs_in(synapses), x, config, per_layer,
                            forward_activations, moments_in(moments))
    return states[-1][..., 0, :, :]
