"""The meta-step loop of a run: curriculum position, stream, trainer step, log, validation,
non-finite checks and checkpoints, from a start step to an end step."""

import numpy as np
from absl import logging

from blur_keras.meta.run.validation import best_species, inner_curve

__all__ = ["MetaTrainingDiverged", "train"]


class MetaTrainingDiverged(RuntimeError):
    """Several meta-steps in a row had non-finite meta-gradients."""


def _check_nonfinite(trainer, applied, streak, step, max_in_a_row, ckpt):
    """Warn about skipped species; stop when one was skipped ``max_in_a_row`` times in a row."""
    if not applied.all():
        logging.warning("Meta-step %d: non-finite %s for species %s; step skipped for them.",
                        step, trainer.nonfinite, np.flatnonzero(~applied).tolist())
    if trainer.stops_on_nonfinite and streak.max() >= max_in_a_row:
        bad = np.flatnonzero(streak >= max_in_a_row).tolist()
        raise MetaTrainingDiverged(
            f"Species {bad} had non-finite meta-gradients for {max_in_a_row} meta-steps in a row "
            f"(up to meta-step {step}); stopping. The last good checkpoint is {ckpt.latest}. Try "
            f"a smaller learning rate, clip_norm, or the oja / synapse_norm / activation_norm options.")


def _validate(trainer, validation, step, unroll, run_state, log):
    acc, inner = validation(trainer, step)
    best = best_species(acc)
    run_state["best_species"].assign(best)
    log.validation(step, unroll, acc, best, inner_curve(inner, best))
    return acc


def train(trainer, curriculum, train_stream, validation, run_state, ckpt, log, *, start, end,
           num_steps, every, max_nonfinite):
    """Meta-steps ``start … end-1``; returns the last validation accuracies (or None).

    ``train_stream(T, phase, step)`` is ``(iterator, step_fn)`` of the training stream from
    ``step`` on; ``every``: ``{"log", "eval", "checkpoint"}`` periods in meta-steps.
    """
    key, last_val = None, None
    streak = run_state["nonfinite_streak"].numpy()
    for step in range(start, end):
        t, phase = curriculum.unroll_at(step), curriculum.phase_at(step)
        if (t, phase) != key:
            if key is not None:
                logging.info("Curriculum: meta-step %d, T=%d, task phase %d.", step, t, phase)
            key = (t, phase)
            it, step_fn = train_stream(t, phase, step)
        run_state["unroll"].assign(t)
        run_state["phase"].assign(phase)
        m = step_fn(next(it))
        applied = np.asarray(m["applied"], bool)
        streak = np.where(applied, 0, streak + 1)
        run_state["nonfinite_streak"].assign(streak)
        log.meta_step(step, t, phase, m, trainer.scalars(m))
        _check_nonfinite(trainer, applied, streak, step, max_nonfinite, ckpt)
        last = step == num_steps - 1
        if (step + 1) % every["log"] == 0 or last or step == start:
            log.progress_line(step, t, trainer.summary(m), trainer.log_scalars())
        if (step + 1) % every["eval"] == 0 or last:
            last_val = _validate(trainer, validation, step, t, run_state, log)
        if (step + 1) % every["checkpoint"] == 0 or last or step + 1 == end:
            trainer.before_save()
            ckpt.save(step + 1)
    return last_val
