"""Pooling, flattening and reshaping between BLUR layers (docs/conv.md): parameter-free linear
maps of all k states, chosen by the forward pass and applied transposed in the backward pass.

States ``[k, B, H, W, C]`` (the internal layout, no population axes).  A pooling window
``T`` (taps ``t = (dy, dx)``, row-major) of output position ``p`` covers lower positions
``p·s + t`` of the map zero-padded as TensorFlow pads it.  A pool is given by weights
``r[t, b, p, i]``: ``pooled[c, b, p, i] = Σ_t r[t, b, p, i] a[c, b, p·s + t, i]``, and the
backward drive goes down as ``g_lower[c, b, q, i] = Σ_{p, t: p·s + t = q} r[t, b, p, i]
g[c, b, p, i]``.

* max: ``r`` is one at the first tap where state 0 is largest (its arg-max; padding never
  wins), so every state is read at, and every backward state routed to, that position, as
  backprop routes the gradient of a max;
* average: ``r = 1 / (number of taps inside the map)`` at the taps inside (Keras's average
  pooling counts no padding).
"""

import numpy as np
import tensorflow as tf

from blur_keras.core.layer_specs import Flatten, Reshape, conv_output_size, same_padding

__all__ = ["pool_routes", "pool_forward", "pool_transpose", "transform_forward",
           "transform_transpose"]


def _axis_geometry(spec, size, axis):
    """``(out, before, after)`` of one spatial axis."""
    kernel, stride = spec.pool_size[axis], spec.strides[axis]
    before, after = same_padding(size, kernel, stride, spec.padding)
    return conv_output_size(size, kernel, stride, spec.padding), before, after


def _geometry(spec, in_shape):
    return [_axis_geometry(spec, in_shape[axis], axis) for axis in (0, 1)]


def _taps(a, spec, geometry):
    """The zero-padded map's windows: a list over taps of ``[k, B, H', W', C]``, entry
    ``[c, b, p, i] = a[c, b, p·s + t, i]``."""
    (oh, bh, ah), (ow, bw, aw) = geometry
    sh, sw = spec.strides
    padded = tf.pad(a, [[0, 0], [0, 0], [bh, ah], [bw, aw], [0, 0]])
    return [padded[:, :, dy:dy + (oh - 1) * sh + 1:sh, dx:dx + (ow - 1) * sw + 1:sw, :]
            for dy in range(spec.pool_size[0]) for dx in range(spec.pool_size[1])]


def _inside(spec, in_shape, geometry):
    """``[T, H', W']`` booleans: tap t of output position p lies inside the (unpadded) map."""
    masks = []
    for axis, (out, before, _) in enumerate(geometry):
        taps = np.arange(spec.pool_size[axis])[:, None]
        pos = np.arange(out)[None, :] * spec.strides[axis] + taps - before
        masks.append((pos >= 0) & (pos < in_shape[axis]))  # [kernel, out]
    inside = masks[0][:, None, :, None] & masks[1][None, :, None, :]  # [kh, kw, H', W']
    return inside.reshape(-1, geometry[0][0], geometry[1][0])


def _tiled(spec, in_shape):
    """Whether the windows tile the map without overlap or padding (strides = pool size, no
    padding rows): then windows are a reshape (``_windows``), not strided slices."""
    return spec.strides == spec.pool_size and all(
        same_padding(in_shape[i], spec.pool_size[i], spec.strides[i], spec.padding) == (0, 0)
        for i in (0, 1))


