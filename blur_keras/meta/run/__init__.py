"""A meta-training run: experiment, stages, curriculum, checkpoints, logs, results, report."""
