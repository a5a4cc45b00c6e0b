"""The curriculum: unroll count and task phase as functions of the meta-step."""

import pytest

from blur_keras.meta.run.curriculum import Curriculum


def test_curriculum_schedule():
    c = Curriculum(unroll_start=10, unroll_delta=5, unroll_every=100, unroll_max=20,
                   task_phases=((50, "b"), (150, "c")))
    assert [c.unroll_at(s) for s in (0, 99, 100, 250, 10_000)] == [10, 10, 15, 20, 20]
    assert [c.phase_at(s) for s in (0, 49, 50, 149, 150)] == [0, 0, 1, 1, 2]
    assert c.task_of_phase(2, "a") == "c" and c.task_of_phase(0, "a") == "a"
    with pytest.raises(ValueError):
        Curriculum(task_phases=((5, "b"), (3, "c")))


def test_curriculum_phases_list_every_task_in_order():
    c = Curriculum(task_phases=((5, "b"), (9, "c")))
    assert c.phases("a") == ["a", "b", "c"]
    assert Curriculum().phases("a") == ["a"]