def _windows(a, spec, in_shape):
    """Tiled windows ``[k, B, H', ph, W', pw, C]`` of ``a`` (the remainder rows dropped)."""
    (ph, pw), (oh, ow) = spec.pool_size, (in_shape[0] // spec.pool_size[0],
                                           in_shape[1] // spec.pool_size[1])
    a = a[:, :, :oh * ph, :ow * pw, :]
    return tf.reshape(a, [a.shape[0], -1, oh, ph, ow, pw, a.shape[-1]])


def _tiled_routes(a, spec, in_shape):
    """``r`` of a tiled pool laid out as the (cropped) map, ``[1, B or 1, H'·ph, W'·pw, C or 1]``:
    per window, one at the first tap (row-major) where state 0 equals the window's maximum
    (max), or ``1 / (ph·pw)`` (avg)."""
    ph, pw = spec.pool_size
    if spec.kind == "avg":
        return tf.constant(1.0 / (ph * pw), a.dtype, [1, 1, 1, 1, 1])
    windows = _windows(a[:1], spec, in_shape)[0]  # [B, H', ph, W', pw, C]
    top = tf.reduce_max(windows, axis=[2, 4])
    taken, rows = None, []
    for dy in range(ph):
        row = []
        for dx in range(pw):
            hit = tf.equal(windows[:, :, dy, :, dx, :], top)
            row.append(hit if taken is None else hit & ~taken)
            taken = hit if taken is None else taken | hit
        rows.append(tf.stack(row, axis=3))
    first = tf.cast(tf.stack(rows, axis=2), a.dtype)  # [B, H', ph, W', pw, C]
    shape = first.shape
    return tf.reshape(first, [1, -1, shape[1] * ph, shape[3] * pw, shape[-1]])


def pool_routes(a, spec, in_shape):
    """The weights ``r [T, B or 1, H', W', C or 1]`` of pool ``spec`` on states ``a``
    ``[k, B, H, W, C]`` (``in_shape = (H, W, C)``): one-hot arg-max of state 0 (max) or the
    inverse count of inside taps (avg)."""
    if _tiled(spec, in_shape):
        return _tiled_routes(a, spec, in_shape)
    geometry = _geometry(spec, in_shape)
    inside = _inside(spec, in_shape, geometry)
    if spec.kind == "avg":
        weights = inside / inside.sum(axis=0, keepdims=True)
        return tf.constant(weights[:, None, :, :, None], a.dtype)
    scores = tf.stack(_taps(a[:1], spec, geometry))[:, 0]  # [T, B, H', W', C]
    scores = tf.where(tf.constant(inside[:, None, :, :, None]), scores,
                      tf.constant(-np.inf, a.dtype))
    return tf.one_hot(tf.argmax(scores, axis=0), len(inside), axis=0, dtype=a.dtype)


def pool_forward(a, routes, spec, in_shape):
    """``pooled[c, b, p, i] = Σ_t r[t, b, p, i] a[c, b, p·s + t, i]``."""
    if _tiled(spec, in_shape):
        ph, pw = spec.pool_size
        rows, cols = in_shape[0] // ph * ph, in_shape[1] // pw * pw
        return tf.reduce_sum(_windows(routes * a[:, :, :rows, :cols, :], spec, in_shape),
                             axis=[3, 5])
    taps = _taps(a, spec, _geometry(spec, in_shape))
    return tf.add_n([routes[t][None] * tap for t, tap in enumerate(taps)])


def _place(x, axis, offset, stride, length):
    """Entries ``x[…, p, …]`` (along ``axis``) at positions ``offset + p·stride`` of a zero
    axis of ``length``: the transpose of the strided slice in ``_taps``."""
    out = x.shape[axis]
    if stride > 1:
        x = tf.stack([x] + [tf.zeros_like(x)] * (stride - 1), axis=axis + 1)
        shape = tf.concat([tf.shape(x)[:axis], [out * stride], tf.shape(x)[axis + 2:]], 0)
        x = tf.gather(tf.reshape(x, shape), tf.range((out - 1) * stride + 1), axis=axis)
    span = (out - 1) * stride + 1
    pads = [[0, 0]] * x.shape.rank
    pads[axis] = [offset, length - offset - span]
    return tf.pad(x, pads)


def pool_transpose(g, routes, spec, in_shape):
    """``g_lower[c, b, q, i] = Σ_{p, t: p·s + t = q} r[t, b, p, i] g[c, b, p, i]`` ``[k, B, H, W,
    C]`` (the padding's share dropped)."""
    if _tiled(spec, in_shape):
        return _tiled_transpose(g, routes, spec, in_shape)
    (_, bh, ah), (_, bw, aw) = _geometry(spec, in_shape)
    height, width = in_shape[0] + bh + ah, in_shape[1] + bw + aw
    parts = []
    for t in range(routes.shape[0]):
        dy, dx = divmod(t, spec.pool_size[1])
        part = _place(routes[t][None] * g, 2, dy, spec.strides[0], height)
        parts.append(_place(part, 3, dx, spec.strides[1], width))
    return tf.add_n(parts)[:, :, bh:bh + in_shape[0], bw:bw + in_shape[1], :]


def _tiled_transpose(g, routes, spec, in_shape):
    """``pool_transpose`` of a tiled pool: ``r · g`` spread over each window, the remainder
    rows 0."""
    ph, pw = spec.pool_size
    spread = routes * _repeat(_repeat(g, ph, 2), pw, 3)
    rest_h, rest_w = in_shape[0] - spread.shape[2], in_shape[1] - spread.shape[3]
    return tf.pad(spread, [[0, 0], [0, 0], [0, rest_h], [0, rest_w], [0, 0]])


def _repeat(x, times, axis):
    """``tf.repeat(x, times, axis)`` through a tile and a reshape of static shapes where ``x``'s
    are known (XLA then compiles its gradient inside loops)."""
    shape = x.shape.as_list()
    if sum(d is None for d in shape) > 1:
        return tf.repeat(x, times, axis=axis)
    tiled = tf.tile(x[(slice(None),) * (axis + 1) + (None,)],
                    [1] * (axis + 1) + [times] + [1] * (len(shape) - axis - 1))
    return tf.reshape(tiled, [-1 if d is None else d for d in shape[:axis]] + [
        shape[axis] * times] + [-1 if d is None else d for d in shape[axis + 1:]])


def transform_forward(a, spec, in_shape, routes=None):
    """States through one parameter-free layer: ``(out, routes)``; pass the forward pass's
    ``routes`` to apply the same pool to other states of the same layer."""
    if isinstance(spec, Flatten):
        return tf.reshape(a, [a.shape[0], -1, int(np.prod(in_shape))]), None
    if isinstance(spec, Reshape):
        return tf.reshape(a, [a.shape[0], -1, *spec.target_shape]), None
    if routes is None:
        routes = pool_routes(a, spec, in_shape)
    return pool_forward(a, routes, spec, in_shape), routes


def transform_transpose(g, spec, in_shape, routes):
    """A backward drive through one parameter-free layer, down to its input's shape."""
    if isinstance(spec, (Flatten, Reshape)):
        return tf.reshape(g, tf.concat([tf.shape(g)[:2], list(in_shape)], 0))
    return pool_transpose(g, routes, spec, in_shape)
