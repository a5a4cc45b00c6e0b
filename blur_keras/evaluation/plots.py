"""Pictures a person would rather look at than read: learning curves and genomes.

Every function writes a PNG (matplotlib's Agg backend, no display needed) and
returns its path.
"""

import io
import json
import os

import numpy as np

from blur_keras.files import write_atomic

__all__ = ["plot_curves", "plot_meta_history", "plot_genome", "plot_comparison", "read_jsonl",
           "plot_run", "meta_history_figure", "comparison_figure"]


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

    A metric whose value is a list (one number per species) is drawn as one line per species;
    a metric no record holds gets no panel.
    """
    fig = meta_history_figure(records, x_key, keys)
    return _save_and_close(fig, path)


def meta_history_figure(records, x_key="step", keys=None):
    """The ``plot_meta_history`` figure (a matplotlib ``Figure``)."""
    records = list(records)
    if not records:
        raise ValueError("plot_meta_history needs at least one record.")
    keys = keys or [k for k in records[0] if k != x_key and _numeric(records[0][k])]
    series = {}
    for key in keys:
        rows = [(r[x_key], r[key]) for r in records
                if x_key in r and key in r and _numeric(r[key])]
        if rows:
            series[key] = rows
    if not series:
        raise ValueError(f"No record holds any of {list(keys)} with {x_key!r}.")
    plt = _pyplot()
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.4 * len(series)), dpi=110,
                             squeeze=False)
    for ax, (key, rows) in zip(axes[:, 0], series.items()):
        _history_panel(ax, key, rows)
    axes[-1, 0].set_xlabel(x_key)
    fig.tight_layout()
    return fig


def _history_panel(ax, key, rows):
    xs = np.array([x for x, _ in rows], float)
    ys = np.array([np.ravel(y) for _, y in rows], float)
    marker = "o" if len(xs) <= 50 else None
    if ys.shape[1] > 8:  # a population: its mean and range
        ax.fill_between(xs, np.nanmin(ys, 1), np.nanmax(ys, 1), alpha=0.25,
                        label=f"range of {ys.shape[1]}")
        ax.plot(xs, np.nanmean(ys, 1), lw=1, marker=marker, ms=3, label="mean")
    else:
        for s in range(ys.shape[1]):
            ax.plot(xs, ys[:, s], lw=1, marker=marker, ms=3,
                    label=f"species {s}" if ys.shape[1] > 1 else None)
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if ys.shape[1] > 1:
        ax.legend(fontsize=6, ncol=4)


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
    """Bars: the rule, its start and the tuned baselines the suite ran (SGD, SGD+momentum,
    Adam); beside them the test-accuracy curves over inner steps (``comparison["curves"]``)
    or an SGD learning-rate sweep (``"sgd_sweep"``), when recorded.

    ``comparison``: the ``results.json["comparison"]`` dict of a meta-training run.
    """
    return _save_and_close(comparison_figure(comparison), path)


_BASELINE_BARS = (("sgd", "SGD"), ("momentum", "SGD+momentum"), ("adam", "Adam"))
_BAR_COLORS = {"rule": "tab:green", "start": "tab:gray", "sgd": "tab:blue",
               "momentum": "tab:purple", "adam": "tab:orange"}


def comparison_figure(comparison):
    """The ``plot_comparison`` figure (a matplotlib ``Figure``)."""
    plt = _pyplot()
    side = comparison.get("curves") or comparison.get("sgd_sweep")
    fig, axes = plt.subplots(1, 2 if side else 1, figsize=(11 if side else 6, 4), dpi=110,
                             squeeze=False)
    _comparison_bars(axes[0, 0], comparison)
    if comparison.get("curves"):
        _comparison_curves(axes[0, 1], comparison)
    elif side:
        _sgd_sweep(axes[0, 1], comparison)
    fig.tight_layout()
    return fig


def _comparison_bars(ax, comparison):
    import textwrap

    bars = [("rule", comparison.get("rule", "learned genome"), comparison["learned"]),
            ("start", comparison.get("start_name", "start"), comparison["start"])]
    for method, label in _BASELINE_BARS:
        if f"{method}_best" in comparison:
            lr = comparison.get(f"{method}_best_learning_rate")
            bars.append((method, label + ("" if lr is None else f" (lr={lr:g})"),
                         comparison[f"{method}_best"]))
    positions = np.arange(len(bars))
    values = [v for _, _, v in bars]
    ax.bar(positions, values, color=[_BAR_COLORS[m] for m, _, _ in bars])
    ax.set_xticks(positions)
    ax.set_xticklabels([textwrap.fill(name, 13) for _, name, _ in bars], fontsize=8)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(f"test accuracy after T={comparison['unroll']} steps")
    ax.set_ylim(0, 1.05)


def _comparison_curves(ax, comparison):
    curves = comparison["curves"]
    x = np.asarray(curves["steps"], float) + 1
    names = {"blur": comparison.get("rule", "learned genome"), **dict(_BASELINE_BARS)}
    colors = {"blur": _BAR_COLORS["rule"], **_BAR_COLORS}
    for method, values in curves.items():
        if method != "steps":
            ax.plot(x, values, color=colors.get(method), label=names.get(method, method))
    ax.axvline(comparison["unroll"] + 1, color="k", ls=":", lw=1, label="T")
    ax.set_xscale("log")
    ax.set_xlabel("inner steps + 1 (log)")
    ax.set_ylabel("test accuracy")
    ax.set_title("baselines at the learning rate chosen on validation", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _sgd_sweep(ax, comparison):
    lrs = sorted((float(k), v) for k, v in comparison["sgd_sweep"].items())
    ax.semilogx([l for l, _ in lrs], [v for _, v in lrs], "o-", label="SGD")
    ax.axhline(comparison["learned"], color="tab:green", ls="--", label="learned genome")
    ax.set_xlabel("SGD learning rate")
    ax.set_ylabel("test accuracy")
    ax.legend()
    ax.grid(alpha=0.3)


def plot_run(model_dir):
    """All pictures of a finished meta-training run, written next to its logs.

    Returns the list of PNG paths (``meta_history.png``, ``validation.png``,
    ``genome.png``, ``comparison.png``, whichever inputs exist).
    """
    from blur_keras.rules.genome import Genome

    out = []
    for log_name, png, keys in (("metrics.jsonl", "meta_history.png", _HISTORY_KEYS),
                                ("eval.jsonl", "validation.png", ["val_accuracy"])):
        records = _records(os.path.join(model_dir, log_name), keys)
        if records:
            out.append(plot_meta_history(records, os.path.join(model_dir, png), keys=keys))
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


# what a run's meta-steps log: the gradient trainers' loss, CMA-ES's fitness (lower is better)
_HISTORY_KEYS = ["loss", "mean_fitness", "accuracy", "sigma", "unroll"]


def _records(path, keys):
    """The records of the log at ``path`` when any holds one of ``keys`` (else [])."""
    if not os.path.exists(path):
        return []
    records = read_jsonl(path)
    wanted = [k for k in keys if any(k in r and _numeric(r[k]) for r in records)]
    return records if wanted else []


def _numeric(value):
    try:
        np.asarray(value, float)
        return True
    except (TypeError, ValueError):
        return False


def _save(fig, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    image = io.BytesIO()
    fig.savefig(image, format=os.path.splitext(path)[1][1:] or "png")
    write_atomic(path, image.getvalue())


def _save_and_close(fig, path):
    _save(fig, path)
    _pyplot().close(fig)
    return path
