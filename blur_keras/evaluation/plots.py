"""Pictures a person would rather look at than read: learning curves and genomes.

Every function writes a PNG (matplotlib's Agg backend, no display needed) and
returns its path.
"""

import json
import os

import numpy as np

__all__ = ["plot_curves", "plot_meta_history", "plot_genome", "plot_comparison", "read_jsonl",
           "plot_run"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_jsonl(path):
    """Records of a ``metrics.jsonl`` file (one JSON object a line)."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_curves(curves, path, title="", xlabel="inner step", ylabel="accuracy"):
    """Several named curves on one axis.

    ``curves``: dict name -> sequence of y values (x = 1, 2, …) or of ``(x, y)`` pairs.
    """
    if not curves:
        raise ValueError("plot_curves needs at least one curve.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, values in curves.items():
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 1:
            ax.plot(np.arange(1, len(arr) + 1), arr, label=name)
        elif arr.ndim == 2 and arr.shape[1] == 2:
            ax.plot(arr[:, 0], arr[:, 1], label=name)
        else:
            raise ValueError(f"Curve {name!r} must be a sequence of values or of (x, y) pairs; "
                             f"got shape {arr.shape}.")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_meta_history(records, path, x_key="step", keys=None):
    """One panel per metric of a meta-training log (records from ``read_jsonl``).

    A metric whose value is a list (one number per species) is drawn as one line per species.
    """
    records = list(records)
    if not records:
        raise ValueError("plot_meta_history needs at least one record.")
    keys = keys or [k for k in records[0] if k != x_key and _numeric(records[0][k])]
    plt = _pyplot()
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.4 * len(keys)), dpi=110, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        rows = [(r[x_key], r[key]) for r in records if key in r and x_key in r]
        if not rows:
            continue
        xs = np.array([x for x, _ in rows], float)
        ys = np.array([np.ravel(y) for _, y in rows], float)
        for s in range(ys.shape[1]):
            ax.plot(xs, ys[:, s], lw=1, label=f"species {s}" if ys.shape[1] > 1 else None)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ys.shape[1] > 1 and ys.shape[1] <= 8:
            ax.legend(fontsize=6, ncol=4)
    axes[-1, 0].set_xlabel(x_key)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_genome(genome, path, title=None):
    """Heat maps of the four k×k transforms and a bar chart of the scalars."""
    values = genome.numpy() if hasattr(genome, "numpy") else dict(genome)
    matrices = ["nu", "mu", "pre", "post"]
    if np.ndim(values["nu"]) != 2:
        raise ValueError("plot_genome draws one shared genome: pick a species/layer first "
                         f"(nu has shape {np.shape(values['nu'])}).")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(15, 3), dpi=110)
    for ax, name in zip(axes, matrices):
        m = np.asarray(values[name])
        lim = max(float(np.abs(m).max()), 1e-6)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(name)
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_xlabel("c (output)" if name != "post" else "d (post state)")
        ax.set_ylabel("d (input)" if name != "post" else "c (channel)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    scalars = ["f", "eta", "f_syn", "eta_syn", "oja", "alpha", "syn_scale"]
    axes[4].bar(scalars, [float(values[s]) for s in scalars])
    axes[4].tick_params(axis="x", rotation=60)
    axes[4].set_title("scalars")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_comparison(comparison, path):
    """Bars: the rule, its start, best SGD and Adam (those the suite ran); and the SGD
    learning-rate sweep (when recorded).

    ``comparison``: the ``results.json["comparison"]`` dict of a meta-training run.
    """
    plt = _pyplot()
    fig, (bars, sweep) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    names = [comparison.get("rule", "learned genome"), comparison.get("start_name", "start")]
    values = [comparison["learned"], comparison["start"]]
    for method, label in (("sgd", "SGD"), ("adam", "Adam")):
        if f"{method}_best" in comparison:
            names.append(f"{label} (lr={comparison[f'{method}_best_learning_rate']:g})")
            values.append(comparison[f"{method}_best"])
    colors = ["tab:green", "tab:gray", "tab:blue", "tab:orange"]
    bars.bar(names, values, color=colors[:len(values)])
    for i, v in enumerate(values):
        bars.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    bars.set_ylabel(f"test accuracy after T={comparison['unroll']} steps")
    bars.set_ylim(0, 1)
    lrs = sorted((float(k), v) for k, v in comparison.get("sgd_sweep", {}).items())
    if lrs:
        sweep.semilogx([l for l, _ in lrs], [v for _, v in lrs], "o-", label="SGD")
        sweep.axhline(comparison["learned"], color="tab:green", ls="--", label="learned genome")
        sweep.set_xlabel("SGD learning rate")
        sweep.set_ylabel("test accuracy")
        sweep.legend()
        sweep.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_run(model_dir):
    """All pictures of a finished meta-training run, written next to its logs.

    Returns the list of PNG paths (``meta_history.png``, ``validation.png``,
    ``genome.png``, ``comparison.png``, whichever inputs exist).
    """
    from blur_keras.rules.genome import Genome

    out = []
    metrics = os.path.join(model_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        out.append(plot_meta_history(read_jsonl(metrics), os.path.join(model_dir, "meta_history.png"),
                                     keys=["loss", "accuracy", "unroll"]))
    evals = os.path.join(model_dir, "eval.jsonl")
    if os.path.exists(evals):
        out.append(plot_meta_history(read_jsonl(evals), os.path.join(model_dir, "validation.png"),
                                     keys=["val_accuracy"]))
    genome = os.path.join(model_dir, "genome.json")
    if os.path.exists(genome):
        g = Genome.load_json(genome)
        if not g.per_layer:
            out.append(plot_genome(g, os.path.join(model_dir, "genome.png"), title="learned genome"))
    results = os.path.join(model_dir, "results.json")
    if os.path.exists(results):
        with open(results) as fh:
            comparison = json.load(fh).get("comparison")
        if comparison:
            out.append(plot_comparison(comparison, os.path.join(model_dir, "comparison.png")))
    return out


def _numeric(value):
    try:
        np.asarray(value, float)
        return True
    except (TypeError, ValueError):
        return False


def _save(fig, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path)
