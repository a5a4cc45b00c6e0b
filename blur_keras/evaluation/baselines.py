"""The gradient baselines a rule is judged against: an MLP trained by SGD, SGD with momentum
or Adam, in pure TensorFlow (no Keras).

The network is ``sizes[0]-…-sizes[-1]`` with weights ``[..., n+1, m]`` (the last row the
bias), a hidden σ and a last σ (``baseline_activations``: the rule's own, linear logits under
cross-entropy). ``forward``, ``total_loss`` and ``update`` are the math; ``train_step`` is one
gradient step of a whole learning-rate sweep (the rates a leading axis of the weights);
``run_loop`` runs a step once per batch and records accuracy at chosen steps (the loop of the
evaluation suite, for the rule too); ``baseline_curves`` runs a sweep in one compiled call and
``select`` picks its rate on validation. ``sgd_accuracy`` is plain SGD from fresh weights
(``init_weights``), one rate at a time: meta-training's reference.

With ``specs`` (a chain of ``blur_keras.core.layer_specs`` on flat inputs, e.g. ``Reshape``,
``Conv2D``, ``Pool2D``, ``Flatten``, ``Dense``) the network is that CNN instead: a
convolution's weights ``[..., kh·kw·c_in + 1, c_out]`` are a Keras kernel ``[kh, kw, c_in,
c_out]`` reshaped with the bias row below (the BLUR layout, docs/conv.md); it runs as one
matmul over the window's taps, so every learning rate and seed keeps its own kernel.
"""

import numpy as np
import tensorflow as tf

from blur_keras.core import activations
from blur_keras.core.feedback import pm1_targets
from blur_keras.core.layer_specs import (Conv2D, Dense, Pool2D, conv_output_size, output_shape,
                                         same_padding)

__all__ = ["BASELINES", "DEFAULT_LEARNING_RATES", "DEFAULT_SGD_LEARNING_RATES", "MOMENTUM",
           "ADAM_BETA_1", "ADAM_BETA_2", "ADAM_EPSILON", "check_baseline",
           "baseline_activations", "baseline_weights", "init_weights", "forward", "chain_forward",
           "total_loss",
           "optimizer_slots", "update", "train_step", "accuracy", "record_slots", "run_loop",
           "eval_both", "task_tensors", "baseline_curves", "select", "sgd_accuracy"]

BASELINES = ("sgd", "momentum", "adam")
# ≥ 4 decades each, half-decade spacing
DEFAULT_LEARNING_RATES = {
    "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0),
    "momentum": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
    "adam": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
}
# the sweep of ``sgd_accuracy``
DEFAULT_SGD_LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# Keras's SGD(momentum=0.9) and Adam's defaults (the fit check builds those optimizers with them)
MOMENTUM = 0.9
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


# ---------------------------------------------------------------------------------- the network

def check_baseline(method):
    """A ``ValueError`` unless ``method`` names a baseline (``BASELINES``)."""
    if method not in BASELINES:
        raise ValueError(f"Unknown baseline {method!r}; expected one of {BASELINES}.")


def baseline_activations(config, loss):
    """The baseline network's hidden and last σ: the rule's (backprop variants stripped);
    linear logits under cross-entropy."""
    hidden = activations.strip_backprop(config.hidden_activation)
    last = "linear" if loss == "xent" else activations.strip_backprop(config.last_activation)
    return hidden, last


def baseline_weights(synapses):
    """Baseline initial weights: channel 0 of the rule's forward synapses ``[R, n+1, m]``
    (``N(0, scale²/n)``, bias 0: the same distribution, and the same draw)."""
    return [w[..., 0] for w, _ in synapses]


def init_weights(seed, sizes, replicas, scale):
    """Fresh weights ``[replicas, n+1, m]`` per layer: ``N(0, scale²/n)``, bias 0."""
    weights = []
    seeds = tf.random.experimental.stateless_split(tf.constant([int(seed), 17], tf.int64),
                                                   len(sizes) - 1)
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = tf.random.stateless_normal([replicas, n, m], seeds[l]) * (scale / n ** 0.5)
        weights.append(tf.concat([w, tf.zeros([replicas, 1, m])], axis=1))
    return weights


