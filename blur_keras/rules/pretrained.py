"""Pretrained genomes shipped with the package (``blur_keras/rules/genomes/<name>.json``).

Each file is a genome file (``genome_file``: values, config, scales, provenance); its name
without ``.json`` is the genome's name. ``Genome.pretrained(name)`` loads one (no name:
``DEFAULT``), ``Genome.pretrained_names()`` lists them. The functions here take the directory as an argument (default: the package's
own, read through ``importlib.resources``) so tests and development can point them elsewhere.
"""

import importlib.resources
import pathlib

__all__ = ["DEFAULT", "genome_dir", "pretrained_names", "pretrained_text"]

_SUFFIX = ".json"
DEFAULT = "softmax_residual"


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
    """Sorted names of the genomes in ``directory`` (default: the package's)."""
    return _file_names(directory)


def pretrained_text(name=None, directory=None):
    """The JSON text of genome ``name`` (default ``DEFAULT``); an unknown name is a
    ``ValueError`` listing the known."""
    name = DEFAULT if name is None else name
    known = pretrained_names(directory)
    if name not in known:
        raise ValueError(f"No pretrained genome {name!r}; known: {known or 'none shipped yet'}.")
    return (_as_dir(directory) / (name + _SUFFIX)).read_text(encoding="utf-8")
