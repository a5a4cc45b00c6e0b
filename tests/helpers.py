"""Helpers shared by the test modules.

The math tests (test_activations, test_forward, test_feedback, test_backward, test_synapses,
test_normalization, test_inner, test_genome) check the TF math of blur_keras against the independent
float64 NumPy reference (tests/reference.py). Every option of docs/spec.md §2–3 is checked on small
tensors (k = 3, non-square layers) with a species axis (S = 2, genome entries differ per species) and a
replica axis (R = 3) present; the reference loops over species and replicas explicitly. Genome
transforms are random and asymmetric, so a transposed ν, μ, ν̃ or μ̃ cannot pass (see
``test_inner.test_tests_are_sensitive_to_index_order``).
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import BlurConfig, data

from blur_keras.core import layout
from blur_keras.data import images as images_mod
from blur_keras.rules.genome import align_to_population
from blur_keras.core.synapses import update_pair

try:  # pytest's default (prepend) import mode puts tests/ on sys.path
    import reference
except ImportError:  # pragma: no cover
    from tests import reference

ref = reference


def manual_fit(model, x, y, batch, params_at):
    """What ``model.fit(x, y, batch_size=batch, shuffle=False)`` must do, one pure
    ``inner_step`` per batch in order: ``params_at(t)`` gives the genome entries of step t.
    Returns the synapses after the last batch."""
    from blur_keras import inner_step
    synapses, (fwd, bwd) = model.synapses(), model.activations
    for t, i in enumerate(range(0, len(y), batch)):
        targets = 2.0 * tf.one_hot(y[i:i + batch], model.num_classes) - 1.0
        synapses, _ = inner_step(params_at(t), synapses, x[i:i + batch], targets, model.config,
                                 False, fwd, bwd)
    return synapses


def toy_data(seed=0, n=128, width=12, classes=3):
    """Gaussian inputs ``[n, width]`` and labels from the signs of the first two features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype("f4")
    y = ((x[:, 0] > 0).astype("i8") + (x[:, 1] > 0)) % classes
    return x, y


# ---------------------------------------------------------------------------
# the math tests
# ---------------------------------------------------------------------------

S, R, K, B = 2, 3, 3, 4          # species, replicas, states, batch
N_LO, N_UP = 5, 4                # a non-square layer pair
SIZES = (5, 4, 3, 2)             # 3 layer pairs, all non-square
RTOL = ATOL = 1e-5
TRANSFORMS = ("nu", "mu", "pre", "post")


def f32(x):
    """Round to float32 and return float64, so TF and the reference see identical inputs."""
    return np.asarray(x, np.float32).astype(np.float64)


def rand_genome(seed, lead=(S,), k=K, eta_syn_sign=-1.0, oja_signs=True):
    """A random genome with leading axes ``lead``; asymmetric transforms, values differ per species."""
    rng = np.random.default_rng(seed)

    def uni(lo, hi, shape=()):
        return f32(rng.uniform(lo, hi, lead + shape))

    g = {n: f32(rng.normal(0.0, 0.7, lead + (k, k))) for n in TRANSFORMS}
    for n in TRANSFORMS:  # asymmetric in every member
        m = g[n]
        assert np.min(np.abs(m - np.swapaxes(m, -1, -2)).reshape(-1, k * k).max(-1)) > 0.1
    oja = uni(0.5, 1.5)
    if oja_signs and lead:  # negative multipliers exercise |m_oja|
        oja = oja * np.where(np.arange(lead[0]) % 2 == 1, -1.0, 1.0).reshape((-1,) + (1,) * (len(lead) - 1))
    g.update(
        f=uni(0.5, 1.0), eta=uni(0.6, 1.4), f_syn=uni(0.85, 1.0),
        eta_syn=f32(eta_syn_sign * rng.uniform(0.02, 0.08, lead)),
        gamma=uni(0.5, 1.5, (k,)), beta=f32(rng.normal(0.0, 0.3, lead + (k,))),
        oja=f32(oja), alpha=uni(0.8, 2.0), syn_scale=uni(0.5, 2.0),
    )
    g["syn_mix"] = f32(0.9 * np.eye(k) + rng.normal(0.0, 0.1, lead + (k, k)))  # drawn last
    return g


def tf_params(g, num_pop=2):
    """Genome dict of float32 tensors, aligned to ``num_pop`` population axes (library helper)."""
    return align_to_population({n: tf.constant(v, tf.float32) for n, v in g.items()}, num_pop)


def member(g, *idx):
    return {n: v[idx] for n, v in g.items()}


def rand(seed, shape, lo=-1.0, hi=1.0):
    return f32(np.random.default_rng(seed).uniform(lo, hi, shape))


