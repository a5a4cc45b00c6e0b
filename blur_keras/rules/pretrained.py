"""Pretrained genomes shipped with the package (``blur_keras/rules/genomes/<name>.json``).

Each file is a genome file (``genome_file``: values, config, scales, provenance); its name
without ``.json`` is the genome's name. A *variant* is a shipped genome with more schedule
ramps (docs/spec.md §7): the same numbers, one more option, not another file.
``Genome.pretrained(name)`` loads one (no name: ``DEFAULT``), ``Genome.pretrained_names()``
lists them. The functions here take the directory as an argument (default: the package's
own, read through ``importlib.resources``) so tests and development can point them elsewhere.
"""

import importlib.resources
import json
import pathlib

__all__ = ["DEFAULT", "VARIANTS", "genome_dir", "pretrained_names", "pretrained_text"]

_SUFFIX = ".json"
DEFAULT = "softmax_residual"
# ν̃[1][0], the term that makes a residual rule fast early, ramps to 0 over 1,000 steps
_FADE_PRE = {"entry": "pre", "index": [1, 0], "to": 0.0, "steps": 1000}
# the synapse update anneals to 0 from step 1,000 to step 5,000
_ANNEAL = {"entry": "eta_syn", "index": None, "to": 0.0, "steps": 4000, "start": 1000}
VARIANTS = {  # name -> (shipped genome, ramps appended to its schedule)
    "sgd_residual_scheduled": ("sgd_residual", (_FADE_PRE,)),
    "sgd_residual_annealed": ("sgd_residual", (_FADE_PRE, _ANNEAL)),
    "sgd_residual_deep_annealed": ("sgd_residual_deep", (_ANNEAL,)),
}


def genome_dir():
    """The package's genome directory (a ``Traversable``; it may hold no files yet)."""
    return importlib.resources.files("blur_keras.rules") / "genomes"


def _as_dir(directory):
    """A ``Traversable``: the package's directory, or ``directory`` (a path)."""
    return genome_dir() if directory is None else pathlib.Path(directory)


def _file_names(directory):
    root = _as_dir(directory)
    if not root.is_dir():
        return []
    return sorted(f.name[:-len(_SUFFIX)] for f in root.iterdir()
                  if f.name.endswith(_SUFFIX) and f.is_file())


def pretrained_names(directory=None):
    """Sorted names of the genomes in ``directory`` (default: the package's) and of their
    variants."""
    files = _file_names(directory)
    return sorted(files + [name for name, (base, _) in VARIANTS.items() if base in files])


def pretrained_text(name=None, directory=None):
    """The JSON text of genome ``name`` (default ``DEFAULT``); an unknown name is a
    ``ValueError`` listing the known."""
    name = DEFAULT if name is None else name
    known = pretrained_names(directory)
    if name not in known:
        raise ValueError(f"No pretrained genome {name!r}; known: {known or 'none shipped yet'}.")
    if name not in VARIANTS:
        return (_as_dir(directory) / (name + _SUFFIX)).read_text(encoding="utf-8")
    base, ramps = VARIANTS[name]
    data = json.loads(pretrained_text(base, directory))
    data["schedule"] = list(data.get("schedule") or []) + [dict(r) for r in ramps]
    data.setdefault("provenance", {})["variant_of"] = base
    return json.dumps(data)
