"""Per-species Adam with per-species gradient clipping, as pure functions.

Every tensor carries a leading species axis ``S``.  Species are independent
runs: Adam is elementwise, so one Adam over ``[S, ...]`` tensors is one Adam
per species, except for global-norm clipping, which here uses each species'
own norm.  A species whose gradient is not finite is skipped: its parameters,
moments and step count stay as they were.
"""

import tensorflow as tf

__all__ = ["species_norm", "adam_update"]


def _expand(v, like):
    """``[S]`` -> ``[S, 1, …]`` broadcasting against ``like``."""
    return tf.reshape(v, [-1] + [1] * (len(like.shape) - 1))


def species_norm(tensors):
    """Global L2 norm per species of a dict of ``[S, ...]`` tensors -> ``[S]``."""
    total = None
    for t in tensors.values():
        sq = tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), axis=1)
        total = sq if total is None else total + sq
    return tf.sqrt(total)


def adam_update(params, grads, m, v, count, *, learning_rate, clip_norm=None, beta1=0.9,
                beta2=0.999, epsilon=1e-8, finite=None, trainable=None):
    """One Adam step per species.

    Args:
      params, grads, m, v: dicts name -> ``[S, ...]``.
      count: ``[S]`` float, Adam steps taken so far by each species.
      clip_norm: clip each species' gradient to this global norm (None: off).
      finite: optional ``[S]`` bool; False forces a skip (e.g. a non-finite loss).
      trainable: names to update (default all).
    Returns:
      ``(params, m, v, count, norms, applied)``: ``norms`` ``[S]`` is the
      gradient norm before clipping, ``applied`` ``[S]`` bool.
    """
    names = [n for n in params if trainable is None or n in trainable]
    norms = species_norm({n: grads[n] for n in names})
    ok = tf.math.is_finite(norms)
    if finite is not None:
        ok = tf.logical_and(ok, finite)
    scale = tf.ones_like(norms)
    if clip_norm is not None and clip_norm > 0:
        scale = tf.minimum(1.0, clip_norm / tf.maximum(norms, 1e-12))
    new_count = count + tf.cast(ok, count.dtype)
    safe_count = tf.maximum(new_count, 1.0)
    corr1 = 1.0 - tf.pow(beta1, safe_count)
    corr2 = 1.0 - tf.pow(beta2, safe_count)
    out_p, out_m, out_v = dict(params), dict(m), dict(v)
    for n in names:
        p, g = params[n], grads[n]
        keep = _expand(ok, p)
        g = tf.where(keep, g * _expand(scale, g), tf.zeros_like(g))
        m_new = beta1 * m[n] + (1.0 - beta1) * g
        v_new = beta2 * v[n] + (1.0 - beta2) * tf.square(g)
        step = learning_rate * (m_new / _expand(corr1, p)) / (
            tf.sqrt(v_new / _expand(corr2, p)) + epsilon)
        out_p[n] = tf.where(keep, p - step, p)
        out_m[n] = tf.where(keep, m_new, m[n])
        out_v[n] = tf.where(keep, v_new, v[n])
    return out_p, out_m, out_v, new_count, norms, ok
