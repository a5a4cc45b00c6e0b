"""Preprocessing (blur_keras.data.preprocess) against NumPy references: crop, resize, scale,
flatten, class subsets, ±1 targets.
"""

import numpy as np
import pytest
import tensorflow as tf

from blur_keras import data
from helpers import _no_tfds_download  # noqa: F401  (autouse: no test downloads)
from helpers import _prep_ref, fashion, needs_debian_fashion, tfds_empty  # noqa: F401 (fixtures)


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
