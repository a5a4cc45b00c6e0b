"""Is a learned rule a gradient? (the paper's §3.5 analysis)

One inner step maps the synapses θ to θ + Δ(θ) for a fixed batch. If the
update is a gradient step, ``Δ = −η ∇L(θ)``, its Jacobian ``J = ∂Δ/∂θ =
−η ∇²L`` is symmetric. ``relative_asymmetry(J) = ‖J − Jᵀ‖_F / ‖J‖_F`` is 0
up to round-off for the backprop genome and clearly positive for rules that
follow no loss.

θ is the rule's *free* synapse coordinates: the ties of the config are
respected (single-state: channel 0 only; symmetric: ``V`` is ``W``'s
transpose, so only ``W`` is free).
"""

import numpy as np
import tensorflow as tf

from blur_keras.core.feedback import pm1_targets
from blur_keras.core.step import inner_step
from blur_keras.core.synapses import init_synapses

__all__ = ["free_coordinates", "from_free", "update_jacobian", "relative_asymmetry",
           "plot_jacobian"]


def _free_parts(w, v, config):
    parts = [w[..., :1] if config.single_state else w]
    if not config.symmetric:
        parts.append(v[..., :1] if config.single_state else v)
    return parts


def free_coordinates(synapses, config):
    """The free synapse numbers as one vector ``[P]``."""
    return tf.concat([tf.reshape(t, [-1]) for w, v in synapses
                      for t in _free_parts(w, v, config)], axis=0)


def from_free(theta, template, config):
    """Synapses shaped like ``template`` from the free vector (ties re-applied)."""
    out, i = [], 0
    for w, v in template:
        k = w.shape[-1]

        def take(t):
            nonlocal i
            shape = t.shape[:-1] + [1 if config.single_state else k]
            size = int(np.prod(shape))
            part = tf.reshape(theta[i:i + size], shape)
            i += size
            return tf.broadcast_to(part, t.shape) if config.single_state else part

        w_new = take(w)
        if config.symmetric:
            v_new = tf.transpose(w_new[:-1], [1, 0, 2])
        else:
            v_new = take(v)
        out.append((w_new, v_new))
    return tuple(out)


def update_jacobian(params, config, sizes, x, y, seed=0, init_scale=1.0, per_layer=False):
    """``J = ∂Δθ/∂θ`` ``[P, P]`` of one inner step on the batch ``(x [B, n_0], y [B])`` at
    fresh synapses (``seed``), over the free coordinates."""
    k = int(np.shape(params["nu"])[-1])
    params = {n: tf.constant(v, tf.float32) for n, v in params.items()}
    synapses = init_synapses(tf.constant([int(seed), 31], tf.int64), tuple(sizes), k, (),
                             config, init_scale)
    theta = free_coordinates(synapses, config)
    targets = pm1_targets(tf.constant(y), sizes[-1])
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        new, _ = inner_step(params, from_free(theta, synapses, config), x, targets, config,
                            per_layer)
        delta = free_coordinates(new, config) - theta
    return tape.jacobian(delta, theta).numpy()


def relative_asymmetry(jacobian):
    """``‖J − Jᵀ‖_F / ‖J‖_F`` (0 for a gradient field's Jacobian)."""
    j = np.asarray(jacobian, np.float64)
    norm = np.linalg.norm(j)
    return float(np.linalg.norm(j - j.T) / norm) if norm > 0 else 0.0


def plot_jacobian(jacobian, path, title=""):
    """Heat maps of ``J`` and ``J − Jᵀ`` (same colour scale, clipped at the 99th percentile
    of the non-zero ``|J|``)."""
    from blur_keras.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    j = np.asarray(jacobian)
    nonzero = np.abs(j[j != 0])
    # colour scale: the 99th percentile of |J| (a few large entries would hide the rest)
    scale = float(np.percentile(nonzero, 99)) if nonzero.size else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=110)
    for ax, mat, name in ((axes[0], j, "J = ∂Δθ/∂θ"), (axes[1], j - j.T, "J − Jᵀ")):
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_title(name)
        ax.set_xlabel("θ index")
        ax.set_ylabel("Δθ index")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(f"{title}  relative asymmetry {relative_asymmetry(j):.3g}", fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return path