def forward(weights, x, hidden, last, specs=None):
    """The MLP's output: ``hidden``/``last`` are σ functions; weights ``[..., n+1, m]``.
    With ``specs``: the output of that chain (``chain_forward``)."""
    if specs is not None:
        return chain_forward(weights, x, specs, hidden, last)
    h = x
    for l, w in enumerate(weights):
        h = tf.matmul(tf.concat([h, tf.ones_like(h[..., :1])], -1), w)
        h = hidden(h) if l < len(weights) - 1 else last(h)
    return h


def _with_bias(h, w):
    """``[h, 1] @ w`` over the last axis of ``h``, leading axes broadcast as matmul does."""
    return tf.matmul(tf.concat([h, tf.ones_like(h[..., :1])], -1), w)


def _taps(h, conv):
    """``[..., H, W, C]`` -> ``[..., H', W', kh·kw·C]``: each output position's window, taps
    ``(dy, dx)`` row-major then channels, zero-padded as TensorFlow pads."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.strides
    size_h, size_w = h.shape[-3], h.shape[-2]
    pad_h, pad_w = (same_padding(n, k, s, conv.padding)
                    for n, k, s in ((size_h, kh, sh), (size_w, kw, sw)))
    h = tf.pad(h, [[0, 0]] * (h.shape.rank - 3) + [list(pad_h), list(pad_w), [0, 0]])
    out_h = conv_output_size(size_h, kh, sh, conv.padding)
    out_w = conv_output_size(size_w, kw, sw, conv.padding)
    return tf.concat([h[..., dy:dy + (out_h - 1) * sh + 1:sh, dx:dx + (out_w - 1) * sw + 1:sw, :]
                      for dy in range(kh) for dx in range(kw)], -1)


def _conv(h, w, conv):
    """A convolution with weights ``[..., kh·kw·c_in + 1, c_out]`` on ``[..., B, H, W, c_in]``."""
    taps = _taps(h, conv)
    flat = tf.reshape(taps, tf.concat([tf.shape(taps)[:-4], [-1, taps.shape[-1]]], 0))
    z = _with_bias(flat, w)
    return tf.reshape(z, tf.concat([tf.shape(z)[:-2], tf.shape(taps)[-4:-1], [w.shape[-1]]], 0))


def _pool(h, pool):
    """Max or average pooling (padding not counted) of ``[..., H, W, C]``."""
    fn = tf.nn.max_pool2d if pool.kind == "max" else tf.nn.avg_pool2d
    maps = fn(tf.reshape(h, tf.concat([[-1], tf.shape(h)[-3:]], 0)), pool.pool_size,
              pool.strides, pool.padding.upper())
    return tf.reshape(maps, tf.concat([tf.shape(h)[:-3], tf.shape(maps)[1:]], 0))


def chain_forward(weights, x, specs, hidden, last):
    """The output of the chain ``specs`` on ``x`` ``[..., B, F]`` (flat examples): one weight
    tensor per Dense/Conv2D spec (leading axes broadcast against ``x``'s); σ ``hidden`` after
    every such layer but the last, ``last`` after it (a spec's own activation overrides)."""
    h = tf.convert_to_tensor(x, tf.float32)
    shape, pair = (int(h.shape[-1]),), 0
    for spec in specs:
        out = output_shape(spec, shape)
        if isinstance(spec, (Dense, Conv2D)):
            w = weights[pair]
            h = _with_bias(h, w) if isinstance(spec, Dense) else _conv(h, w, spec)
            pair += 1
            fn = hidden if pair < len(weights) else last
            if spec.activation is not None:
                fn = activations.get(activations.strip_backprop(spec.activation))
            h = fn(h)
        elif isinstance(spec, Pool2D):
            h = _pool(h, spec)
        else:  # Flatten, Reshape
            h = tf.reshape(h, tf.concat([tf.shape(h)[:h.shape.rank - len(shape)], out], 0))
        shape = out
    return h


def total_loss(out, y, loss, reduction):
    """The summed loss of independent problems (every rate and seed): ``"xent"``, softmax
    cross-entropy, or ``"mse"``, ½ Σ (ŷ − t)² with t the ±1 one-hot targets BLUR uses (the
    backprop genome's loss), each reduced over its batch by ``reduction`` (mean or sum)."""
    if loss == "xent":
        per = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.broadcast_to(y, tf.shape(out)[:-1]), logits=out)
    else:
        per = 0.5 * tf.reduce_sum(tf.square(out - pm1_targets(y, out.shape[-1])), -1)
    per = tf.reduce_sum(per, -1) if reduction == "sum" else tf.reduce_mean(per, -1)
    return tf.reduce_sum(per)


# ---------------------------------------------------------------------------------- the updates

def optimizer_slots(method, weights):
    """The optimizer's state at step 0: none (SGD), velocities (momentum), Adam's two moments."""
    zeros = [tf.zeros_like(w) for w in weights]
    return () if method == "sgd" else ((zeros,) if method == "momentum" else (zeros, zeros))


def update(method, weights, slots, grads, lrs, t):
    """One optimizer step ``t`` (1-based), every learning rate at once (``lrs``: ``[L]``, the
    leading axis of the weights; or a scalar)."""
    lr = lambda w: tf.reshape(lrs, [-1] + [1] * (len(w.shape) - 1))  # noqa: E731
    if method == "sgd":
        return [w - lr(w) * g for w, g in zip(weights, grads)], slots
    if method == "momentum":
        vel = [MOMENTUM * v - lr(w) * g for w, v, g in zip(weights, slots[0], grads)]
        return [w + v for w, v in zip(weights, vel)], (vel,)
    m = [ADAM_BETA_1 * m_ + (1 - ADAM_BETA_1) * g for m_, g in zip(slots[0], grads)]
    v = [ADAM_BETA_2 * v_ + (1 - ADAM_BETA_2) * tf.square(g) for v_, g in zip(slots[1], grads)]
    step = tf.cast(t, tf.float32)
    corr = tf.sqrt(1 - ADAM_BETA_2 ** step) / (1 - ADAM_BETA_1 ** step)
    return ([w - lr(w) * corr * m_ / (tf.sqrt(v_) + ADAM_EPSILON)
             for w, m_, v_ in zip(weights, m, v)], (m, v))


def train_step(method, weights, slots, x, y, lrs, t, hidden, last, loss, reduction,
               specs=None):
    """``(weights, slots)`` after gradient step ``t`` (1-based) on the batch ``x``, ``y``
    (the MLP, or the chain ``specs``)."""
    with tf.GradientTape() as tape:
        tape.watch(weights)
        total = total_loss(forward(weights, x, hidden, last, specs), y, loss, reduction)
    return update(method, weights, slots, tape.gradient(total, weights), lrs, t)


# ---------------------------------------------------------------------------------- curves

def accuracy(logits, labels):
    """``[..., N, C]`` and ``[N]`` -> ``[...]``; rows with non-finite logits count as wrong."""
    hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
    hit = tf.logical_and(hit, tf.reduce_all(tf.math.is_finite(logits), axis=-1))
    return tf.reduce_mean(tf.cast(hit, tf.float32), axis=-1)


def record_slots(steps_to_record, num_steps):
    """``[num_steps + 1]``: the record index of each step, -1 where none is recorded."""
    slot = np.full(num_steps + 1, -1, np.int32)
    for i, s in enumerate(steps_to_record):
        slot[s] = i
    return tf.constant(slot)


def run_loop(step_fn, eval_fn, state, pool_x, pool_y, idx, slots, num_records):
    """Run ``step_fn(state, x, y)`` once per row of ``idx`` (indices into the pool);
    ``eval_fn(state)`` into ``out[slot]`` at the steps ``slots`` records (``record_slots``),
    and only there: a step that records nothing evaluates nothing."""
    first = eval_fn(state)
    out = tf.zeros([num_records] + first.shape.as_list(), first.dtype)

    def write(out, s, value_fn):
        return tf.cond(s >= 0, lambda: tf.tensor_scatter_nd_update(out, [[s]], value_fn()[None]),
                       lambda: out)

    out = write(out, slots[0], lambda: first)

    def body(t, state, out):
        x, y = tf.gather(pool_x, idx[t]), tf.gather(pool_y, idx[t])
        state = step_fn(state, x, y)
        return t + 1, state, write(out, slots[t + 1], lambda: eval_fn(state))

    _, _, out = tf.while_loop(lambda t, *_: t < tf.shape(idx)[0], body,
                              (tf.constant(0), state, out))
    return out


def eval_both(forward_fn, val_x, val_y, test_x, test_y):
    """``state -> [2, ...]``: accuracy of ``forward_fn(state, x)`` on validation and test."""
    return lambda state: tf.stack([accuracy(forward_fn(state, val_x), val_y),
                                   accuracy(forward_fn(state, test_x), test_y)])


def task_tensors(data):
    """The pool, validation and test arrays of a ``TaskData`` as six tensors."""
    return tuple(tf.constant(a) for a in (data.pool_x, data.pool_y, data.val_x, data.val_y,
                                          data.test_x, data.test_y))


@tf.function(jit_compile=True, autograph=False)
def _baseline_run(weights, lrs, pool_x, pool_y, val_x, val_y, test_x, test_y, idx, slots,
                  method, hidden, last, loss, reduction, num_records, specs=None):
    hidden_fn, last_fn = activations.get(hidden), activations.get(last)
    weights = [tf.broadcast_to(w, [lrs.shape[0]] + w.shape.as_list()) for w in weights]

    def step(state, x, y):
        t, ws, sl = state
        ws, sl = train_step(method, ws, sl, x, y, lrs, t + 1, hidden_fn, last_fn, loss,
                            reduction, specs)
        return t + 1, ws, sl

    forward_fn = lambda state, x: forward(state[1], x, hidden_fn, last_fn, specs)  # noqa: E731
    return run_loop(step, eval_both(forward_fn, val_x, val_y, test_x, test_y),
                    (tf.constant(0), weights, optimizer_slots(method, weights)), pool_x, pool_y,
                    idx, slots, num_records)


def baseline_curves(method, learning_rates, weights, data, idx, steps_to_record, hidden, last,
                    loss="xent", reduction="mean", specs=None):
    """Accuracy ``[2 (val, test), records, learning rates, seeds]`` of ``method`` trained from
    ``weights`` (``[seeds, n+1, m]`` per layer) on the batches ``idx`` (``[steps, seeds,
    batch]`` into ``data``'s pool), the whole sweep in one compiled call; ``specs``: the
    network is that chain (its weights ``[seeds, rows, m]`` per Dense/Conv2D spec)."""
    check_baseline(method)
    pool_x, pool_y, *held_out = task_tensors(data)
    out = _baseline_run([tf.convert_to_tensor(w) for w in weights],
                        tf.constant(learning_rates, tf.float32), pool_x, pool_y, *held_out,
                        tf.constant(idx), record_slots(steps_to_record, idx.shape[0]), method,
                        hidden, last, loss, reduction, len(steps_to_record),
                        None if specs is None else tuple(specs))
    return np.transpose(out.numpy(), (1, 0, 2, 3))


def select(curves):
    """Per recorded step, the learning rate with the best mean validation accuracy.

    ``curves``: ``[2, records, L, seeds]``. Returns ``best [records]`` (index into the
    sweep; ties go to the first) and ``test [records, seeds]`` of that choice.
    """
    val_mean = curves[0].mean(axis=-1)
    best = np.argmax(val_mean, axis=-1)
    test = curves[1][np.arange(curves.shape[1]), best]
    return best, test


# ---------------------------------------------------------------------------------- SGD alone

def sgd_accuracy(sizes, train_x, train_y, test_x, test_y, learning_rates=DEFAULT_SGD_LEARNING_RATES,
                 hidden_activation="relu_tanh", seed=0, init_scale=1.0):
    """Test accuracy after ``T`` SGD steps (batch-mean softmax cross-entropy, linear logits)
    from ``init_weights``, per learning rate.

    ``train_x``: ``[T, R, B, F]``; ``train_y``: ``[T, R, B]``; ``test_x``: ``[N, F]``;
    ``test_y``: ``[N]``. Returns a dict ``learning_rate -> accuracy`` (over all replicas and
    examples; 0 for a rate under which any logit went non-finite).
    """
    hidden, last = activations.get(hidden_activation), activations.get("linear")
    train_x = tf.convert_to_tensor(train_x, tf.float32)
    train_y = tf.convert_to_tensor(train_y, tf.int32)
    test_x = tf.convert_to_tensor(test_x, tf.float32)
    test_y = tf.convert_to_tensor(test_y, tf.int32)

    @tf.function(autograph=False)
    def run(lr):
        weights = init_weights(seed, sizes, int(train_x.shape[1]), init_scale)
        for t in range(int(train_x.shape[0])):
            weights, _ = train_step("sgd", weights, (), train_x[t], train_y[t], lr, t + 1,
                                    hidden, last, "xent", "mean")
        logits = forward(weights, test_x[None], hidden, last)
        hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), test_y[None])
        acc = tf.reduce_mean(tf.cast(hit, tf.float32))
        return tf.where(tf.math.is_finite(tf.reduce_sum(logits)), acc, 0.0)

    return {float(lr): float(run(tf.constant(lr, tf.float32))) for lr in learning_rates}
