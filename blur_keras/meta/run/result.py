"""The result of a run: the genome it writes (``genome.json``, with config, scales and
provenance), the population beside it (``genome_population.json``), the SavedModel, and the
results a finished run wrote."""

import json
import os

import numpy as np
from absl import logging

from blur_keras.rules.genome import Genome
from blur_keras.rules.export import export_saved_model
from blur_keras.meta.objective.chain import describe, export_arguments

__all__ = ["finished_results", "jsonable", "provenance", "start_name", "write_result"]


def _version():
    import blur_keras

    return getattr(blur_keras, "__version__", "unknown")


def provenance(task, sizes, unroll, num_steps, seed, genome_init, genome_seed, outer, species,
               model_dir, start=None):
    """Where a learned genome comes from (stored in its files). ``start``: what rebuilds the
    start genome besides ``genome_init`` and ``genome_seed`` (``transform_std``,
    ``synapse_update``, ``genome_values``, ``backprop_learning_rate``)."""
    return {"task": task.describe(), "sizes": describe(sizes), "unroll": unroll,
            "meta_steps": num_steps, "seed": seed, "genome_init": str(genome_init),
            "genome_seed": genome_seed, **(start or {}), "outer": outer, "species": species,
            "model_dir": os.path.abspath(model_dir), "package_version": _version()}


def write_result(model_dir, trainer, val_accuracy, *, k, num_layers, config, sizes, init_scale,
                 logit_scale, per_layer, provenance, export):
    """Write the trainer's result genome (and population, SavedModel) into ``model_dir``.

    Returns ``(best index, genome values, files)``; ``files`` names the SavedModel.
    """
    best, values = trainer.result(val_accuracy)
    population = trainer.population()
    if population is not None:
        species = len(next(iter(population.values())))
        Genome(k, num_layers=num_layers, species=species, values=population).save_json(
            os.path.join(model_dir, "genome_population.json"))
    learned = Genome(k, num_layers=num_layers, values=values).with_metadata(
        config, init_scale, logit_scale, provenance)
    learned.save_json(os.path.join(model_dir, "genome.json"))
    files = {}
    if export:
        shape, specs = export_arguments(sizes)
        files["saved_model"] = export_saved_model(
            os.path.join(model_dir, "saved_model"), values, config, shape, init_scale, per_layer,
            metadata={"logit_scale": logit_scale, "provenance": provenance}, specs=specs)
    return best, values, files


def finished_results(model_dir, start, num_steps):
    """A run resumed at its end returns the results it wrote (nothing is run again)."""
    path = os.path.join(model_dir, "results.json")
    if start < num_steps or not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            results = json.load(fh)
    except ValueError as err:
        logging.warning("%s is unreadable (%s); writing the run's results again.", path, err)
        return None
    return results if isinstance(results, dict) and results.get("steps_done") == num_steps \
        else None


def jsonable(values):
    """Genome entries (``genome_values``) as JSON lists, or None."""
    if not values:
        return None
    return {n: np.asarray(v).tolist() for n, v in dict(values).items()}


def start_name(genome_init):
    """How the final report names a run's start genome."""
    if genome_init in ("random", "backprop"):
        return f"{genome_init} start"
    path = os.path.abspath(genome_init)
    name = os.path.basename(os.path.dirname(path) if path.endswith("genome.json") else path)
    return f"start genome ({name})"
