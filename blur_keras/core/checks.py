"""Checks of what the pure API is given, and the pure test of a collapsed output.

The ``check_*`` functions run in Python while a function is traced (static shapes and dtypes
only), cost nothing in the compiled step, and turn what would be a raw einsum/Mul error deep
inside TensorFlow into one sentence naming the argument, the value received and what is
expected.  A dimension unknown at trace time is not checked.

``output_spread`` / ``is_constant`` / ``collapsed_output`` are in-graph tests (pure
TensorFlow, XLA-compatible) of a step that drove the network's output to a constant across
its batch (``BlurModel`` reports such a step like a non-finite one; docs/guide.md).
"""

import numpy as np
import tensorflow as tf

__all__ = ["check_k", "check_layer_sizes", "check_synapses", "check_inputs", "output_spread",
           "is_constant", "collapsed_output", "VARIED_SPREAD"]

# an output "varied" before a step when its relative spread over the batch was above this
VARIED_SPREAD = 1e-3
# an output is "constant" when its relative spread is at most this many float epsilons
CONSTANT_EPSILONS = 16


def check_layer_sizes(sizes, what="hidden_sizes"):
    """``sizes`` as a tuple of ints, each a whole number >= 1 (``ValueError`` naming ``what``
    otherwise: ``0``, ``-3``, ``16.5``, ``True`` or a string is not a layer width)."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise ValueError(f"{what} must be a tuple of layer widths (whole numbers >= 1); got "
                         f"{sizes!r}.")
    sizes = tuple(sizes)
    for size in sizes:
        is_int = isinstance(size, int) or (hasattr(size, "dtype") and
                                           getattr(size.dtype, "kind", "") in "iu")
        if isinstance(size, bool) or not is_int or int(size) < 1:
            raise ValueError(f"{what}={sizes!r}: every layer width must be a whole number >= 1; "
                             f"got {size!r}.")
    return tuple(int(size) for size in sizes)


def check_k(k, what="k"):
    """BLUR needs at least two states (prediction and teaching signal)."""
    if k is not None and int(k) < 2:
        raise ValueError(f"{what}: k={int(k)} states; BLUR needs k >= 2 (state 0 carries the "
                         "prediction, state 1 the teaching signal).")


def _dims(t):
    return tuple(tf.TensorShape(t.shape).as_list())


def check_synapses(synapses):
    """Each pair is ``W [*P, n_l + 1, n_{l+1}, k]``, ``V [*P, n_{l+1}, n_l, k]``, chained."""
    if not isinstance(synapses, (tuple, list)) or not synapses:
        raise TypeError(f"synapses must be a non-empty tuple of (W, V) pairs; got "
                        f"{type(synapses).__name__}.")
    k, outputs = None, None
    for l, pair in enumerate(synapses):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"synapses[{l}] must be a (W, V) pair; got {type(pair).__name__}.")
        w, v = (_dims(t) for t in pair)
        if len(w) < 3 or len(v) != len(w):
            raise ValueError(f"Layer pair {l}: W has shape {w} and V {v}; expected "
                             "[*P, n_in + 1, n_out, k] and [*P, n_out, n_in, k].")
        check_k(w[-1], f"layer pair {l}")
        k = k or w[-1]
        if None not in (w[-1], k) and w[-1] != k:
            raise ValueError(f"Layer pair {l} has k={w[-1]} states but layer pair 0 has k={k}.")
        if None not in (w[-3], w[-2], v[-3], v[-2]) and (v[-3], v[-2] + 1) != (w[-2], w[-3]):
            raise ValueError(f"Layer pair {l}: V has shape {v} but W {w} needs V of shape "
                             f"[*P, {w[-2]}, {w[-3] - 1}, k].")
        if None not in (outputs, w[-3]) and w[-3] - 1 != outputs:
            raise ValueError(f"Layer pair {l} has {w[-3] - 1} inputs (W has {w[-3]} rows: inputs "
                             f"+ bias) but layer pair {l - 1} has {outputs} outputs.")
        outputs = w[-2]
    return k


def check_inputs(params, synapses, x, targets=None):
    """Genome, synapses, ``x [*P', B, n_0]`` and ``targets [*P', B, n_L]`` fit together."""
    k = check_synapses(synapses)
    genome_k = _dims(params["nu"])[-1] if "nu" in params else None
    if None not in (genome_k, k) and genome_k != k:
        raise ValueError(f"The genome has k={genome_k} states but the synapses have k={k}.")
    dtype = synapses[0][0].dtype
    _check_tensor("x", x, _dims(synapses[0][0])[-3], dtype, "features; the first layer pair "
                  "expects", lambda n: n - 1)
    if targets is not None:
        _check_tensor("targets", targets, _dims(synapses[-1][0])[-2], None,
                      "columns; the last layer has", lambda n: n)
        xb, tb = _dims(x)[-2:-1], _dims(targets)[-2:-1]
        if xb and tb and None not in xb + tb and xb != tb:
            raise ValueError(f"x has batch {xb[0]} but targets have batch {tb[0]}.")


def _check_tensor(name, t, width, dtype, words, expected_width):
    dims = _dims(t)
    if len(dims) < 2:
        raise ValueError(f"{name} has shape {dims}; expected [..., batch, width].")
    want = expected_width(width) if width is not None else None
    if None not in (dims[-1], want) and dims[-1] != want:
        raise ValueError(f"{name} has {dims[-1]} {words} {want}.")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} has dtype {t.dtype.name} but the synapses are {dtype.name}; "
                         f"cast {name} to {dtype.name}.")


def output_spread(outputs):
    """Relative spread over the batch of ``outputs [..., B, C]``: the largest range over the
    examples (max − min) of any column, divided by the largest magnitude of the outputs; 0
    for an output that is all zero. ``[...]``."""
    outputs = tf.convert_to_tensor(outputs)
    ranges = tf.reduce_max(outputs, axis=-2) - tf.reduce_min(outputs, axis=-2)
    spread = tf.reduce_max(ranges, axis=-1)
    scale = tf.reduce_max(tf.abs(outputs), axis=[-2, -1])
    return tf.math.divide_no_nan(spread, scale)


def is_constant(outputs):
    """Whether every column of ``outputs [..., B, C]`` is the same for every example, to the
    rounding of its dtype (relative spread at most ``CONSTANT_EPSILONS`` epsilons). ``[...]``."""
    outputs = tf.convert_to_tensor(outputs)
    tolerance = CONSTANT_EPSILONS * float(np.finfo(outputs.dtype.as_numpy_dtype).eps)
    return output_spread(outputs) <= tolerance


def collapsed_output(before, after):
    """Whether a step drove the output to a constant: on the same batch ``[..., B, C]`` the
    output varied before the step (relative spread above ``VARIED_SPREAD``) and is constant
    after it (``is_constant``). A batch whose output was already (nearly) constant, e.g.
    identical examples or a saturated output, never counts. Non-finite outputs do not
    count either (the non-finite checks report those). ``[...]`` bool."""
    return (output_spread(before) > VARIED_SPREAD) & is_constant(after)
