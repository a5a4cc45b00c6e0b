"""A run in stages: ``meta_train.stages = ['fast', 'long']`` runs one run per gin scope, each
stage starting from the genome the previous one learned.

Unscoped bindings (``Objective.k = 2``) hold for every stage; scoped ones
(``long/Outer.trainer = @CMAESTrainer``, ``long/Curriculum.unroll_start = 200``,
``long/Schedule.num_steps = 80``) for one: each stage builds its parts (``Objective``,
``Start``, ``Outer``, ``Schedule``, ``Report``) in its own scope.
Stage ``s`` writes ``<model_dir>/<s>/``; the first stage starts from its own ``Start``. A
finished stage is not run again (a finished run returns its results), so a restarted run
resumes in the stage it stopped in. The last stage's genome is copied to
``<model_dir>/genome.json``, its provenance extended by the list of stages (the first stage's
start is the rule's start); ``results.json`` holds every stage's results. The run's rule is
exported once, as ``<model_dir>/saved_model`` (when the last stage's ``Report.export`` is on):
a stage writes no SavedModel of its own.
``Report.final_values`` (unscoped) then sets entries of that final file by hand (recorded in
its provenance as ``final_values``; the last stage's own files keep the genome it learned), and
``Report.final_schedule`` writes a schedule into it (``blur_keras.rules.schedule``: ramps of
synapse-update entries over the inner steps, which meta-training does not run).
With either edit the last stage's final comparison (``Report.final_eval``) judges the edited
file, schedule included (``run_one(judge=...)``: ``<model_dir>/suite/``), not the stage's
genome.
"""

import contextlib
import json
import os

import gin
import numpy as np
from absl import logging

from blur_keras.files import write_json
from blur_keras.meta.run import chief
from blur_keras.meta.run.lock import RunDirLock
from blur_keras.meta.objective.chain import export_arguments, from_description
from blur_keras.rules.export import export_saved_model
from blur_keras.rules.genome import Genome
from blur_keras.meta.run.checks import check_model_dir
from blur_keras.meta.run.parts import Report
from blur_keras.evaluation.plots import plot_run
from blur_keras.rules.schedule import check_schedule

__all__ = ["run_stages"]


def _stage_summary(name, genome_path):
    with open(genome_path) as fh:
        origin = json.load(fh).get("provenance", {})
    keys = ("genome_init", "genome_seed", "transform_std", "synapse_update", "genome_values",
            "backprop_learning_rate", "outer", "unroll", "meta_steps", "task", "sizes", "species",
            "seed")
    return {"stage": name, **{k: origin[k] for k in keys if k in origin}}


def _index(index):
    """A ``final_values`` index (``1`` or ``(1, 0)``) as a tuple of ints."""
    return tuple(np.atleast_1d(index).tolist())


def _edited(genome, final_values):
    """``genome``'s entries (a ``Genome``) with ``final_values`` set, checked by
    ``Genome.assign``. A value is a whole entry, or ``{index: number}`` for single numbers of
    one (``{'pre': {(1, 0): -0.1}}``: ``pre[..., 1, 0]``, on every species)."""
    values = genome.numpy()
    edits = {}
    for name, value in dict(final_values).items():
        if isinstance(value, dict):
            if name not in values:
                raise ValueError(f"Unknown genome entry {name!r}; known: {sorted(values)}.")
            entry = np.array(values[name])
            for index, number in value.items():
                entry[(Ellipsis,) + _index(index)] = number
            edits[name] = entry
        else:
            edits[name] = np.asarray(value, np.float32)
    genome.assign(edits)
    return {name: np.asarray(v).tolist() for name, v in genome.numpy().items()}


def _recorded(final_values):
    """``final_values`` as JSON (an index becomes its string: ``"(1, 0)"``)."""
    return {name: ({str(_index(i)): float(x) for i, x in value.items()}
                   if isinstance(value, dict) else np.asarray(value).tolist())
            for name, value in dict(final_values).items()}


def _write_final_genome(model_dir, stages, genome_path, final_values=None, final_schedule=None):
    """``model_dir/genome.json``: the last stage's genome, edited, with the run's provenance."""
    with open(genome_path) as fh:
        genome = json.load(fh)
    if final_schedule:
        genome["schedule"] = [r.to_json() for r in check_schedule(final_schedule, genome["k"])]
        logging.info("Report.final_schedule %s written into %s.", genome["schedule"],
                     os.path.join(model_dir, "genome.json"))
    if final_values:
        genome["values"] = _edited(Genome.load_json(genome_path), final_values)
        logging.info("Report.final_values %s set on %s.", _recorded(final_values),
                     os.path.join(model_dir, "genome.json"))
    start = ("genome_init", "genome_seed", "transform_std", "synapse_update", "genome_values",
             "backprop_learning_rate")  # the rule's start: the first stage's
    genome["provenance"] = dict(genome.get("provenance", {}), stages=stages,
                                **{k: stages[0].get(k) for k in start},
                                model_dir=os.path.abspath(model_dir),
                                **({"final_values": _recorded(final_values)}
                                   if final_values else {}))
    return write_json(os.path.join(model_dir, "genome.json"), genome, indent=1)


