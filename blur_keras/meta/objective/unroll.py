"""The meta-loss: T BLUR inner steps from fresh synapses, then a query (docs/spec.md §5).

Everything here is a pure function of tensors, so it compiles with
``tf.function(jit_compile=True)`` and differentiates with respect to the
genome.  Shapes (docs/spec.md §6): the genome carries a leading species axis ``S``;
synapses are ``[S, R, ...]`` (``R`` replicas: synapse initialisations sharing
one genome); a batch is the dict

* ``train_x``: ``[T, S, R, B, F]`` float, ``train_y``: ``[T, S, R, B]`` int;
* ``query_x``: ``[S, R, Bq, F]`` float, ``query_y``: ``[S, R, Bq]`` int.

Long unrolls: ``recompute=c`` stores only the synapses at every c-th inner
step in the forward pass and recomputes the c steps of a segment when the
gradient is taken (gradient checkpointing), so activation memory grows with
``T / c + c`` instead of ``T``.
"""

import tensorflow as tf

from blur_keras.core.feedback import pm1_targets
from blur_keras.core.normalization import start_moments, track_moments
from blur_keras.core.step import forward_moments, moments_out, predict, step
from blur_keras.core.layout import pairs_in, pairs_out, synapses_in, synapses_out
from blur_keras.core.synapses import flatten_pairs, init_synapses, pair_up
from blur_keras.meta.objective.chain import check_chain_options, is_chain
from blur_keras.meta.objective.chain_unroll import chain_meta_loss

__all__ = ["meta_loss", "unroll", "pm1_targets", "init_population_synapses", "LOSSES"]

LOSSES = ("xent", "mse")


def init_population_synapses(seed, sizes, k, species, replicas, config, scale=1.0,
                             dtype=tf.float32):
    """Synapses ``[S, R, ...]``.

    ``seed``: a ``[2]`` seed (one draw for the whole population) or ``[R, 2]``
    (one draw per replica, each ``[S, ...]``; what the distributed trainer
    uses so that a replica's synapses do not depend on the device count).
    """
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 1:
        return init_synapses(seed, sizes, k, (species, replicas), config, scale, dtype)
    per_replica = [init_synapses(seed[r], sizes, k, (species,), config, scale, dtype)
                   for r in range(seed.shape[0])]
    return tuple(
        tuple(tf.stack([rep[l][i] for rep in per_replica], axis=1) for i in range(2))
        for l in range(len(sizes) - 1))


def _flatten(synapses):
    """Synapses as the flat list the unroll carries: ``[W⁰, W¹, V¹, W², V², …]``.

    V⁰ is left out: an inner step never reads or changes it, and not
    carrying it lets XLA drop its random initialisation when the caller
    does not use it either (``meta_loss``).
    """
    return [synapses[0][0]] + flatten_pairs(synapses[1:])


def _pack(flat, v0):
    """Inverse of ``_flatten``, with ``v0`` as V⁰."""
    return ((flat[0], v0),) + pair_up(flat[1:])


def _accuracy(logits, labels):
    """Accuracy per leading position: ``[..., B, C]`` and ``[..., B]`` -> ``[...]``; a row
    with a non-finite logit counts as wrong."""
    hit = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
    hit = tf.logical_and(hit, tf.reduce_all(tf.math.is_finite(logits), axis=-1))
    return tf.reduce_mean(tf.cast(hit, tf.float32), axis=-1)


