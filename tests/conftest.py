import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `make test` runs two worker processes on two cores: one compute thread each (and in the
# processes they start, which inherit it): two pools of two threads would contend for the cores.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from blur_keras.meta.run.runtime import pool_cpu_memory  # noqa: E402

pool_cpu_memory()  # as the entry points do (train/, benchmarks/), before TensorFlow's first op

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# tests that take 4 s or more, with their module fixtures (meta-training runs, long unrolls,
# large compiles, exports, learning checks): `make test` runs them, `make test-fast`
# (-m "not slow and not process") does not. A prefix marks every test it starts (a file, a
# function and its parameters).
SLOW = (
    "tests/test_backprop.py::test_blur_model_train_on_batch_and_fit_are_sgd",
    "tests/test_conv_inference.py::test_fit_then_predict_does_not_depend_on_the_batch",
    "tests/test_conv_meta.py::",
    "tests/test_conv_model.py::test_keras_round_trip",
    "tests/test_evaluation.py::test_backprop_genome_and_keras_sgd_give_the_same_curve",
    "tests/test_evaluation.py::test_suite_writes_every_file_with_sane_values",
    "tests/test_evaluation.py::test_best_learning_rate_is_chosen_on_validation",
    "tests/test_evaluation.py::test_suite_reports_steps_to_reach_the_rule",
    "tests/test_export.py::",
    "tests/test_fuzz.py::test_saved_model_rejects_malformed_input",
    "tests/test_gradient.py::test_trainer_step_gradient_switch",
    "tests/test_gradient.py::test_inner_step_gradient_equals_autodiff_under_xla_float32",
    "tests/test_inference.py::test_outer_trainers_meta_train_in_the_moving_mode",
    "tests/test_inference.py::test_the_suite_judges_the_rule_as_blur_model_predicts",
    "tests/test_meta.py::test_curriculum_run_changes_unroll_and_task",
    "tests/test_meta.py::test_meta_training_lowers_meta_loss_for_every_species",
    "tests/test_meta_bad_input.py::test_resume_with_other_settings_names_every_difference",
    "tests/test_meta_gin.py::test_shipped_recipe_runs_a_few_meta_steps",
    "tests/test_meta_gin.py::test_cma_config_runs_small",
    "tests/test_meta_gin.py::test_tpu_config_without_tpu_says_so_and_runs",
    "tests/test_meta_gin.py::test_toy2d_runs_small",
    "tests/test_meta_stages.py::",
    "tests/test_model.py::test_jit_compiled_fit_matches_eager_graph",
    "tests/test_momentum.py::test_the_mix_flows_through_the_saved_model_and_meta_training",
    "tests/test_momentum.py::test_blur_model_with_the_momentum_genome_is_keras_momentum",
    "tests/test_newcomer.py::test_the_suite_logs_each_method_it_runs",
    "tests/test_plots.py::test_a_run_draws_its_pictures",
    "tests/test_pretrained.py::test_shipped_genome",
    "tests/test_pretrained.py::test_the_learning_check_itself",
    "tests/test_pretrained.py::test_the_learning_check_fails_a_rule_worse_than_its_learning_start",
    "tests/test_readme.py::",
    "tests/test_real_data.py::test_backprop_genome_matches_keras_sgd_on_fashion_mnist",
    "tests/test_real_data.py::test_random_genome_runs_100_steps_on_fashion_mnist",
    "tests/test_run_safety.py::test_resume_falls_back_to_the_newest_readable_checkpoint",
    "tests/test_run_safety.py::test_resume_refuses_clearly_when_no_checkpoint_is_readable",
    "tests/test_run_safety.py::test_checkpoint_candidates_newest_first",
    "tests/test_run_safety.py::test_an_unreadable_results_file_is_written_again",
    "tests/test_run_safety.py::test_result_files_are_written_through_write_atomic",
    "tests/test_run_safety.py::test_a_stale_lock_of_a_dead_process_is_taken_over",
    "tests/test_schedule.py::test_evaluation_runs_the_schedule",
    "tests/test_schedule.py::test_fit_steps_by_the_schedule_and_counts_its_steps",
    "tests/test_stability.py::test_baselines_run_the_same_check_and_report_the_best_learning_rate",
    "tests/test_stability.py::test_validation_batch_size_is_used_for_every_validation",
    "tests/test_trajectory.py::test_trajectory_gradient_matches_finite_differences_and_recomputation",
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