def rand_w(seed, n_src, n_dst, lead=(S, R), k=K, bias=True):
    """Random synapses (a non-zero bias row when ``bias``), entries O(1/sqrt(n_src))."""
    rows = n_src + 1 if bias else n_src
    return f32(np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(rows), lead + (rows, n_dst, k)))


def tfc(x):
    return tf.constant(x, tf.float32)


def tfi(x):
    """A public-layout array (states ``[.., B, n, k]``, synapses ``[.., n_src, n_dst, k]``) as a
    float32 tensor in the core's internal layout (``blur_keras.core.layout``)."""
    return layout.states_in(tfc(x))


def pub(t):
    """An internal-layout tensor as a public-layout NumPy array (the reference's layout)."""
    return layout.states_out(t).numpy()


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = actual.numpy() if hasattr(actual, "numpy") else np.asarray(actual)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def per_member(fn):
    """Stack ``fn(s, r)`` over the species and replica axes."""
    return np.stack([np.stack([fn(s, r) for r in range(R)]) for s in range(S)])


def random_synapses(seed, sizes=SIZES, lead=(S, R), cfg=None):
    syn = []
    for l, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rand_w(seed + 2 * l, n, m, lead)
        v = rand_w(seed + 2 * l + 1, m, n, lead, bias=False)
        if cfg is not None and (cfg.symmetric or cfg.single_state):
            flat_w = w.reshape((-1,) + w.shape[-3:])
            flat_v = v.reshape((-1,) + v.shape[-3:])
            pairs = [ref.sync(a, b, cfg.symmetric, cfg.single_state) for a, b in zip(flat_w, flat_v)]
            w = np.stack([p[0] for p in pairs]).reshape(w.shape)
            v = np.stack([p[1] for p in pairs]).reshape(v.shape)
        syn.append((w, v))
    return syn


def one_hot_pm(seed, lead, n_out):
    labels = np.random.default_rng(seed).integers(0, n_out, lead + (B,))
    return np.where(np.arange(n_out) == labels[..., None], 1.0, -1.0)


def check_update_pair(w, v, a_lo, a_up, g, cfg):
    """``update_pair`` on the whole [S, R] population vs the reference member by member
    (in the internal layout; returned, like the arguments, in the public one)."""
    w_new, v_new = (pub(t) for t in update_pair(tfi(w), tfi(v), tfi(a_lo), tfi(a_up),
                                                 tf_params(g), cfg))
    exp = [[ref.update_pair(w[s, r], v[s, r], a_lo[s, r], a_up[s, r], member(g, s), cfg)
            for r in range(R)] for s in range(S)]
    close(w_new, np.array([[e[0] for e in row] for row in exp]))
    close(v_new, np.array([[e[1] for e in row] for row in exp]))
    return w_new, v_new


INNER_CONFIGS = {
    "default": BlurConfig(),
    "mult_mean": BlurConfig(hidden_activation="tanh", last_activation="sigmoid",
                            backward_activation="tanh", backward_rule="multiplicative",
                            batch_reduction="mean"),
    "error_mult2": BlurConfig(hidden_activation="backprop_relu_tanh", last_activation="backprop_tanh",
                              backward_activation="linear", feedback="error",
                              backward_rule="multiplicative_second"),
    "stability": BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                            norm_epsilon=1e-2),
    "sym_oja_mean": BlurConfig(symmetric=True, oja=True, batch_reduction="mean",
                               backward_activation="tanh"),
    "single_sat": BlurConfig(single_state=True, saturation=True, hidden_activation="sigmoid"),
    "all": BlurConfig(activation_norm=True, synapse_norm=True, oja=True, saturation=True,
                      symmetric=True, single_state=True, feedback="error",
                      backward_rule="multiplicative_second", norm_epsilon=1e-2),
}


# ---------------------------------------------------------------------------
# the data tests (test_images, test_preprocess, test_tasks, test_stream)
# ---------------------------------------------------------------------------

DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
needs_debian_fashion = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DEBIAN_FASHION, "train-images-idx3-ubyte.gz")),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _no_tfds_download(monkeypatch):
    """No test may download; the one that exercises the download branch re-enables it explicitly."""
    monkeypatch.setenv(images_mod.ENV_NO_DOWNLOAD, "1")
    monkeypatch.delenv(images_mod.ENV_DATA_DIR, raising=False)


@pytest.fixture(scope="module")
def tfds_empty(tmp_path_factory):
    """A TFDS data_dir with nothing prepared in it."""
    return str(tmp_path_factory.mktemp("tfds_empty"))


