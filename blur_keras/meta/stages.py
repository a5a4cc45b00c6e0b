"""A run in stages: ``meta_train.stages = ['fast', 'long']`` runs ``meta_train`` once per gin
scope, each stage starting from the genome the previous one learned.

Unscoped bindings (``meta_train.k = 2``) hold for every stage; scoped ones
(``long/meta_train.trainer = @CMAESTrainer``, ``long/Curriculum.unroll_start = 200``) for one.
Stage ``s`` writes ``<model_dir>/<s>/``; the first stage starts from its own ``genome_init``.
A finished stage is not run again (``meta_train`` returns a finished run's results), so a restarted run resumes in the stage it stopped in. The
last stage's genome is copied to ``<model_dir>/genome.json``, its provenance extended by the
list of stages (the first stage's start is the rule's start); ``results.json`` holds every
stage's results.
"""

import json
import os

import gin

from blur_keras.meta.run_checks import check_model_dir

__all__ = ["run_stages"]


def _stage_summary(name, genome_path):
    with open(genome_path) as fh:
        origin = json.load(fh).get("provenance", {})
    keys = ("genome_init", "genome_seed", "transform_std", "synapse_update", "genome_values",
            "backprop_learning_rate", "outer", "unroll", "meta_steps", "task", "sizes", "species",
            "seed")
    return {"stage": name, **{k: origin[k] for k in keys if k in origin}}


def _write_final(model_dir, stages, genome_path, results):
    with open(genome_path) as fh:
        genome = json.load(fh)
    start = ("genome_init", "genome_seed", "transform_std", "synapse_update", "genome_values",
             "backprop_learning_rate")  # the rule's start: the first stage's
    genome["provenance"] = dict(genome.get("provenance", {}), stages=stages,
                                **{k: stages[0].get(k) for k in start},
                                model_dir=os.path.abspath(model_dir))
    with open(os.path.join(model_dir, "genome.json"), "w") as fh:
        json.dump(genome, fh, indent=1)
    with open(os.path.join(model_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)


def run_stages(meta_train, model_dir, stages, **kwargs):
    """Run ``meta_train`` under each gin scope of ``stages`` in turn (module docstring).

    ``stop_after`` holds for each stage run in this invocation.

    ``kwargs`` (``strategy``, ``stop_after``) go to every stage. Returns the last stage's
    results, with ``stages`` (each stage's) and ``genome`` (the final file) added.
    """
    names = [str(s) for s in stages]
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise ValueError(f"meta_train.stages={list(stages)!r}: expected distinct gin scope "
                         "names (identifiers).")
    check_model_dir(model_dir)
    for i, name in enumerate(names):  # every stage's settings, before any stage trains
        with gin.config_scope(name):  # (a later stage's start file does not exist yet)
            meta_train(os.path.join(model_dir, name), stages=(), dry_run=True,
                       **({} if i == 0 else {"genome_init": "random"}), **kwargs)
    os.makedirs(model_dir, exist_ok=True)
    genome_path, done, summaries = None, [], []
    for name in names:
        stage_dir = os.path.join(model_dir, name)
        start = {} if genome_path is None else {"genome_init": genome_path}
        with gin.config_scope(name):  # a finished stage returns its results at once
            results = meta_train(stage_dir, stages=(), **start, **kwargs)
        if results["steps_done"] < results["num_steps"]:  # stopped (checkpointed)
            return dict(results, stages=done)
        genome_path = os.path.join(stage_dir, "genome.json")
        done.append(results)
        summaries.append(_stage_summary(name, genome_path))
    final = dict(done[-1], stages=done, genome=os.path.join(model_dir, "genome.json"),
                 model_dir=model_dir)
    _write_final(model_dir, summaries, genome_path, final)
    return final
