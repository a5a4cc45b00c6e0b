"""The core's internal layout, and the conversions at its edges (docs/benchmarks.md).

Files, Keras layers and the public functions (``inner_step``, ``forward_pass``,
``predict``, ``init_synapses``) use the *public* layout, the state axis last:

* neuron states ``[*P, B, n, k]``;
* synapses ``[*P, n_src, n_dst, k]`` (a forward ``W`` with its bias row last).

Inside, the core carries the state axis *leading* (after the population axes
``P``): states ``[*P, k, B, n]``, synapses ``[*P, k, n_src, n_dst]``.  Per-state
contractions are then plain batched matmuls with no transposes, and XLA:CPU's
elementwise and reduction loops run along the neurons rather than along k ≤ 8
states (``benchmarks/state_layout.py``).  A meta-training unroll converts its
synapses once at each end (``meta.unroll``); ``inner_step`` converts at every call.
"""

import tensorflow as tf

__all__ = ["synapses_in", "synapses_out", "pairs_in", "pairs_out", "states_in", "states_out",
           "reshape_axes", "unit_axes"]


def _move(t, source, dest):
    """Move axis ``source`` of the last three to position ``dest`` among them."""
    lead = len(t.shape) - 3
    order = [0, 1, 2]
    order.insert(dest, order.pop(source))
    return tf.transpose(t, list(range(lead)) + [lead + o for o in order])


def synapses_in(t):
    """Public ``[*P, n_src, n_dst, k]`` -> internal ``[*P, k, n_src, n_dst]``."""
    return _move(t, 2, 0)


def synapses_out(t):
    """Internal ``[*P, k, n_src, n_dst]`` -> public ``[*P, n_src, n_dst, k]``."""
    return _move(t, 0, 2)


states_in = synapses_in    # [*P, B, n, k] -> [*P, k, B, n]
states_out = synapses_out  # [*P, k, B, n] -> [*P, B, n, k]


def pairs_in(synapses):
    """``((W⁰, V⁰), …)`` in the public layout -> the internal one."""
    return tuple((synapses_in(w), synapses_in(v)) for w, v in synapses)


def pairs_out(synapses):
    """``((W⁰, V⁰), …)`` in the internal layout -> the public one."""
    return tuple((synapses_out(w), synapses_out(v)) for w, v in synapses)


def reshape_axes(t, start, stop, sizes):
    """``t`` with its axes ``start:stop`` (non-negative) reshaped to ``sizes`` (ints, one -1
    allowed).

    One ``Reshape`` to a static shape when ``t``'s shape is static: shape arithmetic (or a
    slice with new axes, a ``StridedSlice`` and three constants) costs traced graph, and the
    core makes hundreds of these per traced meta-step (docs/benchmarks.md, "A smaller traced
    graph"). With unknown sizes the shape is computed in the graph.
    """
    if t.shape.is_fully_defined():
        shape = t.shape.as_list()
        return tf.reshape(t, shape[:start] + list(sizes) + shape[stop:])
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([shape[:start], tf.constant(sizes, tf.int32, [len(sizes)]),
                                    shape[stop:]], axis=0))


def unit_axes(v, n):
    """``v`` with ``n`` trailing axes of size 1 (``v[..., None, …, None]``)."""
    return reshape_axes(v, v.shape.rank, v.shape.rank, [1] * n)