def _segment_fn(names, num_flat, config, per_layer, num_steps, v0_spec, logit_scale=1.0,
                momentum=None, reverse="hand"):
    """``c`` inner steps as a function of flat tensors (for recomputation).

    Returns the flat synapses after the ``c`` steps, then ``[c, S]`` online
    losses (softmax cross-entropy of ``logit_scale ×`` the prediction made on
    each training batch before learning from it, mean over replicas and
    examples; differentiable) and ``[c, S]`` online accuracies (not).
    The synapses are in the internal layout (``blur_keras.core.layout``).
    ``v0_spec``: shape and dtype of V⁰, which the step never reads; a zero
    placeholder stands in for it.  ``momentum``: when not None, the flat tensors end with
    the tracked normalisation statistics (``_tracked``), updated from each step's batch
    (``t0``, the last argument, counts the steps before the segment).
    """

    num_tracked = _num_tracked(num_flat, momentum)

    def run(*args):
        params = dict(zip(names, args[:len(names)]))
        flat = list(args[len(names):len(names) + num_flat])
        moments = _pair_moments(args[len(names) + num_flat:len(names) + num_flat + num_tracked])
        xs, ts, ys, t0 = args[len(names) + num_flat + num_tracked:]
        synapses = _pack(flat, tf.zeros(*v0_spec))
        losses, accs = [], []
        for i in range(num_steps):
            if momentum is not None:
                batch = forward_moments(params, synapses, xs[i], config, per_layer)
                moments = track_moments(moments, batch, t0 + i, momentum)
            synapses, states = step(params, synapses, xs[i], ts[i], config, per_layer,
                                    reverse=reverse)
            guess = states[-1][..., 0, :, :]
            labels = tf.broadcast_to(tf.cast(ys[i], tf.int32), tf.shape(guess)[:-1])
            xent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logit_scale * guess)
            losses.append(tf.reduce_mean(tf.reshape(xent, [tf.shape(xent)[0], -1]), axis=-1))
            accs.append(tf.reduce_mean(_accuracy(guess, ys[i]), axis=-1))
        return (*_flatten(synapses), *_flat_moments(moments), tf.stack(losses), tf.stack(accs))

    return run


def _num_tracked(num_flat, momentum):
    """How many tensors of tracked statistics follow the ``num_flat`` flat synapses
    ``[W⁰, W¹, V¹, …]`` (2L − 1 of them): a mean and a variance per layer, or none."""
    return 0 if momentum is None else num_flat + 1


def _pair_moments(flat):
    """``[m¹, v¹, m², v², …]`` -> ``[(m¹, v¹), …]``; None when empty."""
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)] or None


def _flat_moments(moments):
    return [] if moments is None else [t for m in moments for t in m]