def run_stages(run_one, model_dir, stages, parts, strategy=None):
    """Run ``run_one`` (``experiment.run_one``) under each gin scope of ``stages`` in turn
    (module docstring), with the parts ``parts`` given to every stage (the others built from
    each stage's bindings) and ``strategy``.

    ``Report.final_values`` (unscoped): entries (or single numbers of entries, ``_edited``)
    set on the final genome file, checked against the first stage's start genome before any
    stage trains; ``Report.final_schedule`` (checked likewise) is written into that file.
    ``Schedule.stop_after`` holds for each stage run in this invocation. Returns the last
    stage's results, with ``stages`` (each stage's) and ``genome`` (the final file) added.
    """
    names = [str(s) for s in stages]
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise ValueError(f"meta_train.stages={list(stages)!r}: expected distinct gin scope "
                         "names (identifiers).")
    check_model_dir(model_dir)
    edits = parts.get("report") or Report()
    for i, name in enumerate(names):  # every stage's settings, before any stage trains
        with gin.config_scope(name):  # (a later stage's start file does not exist yet)
            start = run_one(os.path.join(model_dir, name), parts, strategy,
                            _changes("random" if i else None), dry_run=True)
        if i == 0:
            _check_final_edits(start, edits.final_values, edits.final_schedule)
    with gin.config_scope(names[-1]):
        export = (parts.get("report") or Report()).export
    lock = RunDirLock(model_dir) if chief.is_chief(strategy) else contextlib.nullcontext()
    with lock:
        return _run_stages(lambda stage_dir, changes, **mode: run_one(
            stage_dir, parts, strategy, changes, **mode), model_dir, names, edits, export)


def _changes(genome_init=None, **report):
    """A stage's changes of its parts: its start genome (None: its own ``Start``), no final
    genome edits (unscoped bindings, which would reach every stage) and no SavedModel (the
    run exports its final genome)."""
    changes = {"report": dict(final_values=None, final_schedule=None, export=False, **report)}
    if genome_init is not None:
        changes["start"] = {"genome_init": genome_init}
    return changes


def _run_stages(run_stage, model_dir, names, edits, export):
    """The stages in turn, then the final genome file, its SavedModel (``export``) and
    ``results.json``."""
    edited = bool(edits.final_values or edits.final_schedule)
    genome_path, done, summaries = None, [], []
    for name in names:
        stage_dir, previous = os.path.join(model_dir, name), genome_path
        judged_later = {"final_eval": False} if edited and name == names[-1] else {}
        with gin.config_scope(name):  # a finished stage returns its results at once
            results = run_stage(stage_dir, _changes(previous, **judged_later))
        if results["steps_done"] < results["num_steps"]:  # stopped (checkpointed)
            return dict(results, stages=done)
        genome_path = os.path.join(stage_dir, "genome.json")
        done.append(results)
        summaries.append(_stage_summary(name, genome_path))
    final = dict(done[-1], stages=done, model_dir=model_dir, genome=_write_final_genome(
        model_dir, summaries, genome_path, edits.final_values, edits.final_schedule))
    if export:  # the run's rule, at its top level like any run's
        final["saved_model"] = _export_final(model_dir, final["genome"])
    if edited:  # the last stage's final comparison, of the edited genome the run writes
        final.pop("comparison", None)
        with gin.config_scope(names[-1]):
            comparison = run_stage(stage_dir, _changes(previous), judge=final["genome"])
        if comparison is not None:
            final["comparison"] = comparison
    write_json(os.path.join(model_dir, "results.json"), final, indent=2)
    if edits.plots:
        logging.info("pictures of the final genome: %s", ", ".join(plot_run(model_dir)))
    return final


def _export_final(model_dir, genome_path):
    """``model_dir/saved_model``: the SavedModel of the final genome file (its values; the
    schedule stays in the file), sized as the last stage's network."""
    genome = Genome.load_json(genome_path)
    shape, specs = export_arguments(from_description(genome.provenance["sizes"]))
    return export_saved_model(
        os.path.join(model_dir, "saved_model"), genome.numpy(), genome.config, shape,
        genome.init_scale or 1.0, genome.per_layer,
        metadata={"logit_scale": genome.logit_scale, "provenance": genome.provenance},
        specs=specs)


def _check_final_edits(start, final_values, final_schedule):
    """``ValueError`` (naming the binding) unless ``final_values`` are entries of the genome's
    shapes and ``final_schedule`` is a schedule for its k."""
    try:
        if final_values:
            _edited(Genome.from_dict(start.to_dict()), final_values)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"Report.final_values={final_values!r}: {err}") from None
    try:
        check_schedule(final_schedule, start.k)
    except ValueError as err:
        raise ValueError(f"Report.final_schedule={final_schedule!r}: {err}") from None
