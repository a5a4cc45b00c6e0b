"""The curriculum of a run: the unroll count T and the task as functions of the meta-step."""

import dataclasses
from typing import Any, Optional, Sequence

import gin

__all__ = ["Curriculum"]

GIN_MODULE = "blur_keras.meta"


@gin.configurable(module=GIN_MODULE)
@dataclasses.dataclass(frozen=True)
class Curriculum:
    """Unroll count and task schedule as functions of the meta-step.

    ``T(step) = min(unroll_start + unroll_delta · (step // unroll_every), unroll_max)``;
    ``task_phases``: ``((first_step, task_or_mixture), …)`` replacing the run's
    task from ``first_step`` on (phase 0 is the run's own task).
    """

    unroll_start: int = 10
    unroll_delta: int = 0
    unroll_every: int = 10000
    unroll_max: Optional[int] = None
    task_phases: Sequence[Any] = ()

    def __post_init__(self):
        if self.unroll_start < 1 or self.unroll_delta < 0 or self.unroll_every < 1:
            raise ValueError(f"Curriculum: need unroll_start >= 1, unroll_delta >= 0, "
                             f"unroll_every >= 1; got {self}.")
        starts = [int(s) for s, _ in self.task_phases]
        if starts != sorted(starts) or any(s < 1 for s in starts):
            raise ValueError(f"Curriculum.task_phases must start at increasing steps >= 1; got {starts}.")

    def unroll_at(self, step):
        t = self.unroll_start + self.unroll_delta * (int(step) // self.unroll_every)
        return min(t, self.unroll_max) if self.unroll_max else t

    def phase_at(self, step):
        phase = 0
        for i, (start, _) in enumerate(self.task_phases):
            if int(step) >= int(start):
                phase = i + 1
        return phase

    def task_of_phase(self, phase, base_task):
        return base_task if phase == 0 else self.task_phases[phase - 1][1]

    def phases(self, base_task):
        """The tasks of all phases, phase 0 (``base_task``) first."""
        return [base_task] + [t for _, t in self.task_phases]
