import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # as the entry points do (train/, benchmarks/), before TensorFlow's first op

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# tests that take 20 s or more here (several meta-training runs, long unrolls, large compiles):
# `make test` runs them, `make test-fast` (-m "not slow and not process") does not
SLOW = (
    "tests/test_gradient.py::test_trainer_step_gradient_switch",
    "tests/test_gradient.py::test_inner_step_gradient_equals_autodiff_under_xla_float32",
    "tests/test_meta_stages.py::",
    "tests/test_meta.py::test_curriculum_run_changes_unroll_and_task",
    "tests/test_meta_gin.py::test_shipped_recipe_runs_a_few_meta_steps",
    "tests/test_meta_gin.py::test_cma_config_runs_small",
    "tests/test_meta_gin.py::test_tpu_config_without_tpu_says_so_and_runs",
    "tests/test_momentum.py::test_the_mix_flows_through_the_saved_model_and_meta_training",
    "tests/test_inference.py::test_outer_trainers_meta_train_in_the_moving_mode",
    "tests/test_pretrained.py::test_shipped_genome",
    "tests/test_conv_meta.py::",
    "tests/test_readme.py::",
)


def pytest_collection_modifyitems(items):
    """Mark the SLOW tests; then order the files: those starting processes first, then those
    with slow tests, then the rest (each file in one piece and in its own order), so that under
    ``-n 2 --dist loadfile`` the long files start early and the short ones fill in at the end."""
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
    rank = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        weight = 0 if item.get_closest_marker("process") else \
            1 if item.get_closest_marker("slow") else 2
        rank[path] = min(rank.get(path, 2), weight)
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank[item.nodeid.split("::")[0]], order[id(item)]))
