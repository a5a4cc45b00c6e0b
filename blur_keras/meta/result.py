"""The result of a run: the genome it writes (``genome.json``, with config, scales and
provenance), the population beside it (``genome_population.json``) and the SavedModel."""

import os

from blur_keras.genome import Genome
from blur_keras.meta.export import export_saved_model

__all__ = ["provenance", "write_result"]


def _version():
    import blur_keras

    return getattr(blur_keras, "__version__", "unknown")


def provenance(task, sizes, unroll, num_steps, seed, genome_init, genome_seed, outer, species,
               model_dir, start=None):
    """Where a learned genome comes from (stored in its files). ``start``: what rebuilds the
    start genome besides ``genome_init`` and ``genome_seed`` (``transform_std``,
    ``synapse_update``, ``genome_values``, ``backprop_learning_rate``)."""
    return {"task": task.describe(), "sizes": list(sizes), "unroll": unroll,
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
        files["saved_model"] = export_saved_model(
            os.path.join(model_dir, "saved_model"), values, config, sizes, init_scale, per_layer,
            metadata={"logit_scale": logit_scale, "provenance": provenance})
    return best, values, files
