"""The final report of a run: the evaluation suite (``blur_keras.evaluation.suite``) on its
transfer tasks, and the learned rule against its random start, SGD and Adam; of the genome a
run learned (``run_comparison``) or of a genome file it wrote (``judge_file``: a staged run's
edited final genome, with its schedule)."""

import dataclasses
import os

import gin
import numpy as np
from absl import logging

from blur_keras.core.config import BlurConfig
from blur_keras.core.layer_specs import Reshape
from blur_keras.meta.objective.chain import is_chain
from blur_keras.meta.run.result import start_name
from blur_keras.meta.run.checks import first_task
from blur_keras.rules.schedule import check_schedule

__all__ = ["compare", "run_comparison", "judge_file"]


def _gin_bound(name):
    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False


def _architecture(sizes):
    """The suite's keyword and architectures for the run's network: its hidden widths, or its
    chain of layer specs on the suite's flat examples (a ``Reshape`` to the input shape first)."""
    if is_chain(sizes):
        return "specs", [(Reshape(tuple(sizes.input_shape)),) + tuple(sizes.specs)]
    return "hidden_sizes", [tuple(sizes[1:-1])]


def compare(learned, start, config, sizes, task, unroll, *, batch_size, replicas, examples,
            init_scale, per_layer, out_dir=None, provenance=None, start_name="random start",
            schedule=(), name="learned genome"):
    """The evaluation suite (``blur_keras.evaluation.suite``) on the run's transfer tasks.

    The tasks, architectures, horizons, seeds, ... are the gin bindings of
    ``evaluate_suite``; what is not bound follows the run: its own task (test split), its
    network (``sizes``: hidden sizes, or a ``Chain`` as ``evaluate_suite.specs``), horizons
    ``{T, 10, 20, 50, 100}``, ``replicas`` seeds, its batch size and ``examples`` test
    examples. The start genome (``start_name``: "random start", "backprop start", the previous
    stage's genome) is measured on the run's own task at T.
    Writes ``out_dir`` (table.md, curves, points) and returns the ``comparison`` summary
    (test accuracy at T: learned rule, its start, SGD and Adam at the learning rate
    chosen on validation). ``schedule``: the learned rule's (``blur_keras.rules.schedule``), run with
    it; ``name``: what the rule is called in the suite's files.
    """
    from blur_keras.evaluation import suite as ev
    config = config or BlurConfig()
    out_dir = out_dir or "/tmp/blur_suite"
    arch_key, archs = _architecture(sizes)
    own = {"tasks": [task], arch_key: archs,
           "horizons": tuple(sorted({int(unroll), 10, 20, 50, 100})), "seeds": int(replicas),
           "batch_size": int(batch_size), "test_examples": int(examples or 2000)}
    overrides = {key: v for key, v in own.items() if not _gin_bound(f"evaluate_suite.{key}")}
    if not _gin_bound("evaluate_suite.tasks"):
        overrides["tasks"] = [ev.task_data(task, test_examples=own["test_examples"])]
    rule = ev.Rule(name, learned, config, per_layer, float(init_scale), provenance,
                   check_schedule(schedule, int(np.shape(learned["nu"])[-1])))
    summary = ev.evaluate_suite(rule, out_dir, log=lambda line: logging.info("%s", line),
                                **overrides)
    entry = summary["results"][0]
    steps = entry["steps"]
    at = max(i for i, s_ in enumerate(steps) if s_ <= unroll)  # T, or the last horizon before
    data = ev.task_data(task, test_examples=own["test_examples"])
    start_rule = dataclasses.replace(rule, name=start_name, values=start, schedule=())
    logging.info("The start genome (%s) at %d steps on %s:", start_name, steps[at],
                 entry["label"])
    start_summary = ev.run_suite(start_rule, [data], os.path.join(out_dir, "start"),
                                 **{arch_key: archs}, horizons=(int(steps[at]),),
                                 seeds=summary["seeds"], batch_size=summary["batch_size"],
                                 baselines=(), plot=False,
                                 log=lambda line: logging.info("%s", line))
    res = entry["methods"]
    out = {"rule": name, "unroll": int(steps[at]), "task": entry["label"],
           "seeds": summary["seeds"],
           "learned": res["blur"]["test_mean"][at],
           "start": start_summary["results"][0]["methods"]["blur"]["test_mean"][-1],
           "start_name": start_name, "suite": out_dir, "table": os.path.join(out_dir, "table.md")}
    out.update(_baselines_at(res, at, steps))
    horizons = summary["horizons"]
    out["horizons"] = list(horizons)
    out["beats"] = {m: [h for h in horizons if res["blur"]["test_mean"][steps.index(h)]
                        > res[m]["test_mean"][steps.index(h)]] for m in res if m != "blur"}
    out["learned_beats_start"] = out["learned"] > out["start"]
    out["learned_beats_sgd"] = out["learned"] > out.get("sgd_best", -1.0)
    print(f"Test accuracy (baselines at the learning rate chosen on validation; "
          f"{summary['seeds']} seeds); {start_name} at {out['unroll']} steps: {out['start']:.4f}\n"
          + ev.format_table(summary), flush=True)
    return out


def _baselines_at(res, at, steps):
    """The tuned baselines' test accuracy at record ``at`` and every method's test curve."""
    out = {}
    for method in ("sgd", "momentum", "adam"):
        if method in res:
            out[f"{method}_best"] = res[method]["test_mean"][at]
            out[f"{method}_best_learning_rate"] = res[method]["best_learning_rate"][at]
    out["curves"] = {"steps": list(steps), **{m: list(r["test_mean"]) for m, r in res.items()}}
    return out


def run_comparison(run, values, start, out_dir, origin, schedule=(), name="learned genome"):
    """``compare`` of the genome ``values`` with the settings of the run ``run`` (an
    ``experiment.Run``: its parts), on its ``Report.final_eval_task`` (default: its task)."""
    objective, report = run.objective, run.report
    task = objective.task if report.final_eval_task is None else report.final_eval_task
    return compare(
        values, start, objective.blur_config, run.sizes, first_task(task),
        objective.curriculum.unroll_at(run.schedule.num_steps - 1),
        batch_size=objective.batch_size, replicas=report.final_eval_replicas,
        examples=report.final_eval_examples, init_scale=objective.init_scale,
        per_layer=run.start.per_layer, out_dir=out_dir,
        provenance=origin, start_name=start_name(run.start.genome_init), schedule=schedule,
        name=name)


def judge_file(run, path, start):
    """``run_comparison`` of the genome file at ``path`` (and its schedule), into ``suite/``
    beside it; None when the run's ``Report.final_eval`` is off."""
    from blur_keras.evaluation.suite import load_rule

    if not run.report.final_eval:
        return None
    rule = load_rule(path, config=run.objective.blur_config)  # also: the file's config is the run's
    name = "final genome" + (" (with its schedule)" if rule.schedule else "")
    logging.info("The final comparison, of %s: the %s.", path, name)
    return run_comparison(run, rule.values, start, os.path.join(os.path.dirname(path), "suite"),
                          rule.provenance, rule.schedule, name=name)
