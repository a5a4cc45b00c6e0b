"""Genome schedules: entries of the synapse update that move with the step (docs/spec.md §7).

A schedule is a tuple of *ramps*. A ramp holds one entry of the backward pass or of the
Hebbian synapse update (or one element of it) at the genome's value ``v`` for ``start`` inner steps, moves it linearly to
``to`` over the next ``steps`` and holds it there::

    value(t) = v + (to − v) · clip((t − start) / steps, 0, 1)
                                         t = inner steps already taken (0, 1, …)

Only the backward mix ``mu`` (spec §2 step 4) and the entries of the synapse update (step 5)
can ramp: ``mu``, ``pre``, ``post``, ``f_syn``, ``eta_syn``. They never enter a forward pass,
so a prediction does not depend on the step. A ramp is a dict ``{"entry": name, "index": [e, c] or None, "to": number,
"steps": int, "start": int}`` (``start`` optional, 0 if absent; ``index`` only for the k×k
entries; ``None`` ramps every element to ``to``). ``at_step`` (on a ``check_schedule`` result)
is pure and compiles with XLA; ``BlurModel`` counts its steps, the evaluation suite passes its
loop counter.
"""

import numbers
from typing import NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from blur_keras.core.genome_spec import DESCRIPTIONS, core_rank

__all__ = ["SCHEDULABLE", "Ramp", "check_schedule", "at_step"]

SCHEDULABLE = ("mu", "pre", "post", "f_syn", "eta_syn")


class Ramp(NamedTuple):
    """One checked ramp (hashable, so a schedule can key a compiled function's trace)."""

    entry: str
    index: Optional[Tuple[int, int]]
    to: float
    steps: int
    start: int = 0

    def to_json(self):
        """The ramp as the genome file holds it (``index`` a list or ``None``; ``start`` only
        when it is not 0, so files written before it existed read back unchanged)."""
        out = {"entry": self.entry, "index": None if self.index is None else list(self.index),
               "to": self.to, "steps": self.steps}
        return out if self.start == 0 else {**out, "start": self.start}


def check_schedule(schedule, k):
    """``schedule`` (a list of ramp dicts, or of ``Ramp``) checked for a genome with ``k``
    states; returns it as a tuple of ``Ramp``. Every problem is a ``ValueError`` naming the
    ramp, the key and the value received."""
    if schedule is None:
        return ()
    if not isinstance(schedule, (list, tuple)):
        raise ValueError(f"A genome schedule is a list of ramps {{'entry', 'index', 'to', "
                         f"'steps'}}; got {schedule!r:.80}.")
    return tuple(_check_ramp(ramp, i, k) for i, ramp in enumerate(schedule))


def _check_ramp(ramp, i, k):
    where = f"Genome schedule ramp {i}"
    if isinstance(ramp, Ramp):
        ramp = ramp._asdict()
    if not isinstance(ramp, dict) or set(ramp) - set(Ramp._fields) or \
            not {"entry", "to", "steps"} <= set(ramp):
        raise ValueError(f"{where}: expected a dict with keys 'entry', 'to', 'steps' and "
                         f"optionally 'index' and 'start'; got {ramp!r:.120}.")
    entry = ramp["entry"]
    if entry not in SCHEDULABLE:
        raise ValueError(f"{where}: entry {entry!r} cannot be scheduled; only the backward "
                         f"mix and the synapse update's entries can: {list(SCHEDULABLE)} "
                         f"(they never enter a forward pass).")
    index = ramp.get("index")
    if index is not None:
        if core_rank(entry) != 2 or not isinstance(index, (list, tuple)) or len(index) != 2 or \
                not all(isinstance(j, (int, np.integer)) and not isinstance(j, bool)
                        and 0 <= j < k for j in index):
            raise ValueError(f"{where}: index {index!r} of {entry!r} ({DESCRIPTIONS[entry]}) "
                             f"must be None" + (f" or two ints in [0, {k})" if
                                                core_rank(entry) == 2 else "") + ".")
        index = tuple(int(j) for j in index)
    to = ramp["to"]
    if isinstance(to, bool) or not isinstance(to, numbers.Real) or not np.isfinite(to):
        raise ValueError(f"{where}: 'to' must be a finite number, got {to!r}.")
    steps = ramp["steps"]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{where}: 'steps' must be an int >= 1, got {steps!r}.")
    start = ramp.get("start", 0)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"{where}: 'start' must be an int >= 0, got {start!r}.")
    return Ramp(entry, index, float(to), int(steps), int(start))


def at_step(params, schedule, step):
    """``params`` (name -> tensor) with every ramp of ``schedule`` applied at inner step
    ``step`` (a scalar, 0 for the first step); other entries are returned as they are."""
    if not schedule:
        return params
    out = dict(params)
    for ramp in schedule:
        v = out[ramp.entry]
        frac = tf.clip_by_value((tf.cast(step, v.dtype) - float(ramp.start)) / float(ramp.steps),
                                0.0, 1.0)
        moved = v + (ramp.to - v) * frac
        if ramp.index is not None:
            k = int(v.shape[-1])
            mask = np.zeros((k, k), bool)
            mask[ramp.index] = True
            moved = tf.where(mask, moved, v)
        out[ramp.entry] = moved
    return out
