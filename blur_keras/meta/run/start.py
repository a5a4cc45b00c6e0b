"""The start genome of a run: the paper's random start, the backprop genome, or a file."""

import numpy as np

from blur_keras.rules.genome import Genome
from blur_keras.core.genome_spec import member

__all__ = ["make_start_genome", "start_values"]


def make_start_genome(k, species, genome_init, seed, transform_std, synapse_update, values,
                      backprop_learning_rate, num_layers=None):
    """A ``Genome`` (``species`` side by side, or one for None) from ``genome_init``:
    ``"random"``, ``"backprop"`` or a genome ``.json`` path; ``values`` overrides entries."""
    if genome_init == "random":
        genome = Genome.random(k, seed=seed, species=species, transform_std=transform_std,
                               synapse_update=synapse_update, num_layers=num_layers)
    elif genome_init == "backprop":
        genome = Genome.backprop(backprop_learning_rate, k=k, species=species,
                                 num_layers=num_layers)
    elif genome_init.endswith(".json"):
        loaded = Genome.load_json(genome_init)
        _check_start_genome(genome_init, loaded, k, num_layers)
        vals = loaded.numpy()
        if loaded.species is not None:
            vals = member(vals, 0)
        genome = Genome(loaded.k, num_layers=loaded.num_layers, species=species, values=vals)
    else:
        raise ValueError(f"genome_init={genome_init!r}; expected 'random', 'backprop' or a "
                         f"path to a genome .json file.")
    if values:
        genome.assign({n: np.broadcast_to(np.asarray(v, np.float32), genome.shape_of(n))
                       for n, v in values.items()})
    return genome


def _check_start_genome(path, genome, k, num_layers):
    """A genome file must fit the run: same k, same per-layer layout and depth."""
    if genome.k != k:
        raise ValueError(f"Start.genome_init={path!r} holds a k={genome.k} genome, but "
                         f"Objective.k={k}: set Objective.k = {genome.k} or use another file.")
    if genome.schedule:
        raise ValueError(f"Start.genome_init={path!r} holds a genome with a schedule (ramps "
                         f"of entries over the inner steps), which meta-training does not run: "
                         f"start from a copy of the file without its 'schedule' key.")
    if genome.num_layers != num_layers:
        def layout(n):
            return "shared by all layer pairs" if n is None else f"per-layer with {n} layer pairs"
        raise ValueError(f"Start.genome_init={path!r} holds a genome "
                         f"{layout(genome.num_layers)}, but the run (Start.per_layer, "
                         f"Objective.hidden_sizes) needs one {layout(num_layers)}.")


def start_values(genome):
    """The start as one species-free genome dict (species 0 of a population)."""
    values = genome.numpy()
    return member(values, 0) if genome.species is not None else values