def _recomputed(fn, num_params, num_flat):
    """``fn`` whose intermediates are recomputed in the backward pass."""

    @tf.custom_gradient
    def wrapped(*args):
        outputs = fn(*args)

        def grad(*dys):
            # the last output (accuracy) has no gradient
            diff_args = list(args[:num_params + num_flat])
            with tf.GradientTape() as tape:
                tape.watch(diff_args)
                again = fn(*diff_args, *args[num_params + num_flat:])
            grads = tape.gradient(list(again[:-1]), diff_args, output_gradients=list(dys[:-1]),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return (*grads, *[None] * (len(args) - num_params - num_flat))

        return outputs, grad

    return wrapped


def unroll(params, synapses, train_x, train_y, config, per_layer=False, recompute=0,
           logit_scale=1.0, inference_momentum=None, reverse="hand"):
    """T inner steps, one per training batch.

    Args:
      params: genome dict (species axis leading).
      synapses: tuple of ``(W, V)``, ``[S, R, ...]``.
      train_x: ``[T, S, R, B, F]``; train_y: ``[T, S, R, B]`` int labels.
      recompute: 0 stores every step's intermediates for the gradient; c > 0
        recomputes them, c inner steps at a time.
      logit_scale: scale of the prediction in the online loss.
      inference_momentum: when not None (and ``config.activation_norm``), also track the
        normalisation statistics inference uses (``normalization.track_moments``) and
        return them as a fourth output, ``[(mean, var) [S, R, n_l, k] per layer]``.
      reverse: how the gradient through each inner step is taken (``step.REVERSES``).
    Returns:
      ``(synapses, inner_accuracy, online_loss)``: the synapses after T steps
      (V⁰, never read, is returned as given); ``[T, S]`` the accuracy of the
      network's prediction on each training batch just before learning from it
      (the inner-loop learning curve); ``[S]`` the mean over the T steps of
      that prediction's softmax cross-entropy (differentiable: the trajectory
      part of the meta-loss).
    """
    num_steps = int(train_x.shape[0])
    num_classes = int(synapses[-1][0].shape[-2])
    data = (train_x, pm1_targets(train_y, num_classes, train_x.dtype), train_y)
    names = sorted(params)
    p_list = [params[n] for n in names]
    flat, num_syn, v0_spec = _unroll_start(synapses, inference_momentum)
    num_args = len(flat)
    seg = min(max(1, int(recompute)) if recompute else 1, num_steps)

    def segment(length):
        fn = _segment_fn(names, num_syn, config, per_layer, length, v0_spec, logit_scale,
                         inference_momentum, reverse)
        return _recomputed(fn, len(names), num_args) if recompute else fn

    flat, loss_sum, inner_acc = _run_segments(segment(seg), p_list, flat, data, seg)
    rest = num_steps % seg
    if rest:
        out = segment(rest)(*p_list, *flat, *(a[-rest:] for a in data), num_steps - rest)
        flat = list(out[:-2])
        loss_sum += tf.reduce_sum(out[-2], axis=0)
        inner_acc = tf.concat([inner_acc, out[-1]], axis=0)
    return _unroll_end(flat, num_syn, synapses[0][1], inner_acc, loss_sum / num_steps)


def _unroll_start(synapses, inference_momentum):
    """What the unroll carries: ``(flat, number of flat synapses, V⁰'s (shape, dtype))``.

    The synapses are converted once (every step runs in the internal layout) and flattened
    without V⁰; with ``inference_momentum`` the tracked statistics' start follows them.
    """
    v0 = synapses[0][1]
    flat = [synapses_in(synapses[0][0])] + flatten_pairs(pairs_in(synapses[1:]))
    v0_spec = (synapses_in(v0).shape, v0.dtype)  # the shape only (a placeholder's)
    num_syn = len(flat)
    if inference_momentum is not None:  # W⁰, W¹, …: the forward synapses of every layer
        flat = flat + _flat_moments(start_moments([flat[0]] + flat[1::2]))
    return flat, num_syn, v0_spec


def _run_segments(fn, p_list, flat, data, seg):
    """The whole segments of ``seg`` inner steps (a ``tf.while_loop`` when there are several).

    ``data``: ``(train_x, train targets, train_y)``, each ``[T, ...]``. Returns ``(flat,
    online-loss sum [S], inner accuracy [segments · seg, S])``.
    """
    num_segments = int(data[0].shape[0]) // seg

    def body(i, flat, loss_sum, accs):
        idx = i * seg + tf.range(seg)
        xs, ts, ys = (tf.gather(a, idx) for a in data)
        out = fn(*p_list, *flat, xs, ts, ys, i * seg)
        return (i + 1, list(out[:-2]), loss_sum + tf.reduce_sum(out[-2], axis=0),
                accs.write(i, out[-1]))

    accs = tf.TensorArray(tf.float32, size=num_segments, element_shape=[seg, None],
                          infer_shape=False)
    loss_sum = tf.zeros(tf.shape(flat[0])[:1], data[0].dtype)
    if num_segments == 1:
        _, flat, loss_sum, accs = body(tf.constant(0), flat, loss_sum, accs)
    else:
        _, flat, loss_sum, accs = tf.while_loop(
            lambda i, *_: i < num_segments, body, (tf.constant(0), flat, loss_sum, accs),
            maximum_iterations=num_segments)
    return flat, loss_sum, tf.reshape(accs.stack(), [num_segments * seg, -1])


def _unroll_end(flat, num_syn, v0, inner_acc, online):
    """``unroll``'s outputs from the flat carry: synapses back in the public layout with
    ``v0`` as V⁰, then the tracked statistics when the carry holds them."""
    flat, tracked = flat[:num_syn], _pair_moments(flat[num_syn:])
    rest_pairs = pairs_out(pair_up(flat[1:]))
    out = ((synapses_out(flat[0]), v0),) + rest_pairs, inner_acc, online
    return out if tracked is None else out + (moments_out(tracked),)


def meta_loss(params, seed, batch, config, sizes, *, loss="xent", recompute=0, per_layer=False,
              init_scale=1.0, logit_scale=1.0, shared_synapses=False, population_species=None,
              trajectory_weight=0.0, inference="batch", inference_momentum=0.9,
              reverse=None):
    """Meta-loss of a population of genomes on one batch of tasks (docs/spec.md §5).

    Fresh random synapses (``seed``), ``T`` inner steps on ``batch["train_*"]``,
    a forward pass on the query batch, then the softmax cross-entropy (or MSE
    to the ±1 targets) of state 0 of the last layer.

    Args:
      params: genome dict, every entry with a leading species axis ``S``.
      seed: ``[2]`` or ``[R, 2]`` int seed of the synapse initialisation.
      batch: dict of ``train_x, train_y, query_x, query_y`` (module docstring).
      config: ``BlurConfig``.
      sizes: layer sizes ``n_0 … n_L``, or a ``chain.Chain`` (layer specs: docs/conv.md;
        ``chain_unroll``, which takes no hand reverse).
      loss: ``"xent"`` or ``"mse"``.
      recompute: gradient-checkpoint segment length (0: off).
      logit_scale: query logits are ``logit_scale ×`` state 0 (tanh outputs
        lie in [−1, 1]).
      trajectory_weight: ``w`` in ``(1 − w) · query loss + w · online loss``, where the
        online loss is the mean over the T inner steps of the cross-entropy of the
        prediction on each training batch before the network learns from it
        (``unroll``): a meta-loss spread over the whole trajectory rather than
        its last step. 0 (default): the paper's last-step query loss.
      shared_synapses: every species starts from the same synapses (common
        random numbers, e.g. for comparing CMA-ES candidates).
      inference: how the query is normalised under ``config.activation_norm``: ``"batch"``
        over the query batch, or ``"moving"`` with statistics tracked over the T steps
        (momentum ``inference_momentum``), which is how ``BlurModel`` predicts by default:
        the rule is then judged as users run it (``blur_keras.keras.inference``).
      reverse: ``"hand"`` (``step_reverse``; None: the default) or ``"autodiff"``: how the
        meta-gradient goes through each inner step (the same values to round-off).
      population_species: when ``params`` hold a shard of a larger population
        (species sharded over devices): its size. The synapses are drawn for
        all of it and the shard's species, from ``batch["species_first"]`` on,
        are kept, so a species' synapses do not depend on the sharding.

    The data may carry a species axis of 1 (``train_x [T, 1, R, B, F]``): all
    species then see the same batches.
    Returns:
      ``(loss, aux)``: ``loss`` is ``[S]`` (mean over replicas and query
      examples); ``aux`` holds ``accuracy`` ``[S]`` (query accuracy),
      ``inner_accuracy`` ``[T, S]``, ``online_loss`` ``[S]`` and ``finite`` ``[S]`` (bool).
    """
    _check_meta_loss_args(loss, inference)
    if is_chain(sizes):
        check_chain_options(sizes, reverse=reverse)
        tracks = inference == "moving" and config.activation_norm
        return chain_meta_loss(params, seed, batch, config, sizes, loss=loss, per_layer=per_layer,
                               init_scale=init_scale, logit_scale=logit_scale,
                               shared_synapses=shared_synapses, trajectory_weight=trajectory_weight,
                               population_species=population_species,
                               inference_momentum=inference_momentum if tracks else None,
                               recompute=recompute)
    return _dense_meta_loss(params, seed, batch, config, sizes, loss, recompute, per_layer,
                            init_scale, logit_scale, shared_synapses, population_species,
                            trajectory_weight, inference, inference_momentum, reverse or "hand")


def _dense_meta_loss(params, seed, batch, config, sizes, loss, recompute, per_layer, init_scale,
                     logit_scale, shared_synapses, population_species, trajectory_weight,
                     inference, inference_momentum, reverse):
    """``meta_loss`` through the dense chain ``sizes`` (``unroll``)."""
    train_x = tf.cast(tf.convert_to_tensor(batch["train_x"]), params["nu"].dtype)
    synapses = _fresh_synapses(params, seed, batch, config, sizes, int(train_x.shape[2]),
                               init_scale, shared_synapses, population_species)
    tracks = inference == "moving" and config.activation_norm
    unrolled = unroll(params, synapses, train_x, batch["train_y"], config, per_layer, recompute,
                      logit_scale, inference_momentum if tracks else None, reverse)
    synapses, inner_acc, online, *tracked = unrolled
    per_species, acc, finite = _judge_query(params, synapses, batch, config, per_layer,
                                            tracked, loss, logit_scale, sizes[-1])
    if trajectory_weight:
        per_species = (1.0 - trajectory_weight) * per_species + trajectory_weight * online
    finite = tf.logical_and(finite, tf.math.is_finite(per_species))
    return per_species, {"accuracy": acc, "inner_accuracy": inner_acc, "online_loss": online,
                         "finite": finite}


def _check_meta_loss_args(loss, inference):
    """Errors at the door for ``meta_loss``'s ``loss`` and ``inference``."""
    if loss not in LOSSES:
        raise ValueError(f"meta_loss: loss={loss!r}; expected one of {LOSSES}.")
    if inference not in ("batch", "moving"):
        raise ValueError(f"meta_loss: inference={inference!r}; expected 'batch' or 'moving'.")


def _judge_query(params, synapses, batch, config, per_layer, tracked, loss, logit_scale,
                 num_classes):
    """The trained synapses on the query batch: ``(query loss [S], accuracy [S], whether
    every query output is finite [S])``, means over replicas and examples. ``tracked``:
    ``[the unroll's tracked statistics]``, or empty to normalise over the query batch."""
    query_x = tf.convert_to_tensor(batch["query_x"], synapses[0][0].dtype)
    out = predict(params, synapses, query_x, config, per_layer,
                  moments=tracked[0] if tracked else None)  # [S, R, Bq, C]
    query_y = tf.broadcast_to(tf.cast(batch["query_y"], tf.int32), tf.shape(out)[:-1])
    per_species = _query_loss(out, query_y, loss, logit_scale, num_classes)
    acc = tf.cast(tf.reduce_mean(_accuracy(out, query_y), axis=1), tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(tf.reshape(out, [int(params["nu"].shape[0]), -1])),
                           axis=-1)
    return per_species, acc, finite


def _fresh_synapses(params, seed, batch, config, sizes, replicas, init_scale, shared,
                    population_species):
    """The population's fresh synapses ``[S, R, ...]`` (``meta_loss``'s ``shared_synapses``
    and ``population_species``)."""
    species, k = int(params["nu"].shape[0]), int(params["nu"].shape[-1])
    dtype = params["nu"].dtype
    if shared:
        synapses = init_population_synapses(seed, sizes, k, 1, replicas, config, init_scale,
                                            dtype)
        return tuple(tuple(tf.broadcast_to(t, [species] + t.shape[1:].as_list()) for t in pair)
                     for pair in synapses)
    synapses = init_population_synapses(seed, sizes, k, population_species or species,
                                        replicas, config, init_scale, dtype)
    if population_species and population_species != species:  # a shard of the population
        keep = tf.cast(batch["species_first"], tf.int32) + tf.range(species)
        synapses = tuple(tuple(tf.gather(t, keep, axis=0) for t in pair) for pair in synapses)
    return synapses


def _query_loss(out, query_y, loss, logit_scale, num_classes):
    """``[S]``: the query's softmax cross-entropy of ``logit_scale × out`` or squared error to
    the ±1 targets, mean over replicas and examples."""
    if loss == "xent":
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=query_y, logits=logit_scale * out)
    else:
        per_example = tf.reduce_mean(
            tf.square(out - pm1_targets(query_y, num_classes, out.dtype)), axis=-1)
    return tf.reduce_mean(per_example, axis=[1, 2])
