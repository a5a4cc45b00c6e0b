"""The meta-loss through a network of layer specs (a ``chain.Chain``: convolutions, pooling,
flatten, dense; docs/conv.md), with the population axes of ``unroll.meta_loss``.

The population's ``S · R`` members (species s, replica r) are run one after another by
``tf.map_fn``: member ``(s, r)`` takes species s's genome, its own fresh synapses
(``blur_keras.core.network.init_synapses``) and its batches, reshaped from ``[..., F]`` to
``[..., *input_shape]``, and runs T inner steps (``blur_keras.core.network.step``, a
``tf.while_loop``; with ``recompute=c``, of segments of c steps recomputed for the gradient)
and a query, normalised over the query batch or, with an
``inference_momentum``, with the statistics tracked over the T steps as ``BlurModel`` predicts
(``normalization.track_moments`` of each step's ``network.forward_moments``, from zeros and
ones). Its synapse seed is ``fold_in(seed_r, s_global)`` where
``seed_r`` is ``seed[r]`` for ``[R, 2]`` seeds and ``fold_in(seed, r)`` for a ``[2]`` seed, and
``s_global`` is s plus ``batch["species_first"]`` for a shard of a population; with
``shared_synapses`` every species takes ``seed_r``. The meta-gradient is TensorFlow's
(autodiff through the step); everything compiles with ``tf.function(jit_compile=True)``.
"""

import tensorflow as tf

from blur_keras.core import network as chain_step
from blur_keras.core.feedback import pm1_targets
from blur_keras.core.layer_specs import synapse_shapes
from blur_keras.core.layout import pairs_in
from blur_keras.core.normalization import start_moments, track_moments
from blur_keras.core.synapses import flatten_pairs, pair_up

__all__ = ["chain_meta_loss", "population_loss", "member_seeds", "member_synapses",
           "member_batch"]