@pytest.fixture(scope="module")
def fashion(tfds_empty):
    x, y = data.load_images("fashion_mnist", "train", data_dir=tfds_empty)
    xt, yt = data.load_images("fashion_mnist", "test", data_dir=tfds_empty)
    return x, y, xt, yt


def _resize_ref(img, size):
    """Bilinear resize with half-pixel centres, no antialiasing (what tf.image.resize computes)."""
    h, w = img.shape[-2:]

    def axis(n_in, n_out):
        pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        lo = np.floor(pos)
        frac = pos - lo
        return np.clip(lo, 0, n_in - 1).astype(int), np.clip(lo + 1, 0, n_in - 1).astype(int), frac

    r0, r1, fr = axis(h, size)
    c0, c1, fc = axis(w, size)
    img = img.astype(np.float64)
    top = img[..., r0, :] * (1 - fr)[:, None] + img[..., r1, :] * fr[:, None]
    return top[..., c0] * (1 - fc) + top[..., c1] * fc


def _prep_ref(images, crop, size):
    x = images.astype(np.float64) / 255.0
    if crop:
        o = (28 - crop) // 2
        x = x[..., o:o + crop, o:o + crop]
    if x.shape[-1] != size:
        x = _resize_ref(x, size)
    return x.reshape(len(x), -1)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra):
    """The environment of a child Python process that imports this checkout's blur_keras."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def meta_parts(**settings):
    """``meta_train``'s parts (``{"objective": Objective(...), ...}``) from their fields by name
    (``trainer``: ``Outer.trainer``); the parts named by no setting are left to gin."""
    import dataclasses

    from blur_keras.meta.run.experiment import PARTS

    grouped = {}
    for key, value in settings.items():
        owners = [name for name, cls in PARTS.items()
                  if key in {f.name for f in dataclasses.fields(cls)}]
        if not owners:
            raise TypeError(f"No part of meta_train has a field {key!r}.")
        grouped.setdefault(owners[0], {})[key] = value
    return {name: PARTS[name](**fields) for name, fields in grouped.items()}


# -- tiny meta-training runs (the 'and' task through one hidden layer of 4; no XLA, report or plots)
META_SCRIPT = os.path.join(REPO, "train", "meta.py")

TINY_GIN_HEAD = """
import blur_keras.data
import blur_keras.meta.run.experiment

Objective.task = @preset_task()
preset_task.name = 'and'
Objective.hidden_sizes = (4,)
Objective.species = 2
Schedule.jit_compile = False
Report.final_eval = False
Report.export = False
Report.plots = False
"""

TINY_RUN = dict(hidden_sizes=(4,), species=2, replicas=1, batch_size=8, num_steps=2,
                checkpoint_every=1, eval_every=10, log_every=10, jit_compile=False,
                final_eval=False, export=False, plots=False)


def tiny_gin(bindings):
    """A gin file's text for a tiny ``train/meta.py`` run: ``TINY_GIN_HEAD`` then
    ``bindings`` (gin lines: the run's own steps, seed, periods, ...)."""
    return TINY_GIN_HEAD + bindings


def tiny_run(model_dir, **overrides):
    """``meta_train`` in this process: ``TINY_RUN`` on the 'and' task, fields overridden by
    ``overrides`` (any part's field, ``helpers.meta_parts``)."""
    from blur_keras.data import preset_task
    from blur_keras.meta import meta_train

    settings = {"task": preset_task("and"), **TINY_RUN, **overrides}
    return meta_train(str(model_dir), **meta_parts(**settings))


def meta_cli():
    """``train/meta.py`` as a module, loaded once per process (it defines absl flags)."""
    import importlib.util
    import sys

    if "meta_cli" not in sys.modules:
        spec = importlib.util.spec_from_file_location("meta_cli", META_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["meta_cli"] = module
        spec.loader.exec_module(module)
    return sys.modules["meta_cli"]


def run_meta_cli(*args):
    """``train/meta.py <args>`` in this process: the message of the ``SystemExit`` it ends with
    (``None`` if it returns). Flags and gin bindings are reset afterwards."""
    import gin

    cli = meta_cli()
    flags = cli.FLAGS
    flags.unparse_flags()
    try:
        argv = flags([META_SCRIPT, "--strategy=default", *args])
        cli.main(argv)
    except SystemExit as stop:
        return str(stop.code)
    finally:
        flags.unparse_flags()
        gin.clear_config()
    return None


def cli_one_line(message, expected):
    """An entry point's ``SystemExit`` message (``run_meta_cli``): one line naming
    ``expected``, with the entry points' prefix and the hint to the traceback."""
    assert message is not None and "\n" not in message and expected in message, message
    assert message.startswith(("Error: ", "Bad gin configuration: ")), message
    assert message.endswith("(run with --verbosity=1 for the traceback)"), message
    return message
