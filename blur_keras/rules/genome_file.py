"""The genome file format: what a saved genome holds, checked strictly on load.

A genome file (JSON) holds the numbers and the conventions they only make sense
with: the ``BlurConfig`` it was trained with, the synapse initialisation and
logit scales, provenance (task, sizes, T, meta-steps, seed, package
version), and optionally a schedule (``blur_keras.rules.schedule``: ramps of synapse
update entries over the inner steps, checked by ``Genome.from_dict``).  Old
values-only files (``k``, ``num_layers``, ``species``, ``values``) still load,
with those left unknown.  Every problem is a
``ValueError`` naming the key, the value received and what is expected.

Values are numbers (JSON ``true``/``false`` are not), at most ``MAX_ENTRY`` in magnitude: a
genome entry of 1e30 is finite but drives every network to a constant output. Entries in
``POSITIVE_ENTRIES`` must be > 0 (the saturation ``alpha tanh(w / alpha)`` divides by alpha),
and the scales (``init_scale``, ``logit_scale``) lie in ``SCALE_RANGE``.
"""

import numpy as np

from blur_keras.core.config import BlurConfig
from blur_keras.core.genome_spec import DESCRIPTIONS, FILE_OPTIONAL_NAMES, NAMES

__all__ = ["FILE_FORMAT", "MAX_ENTRY", "POSITIVE_ENTRIES", "SCALE_RANGE", "check_genome_dict",
           "as_config", "as_float", "as_scale", "resolve_config"]

FILE_FORMAT = "blur_keras.genome/2"
_FILE_KEYS = ("format", "k", "num_layers", "species", "values", "config", "init_scale",
              "logit_scale", "provenance", "schedule")
MAX_ENTRY = 1e4
POSITIVE_ENTRIES = ("alpha",)
SCALE_RANGE = (1e-3, 1e3)


def as_config(config, key):
    if isinstance(config, BlurConfig):
        return config
    if not isinstance(config, dict):
        raise ValueError(f"Genome file key {key!r}: expected a dict of BlurConfig fields, got "
                         f"{config!r}.")
    try:
        return BlurConfig.from_dict(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Genome file key {key!r}: {err}") from None


def as_float(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value):
        raise ValueError(f"Genome file key {key!r}: expected a finite number, got {value!r}.")
    return float(value)


def as_scale(value, key):
    """A scale (``init_scale``, ``logit_scale``): a finite number in ``SCALE_RANGE``."""
    value = as_float(value, key)
    low, high = SCALE_RANGE
    if not low <= value <= high:
        raise ValueError(f"Genome file key {key!r}: expected a positive scale between {low:g} "
                         f"and {high:g}, got {value!r}.")
    return value


def _numbers_only(value):
    """Whether every leaf of ``value`` (nested lists or an array) is an int or a float."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "iuf"
    if isinstance(value, (list, tuple)):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_entry(name, value):
    """``values.<name>``: numbers (no booleans), finite, within ``MAX_ENTRY``; positive for
    ``POSITIVE_ENTRIES``."""
    where = f"Genome file entry 'values.{name}' ({DESCRIPTIONS[name]})"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected numbers (nested lists), got {value!r:.80}.") from None
    if not _numbers_only(value):
        raise ValueError(f"{where}: expected numbers (not booleans or text), got "
                         f"{value!r:.80}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: expected finite numbers, got {value!r:.80}.")
    if arr.size and np.max(np.abs(arr)) > MAX_ENTRY:
        raise ValueError(f"{where}: {np.max(np.abs(arr)):g} exceeds the sane bound {MAX_ENTRY:g} "
                         f"in magnitude (a network trained with it saturates or dies); got "
                         f"{value!r:.80}.")
    if name in POSITIVE_ENTRIES and arr.size and np.min(arr) <= 0:
        raise ValueError(f"{where}: must be > 0, got {value!r:.80}.")


def _check_int(data, key, minimum, optional):
    value = data.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = f"an int >= {minimum}" + (" or null" if optional else "")
        raise ValueError(f"Genome file key {key!r}: expected {what}, got {value!r}.")


def check_genome_dict(data):
    """Validate a genome dict (file contents) before anything is built; returns it."""
    if not isinstance(data, dict):
        raise ValueError(f"A genome file must hold a JSON object with keys {list(_FILE_KEYS)}; "
                         f"got {type(data).__name__} {data!r:.80}.")
    unknown = sorted(set(data) - set(_FILE_KEYS))
    if unknown:
        raise ValueError(f"Genome file has unknown keys {unknown} (values "
                         f"{[data[key] for key in unknown]!r:.120}); expected keys among "
                         f"{list(_FILE_KEYS)}.")
    for key in ("k", "values"):
        if key not in data:
            raise ValueError(f"Genome file is missing the key {key!r}; got keys {sorted(data)}.")
    if "format" in data and data["format"] != FILE_FORMAT:
        raise ValueError(f"Genome file key 'format': expected {FILE_FORMAT!r}, got "
                         f"{data['format']!r}.")
    _check_int(data, "k", 2, optional=False)
    _check_int(data, "num_layers", 1, optional=True)
    _check_int(data, "species", 1, optional=True)
    values = data["values"]
    if not isinstance(values, dict):
        raise ValueError(f"Genome file key 'values': expected an object name -> array, got "
                         f"{values!r:.80}.")
    missing = [name for name in NAMES if name not in values and name not in FILE_OPTIONAL_NAMES]
    if missing:
        raise ValueError(f"Genome file key 'values' is missing the entries {missing}; a genome "
                         f"file holds every entry of {list(NAMES)} (to build a genome from "
                         f"some entries, use Genome(k, values=...), which fills in neutral "
                         f"defaults).")
    extra = sorted(set(values) - set(NAMES))
    if extra:
        raise ValueError(f"Genome file key 'values' has unknown entries {extra}; expected "
                         f"exactly {list(NAMES)}.")
    for name in NAMES:
        if name in values:
            _check_entry(name, values[name])
    if data.get("config") is not None:
        as_config(data["config"], "config")
    for key in ("init_scale", "logit_scale"):
        if data.get(key) is not None:
            as_scale(data[key], key)
    if data.get("provenance") is not None and not isinstance(data["provenance"], dict):
        raise ValueError(f"Genome file key 'provenance': expected an object, got "
                         f"{data['provenance']!r:.80}.")
    return data


def resolve_config(genome, config):
    """The BlurConfig to use with ``genome``: the explicit ``config`` or the genome's own.

    An explicit config that differs from the one the genome file carries is an error.
    """
    own = getattr(genome, "config", None)
    if config is None:
        return own
    if isinstance(config, dict):
        config = BlurConfig.from_dict(config)
    if own is not None and config != own:
        diff = {key: (value, getattr(config, key)) for key, value in own.to_dict().items()
                if getattr(config, key) != value}
        raise ValueError(
            "The explicit config contradicts the genome's own (the one it was trained with): "
            + ", ".join(f"{key}: genome {a!r}, explicit {b!r}" for key, (a, b) in diff.items())
            + ". Pass config=None to use the genome's.")
    return config