def member_seeds(seed, species, replicas, shared=False, species_first=0):
    """``[S · R, 2]`` synapse seeds of the members, species-major (module docstring)."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    fold = tf.random.experimental.stateless_fold_in
    per_replica = [seed[r] if seed.shape.rank == 2 else fold(seed, r) for r in range(replicas)]
    if seed.shape.rank == 2 and int(seed.shape[0]) != replicas:
        raise ValueError(f"meta_loss: {int(seed.shape[0])} seeds for {replicas} replicas.")
    first = tf.cast(species_first, tf.int32)
    return tf.stack([base if shared else fold(base, first + s)
                     for s in range(species) for base in per_replica])


def member_batch(batch, species, input_shape, dtype):
    """The batch per member: ``train_x [S·R, T, B, *input_shape]``, ``train_y [S·R, T, B]``,
    ``query_x [S·R, Bq, *input_shape]``, ``query_y [S·R, Bq]`` (a species axis of 1 is
    shared by all species)."""
    def members(t, lead, rest):
        t = tf.convert_to_tensor(t)
        shape = t.shape.as_list()
        t = tf.broadcast_to(t, shape[:lead] + [species] + shape[lead + 1:])
        order = [lead, lead + 1] + list(range(lead)) + list(range(lead + 2, t.shape.rank))
        t = tf.transpose(t, order)
        return tf.reshape(t, [-1] + t.shape.as_list()[2:-1 if rest else None] + list(rest))

    features = int(batch["train_x"].shape[-1])
    want = 1
    for s in input_shape:
        want *= int(s)
    if features != want:
        raise ValueError(f"meta_loss: the data have {features} features per example; the "
                         f"network's input shape {tuple(input_shape)} holds {want}.")
    return {"train_x": tf.cast(members(batch["train_x"], 1, input_shape), dtype),
            "train_y": tf.cast(members(batch["train_y"], 1, ()), tf.int32),
            "query_x": tf.cast(members(batch["query_x"], 0, input_shape), dtype),
            "query_y": tf.cast(members(batch["query_y"], 0, ()), tf.int32)}


def _accuracy(out, labels):
    hit = tf.equal(tf.argmax(out, axis=-1, output_type=tf.int32), labels)
    hit = tf.logical_and(hit, tf.reduce_all(tf.math.is_finite(out), axis=-1))
    return tf.reduce_mean(tf.cast(hit, tf.float32))


def _segment_fn(names, num_syn, network, config, per_layer, logit_scale, momentum, length):
    """``length`` inner steps of one member as a function of flat tensors: the genome entries
    (``names`` order), the ``num_syn`` synapses ``[W⁰, V⁰, W¹, …]`` (internal layout), the
    tracked statistics ``[m⁰, v⁰, …]`` (none when ``momentum`` is None), then the segment's
    batches ``xs``, ``ys`` and ``t0``, the steps before it. Returns the synapses, the
    statistics, ``[length]`` online losses and ``[length]`` inner accuracies."""
    stages = network.stages
    classes = int(stages[-1].upper[0])

    def run(*args):
        params = dict(zip(names, args[:len(names)]))
        synapses = pair_up(args[len(names):len(names) + num_syn])
        moments = list(pair_up(args[len(names) + num_syn:-3]))
        xs, ys, t0 = args[-3:]
        losses, accs = [], []
        for i in range(length):
            x, y = xs[i], ys[i]
            if momentum is not None:  # from the synapses the step starts from, as BlurModel
                moments = track_moments(moments, chain_step.forward_moments(
                    params, synapses, x, stages, config, per_layer), t0 + i, momentum)
            synapses, states = chain_step.step(params, synapses, x,
                                               pm1_targets(y, classes, x.dtype), stages, config,
                                               per_layer)
            guess = states[-1][0]
            losses.append(tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, logit_scale * guess)))
            accs.append(_accuracy(guess, y))
        return (*flatten_pairs(synapses), *flatten_pairs(moments), tf.stack(losses),
                tf.stack(accs))

    return run


def _inner_steps(params, synapses, xs, ys, network, config, per_layer, logit_scale, momentum,
                 recompute=0):
    """T inner steps of one member: ``(synapses, online loss (mean over steps), [T] inner
    accuracies, tracked statistics or None)``; internal layout. ``momentum``: of the tracked
    statistics (None: none tracked). ``recompute=c``: segments of c steps whose
    intermediates are recomputed for the gradient (``tf.recompute_grad``, which stays right
    inside the members' ``tf.map_fn`` in graph mode, where ``unroll``'s own custom gradient
    does not); 0: one step a segment, every intermediate kept."""
    steps = int(xs.shape[0])
    seg = min(int(recompute), steps) if recompute else 1
    names = sorted(params)
    p_list = [params[n] for n in names]
    flat = flatten_pairs(synapses)
    moments = [] if momentum is None else start_moments([w for w, _ in synapses])
    carry = flat + flatten_pairs(moments)

    def segment(length):
        fn = _segment_fn(names, len(flat), network, config, per_layer, logit_scale, momentum,
                         length)
        return tf.recompute_grad(fn) if recompute else fn

    whole, rest = divmod(steps, seg)
    fn = segment(seg)

    def body(i, carry, loss_sum, accs):
        idx = i * seg + tf.range(seg)
        out = fn(*p_list, *carry, tf.gather(xs, idx), tf.gather(ys, idx), i * seg)
        return i + 1, list(out[:-2]), loss_sum + tf.reduce_sum(out[-2]), accs.write(i, out[-1])

    accs = tf.TensorArray(tf.float32, size=whole, element_shape=[seg])
    _, carry, loss_sum, accs = tf.while_loop(
        lambda i, *_: i < whole, body, (tf.constant(0), carry, tf.zeros([], xs.dtype), accs),
        maximum_iterations=whole)
    accs = tf.reshape(accs.stack(), [whole * seg])
    if rest:
        out = segment(rest)(*p_list, *carry, xs[-rest:], ys[-rest:], whole * seg)
        carry, loss_sum = list(out[:-2]), loss_sum + tf.reduce_sum(out[-2])
        accs = tf.concat([accs, out[-1]], axis=0)
    tracked = None if momentum is None else list(pair_up(carry[len(flat):]))
    return pair_up(carry[:len(flat)]), loss_sum / steps, accs, tracked


def member_synapses(seeds, network, k, config=None, scale=1.0, dtype=tf.float32):
    """Fresh synapses of the members, one per seed (``[M, 2]``): ``((W, V), …)`` each
    ``[M, ...]``, public layout (``blur_keras.core.network.init_synapses``)."""
    shapes = [tf.TensorSpec(shape, dtype) for stage in network.stages
              for shape in synapse_shapes(stage, k)]

    def draw(seed):
        pairs = chain_step.init_synapses(seed, network.input_shape, network.specs, k, config,
                                         scale, dtype)
        return tuple(t for pair in pairs for t in pair)

    flat = tf.map_fn(draw, seeds, fn_output_signature=tuple(shapes))
    return pair_up(flat)


def _member(network, config, per_layer, logit_scale, loss, momentum, recompute):
    """The meta-loss of one member as a function of its genome, synapses and batch."""
    stages = network.stages
    classes = int(stages[-1].upper[0])

    def run(args):
        params, synapses, data = args
        synapses, online, accs, moments = _inner_steps(
            params, pairs_in(synapses), data["train_x"], data["train_y"], network, config,
            per_layer, logit_scale, momentum, recompute)
        states, _ = chain_step.forward_states(params, synapses, data["query_x"], stages,
                                              config, per_layer, moments=moments)
        out, labels = states[-1][0], data["query_y"]
        if loss == "xent":
            query = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, logit_scale * out))
        else:
            query = tf.reduce_mean(tf.square(out - pm1_targets(labels, classes, out.dtype)))
        finite = tf.reduce_all(tf.math.is_finite(out))
        return query, _accuracy(out, labels), online, accs, finite

    return run


def population_loss(params, synapses, data, config, network, *, loss="xent", per_layer=False,
                    logit_scale=1.0, trajectory_weight=0.0, inference_momentum=None,
                    recompute=0):
    """The meta-loss of a population from given synapses: ``params`` ``[S, ...]``;
    ``synapses`` and ``data`` per member (``member_synapses``, ``member_batch``: ``S · R``
    members, species-major); returns ``chain_meta_loss``'s ``(loss [S], aux)``.
    ``inference_momentum``: the query is normalised with statistics tracked at this momentum
    (None: over the query batch). ``recompute``: gradient-checkpoint segment length (0: off)."""
    dtype = params["nu"].dtype
    species = int(params["nu"].shape[0])
    replicas = int(data["train_x"].shape[0]) // species
    member_params = {n: tf.repeat(v, replicas, axis=0) for n, v in params.items()}
    steps = int(data["train_x"].shape[1])
    signature = (tf.TensorSpec([], dtype), tf.TensorSpec([], tf.float32),
                 tf.TensorSpec([], dtype), tf.TensorSpec([steps], tf.float32),
                 tf.TensorSpec([], tf.bool))
    query, acc, online, accs, finite = tf.map_fn(
        _member(network, config, per_layer, logit_scale, loss, inference_momentum,
                recompute),
        (member_params, synapses, data), fn_output_signature=signature)

    def per_species(t):
        return tf.reshape(t, [species, replicas] + t.shape.as_list()[1:])

    query, online = (tf.reduce_mean(per_species(t), axis=1) for t in (query, online))
    per_loss = query if not trajectory_weight else \
        (1.0 - trajectory_weight) * query + trajectory_weight * online
    finite = tf.logical_and(tf.reduce_all(per_species(finite), axis=1),
                            tf.math.is_finite(per_loss))
    return per_loss, {"accuracy": tf.reduce_mean(per_species(acc), axis=1),
                      "inner_accuracy": tf.transpose(tf.reduce_mean(per_species(accs), axis=1)),
                      "online_loss": online, "finite": finite}


def chain_meta_loss(params, seed, batch, config, network, *, loss="xent", per_layer=False,
                    init_scale=1.0, logit_scale=1.0, shared_synapses=False,
                    population_species=None, trajectory_weight=0.0, inference_momentum=None,
                    recompute=0):
    """``unroll.meta_loss`` through ``network`` (a ``chain.Chain``): ``(loss [S], aux)`` with
    ``aux`` holding ``accuracy [S]``, ``inner_accuracy [T, S]``, ``online_loss [S]`` and
    ``finite [S]``; means over replicas and examples. ``inference_momentum``: the query is
    normalised with statistics tracked over the T steps (None: over the query batch);
    ``recompute=c``: the T steps run in segments of c recomputed for the gradient."""
    dtype, k = params["nu"].dtype, int(params["nu"].shape[-1])
    species, replicas = int(params["nu"].shape[0]), int(batch["train_x"].shape[2])
    first = batch["species_first"] if population_species and \
        population_species != species else 0
    seeds = member_seeds(seed, species, replicas, shared_synapses, first)
    synapses = member_synapses(seeds, network, k, config, init_scale, dtype)
    data = member_batch(batch, species, network.input_shape, dtype)
    return population_loss(params, synapses, data, config, network, loss=loss,
                           per_layer=per_layer, logit_scale=logit_scale,
                           trajectory_weight=trajectory_weight,
                           inference_momentum=inference_momentum, recompute=recompute)
