"""The genome: the meta-learned update rule (SPEC §1).

Two views of the same numbers:

* pure: a ``dict`` name -> tensor (what the math in ``forward``/``backward``/
  ``synapses`` consumes), with helpers to pick a layer's entries and to align
  a species axis with the population axes of the synapses;
* stateful: ``Genome``, a Keras layer that owns one ``tf.Variable`` per entry,
  serialises through ``get_config``/``from_config`` and JSON, and saves with
  the model that holds it.

Shapes: a k×k transform is ``[*species, (layers,) k, k]``, a per-state vector
``[*species, (layers,) k]`` and a scalar ``[*species, (layers,)]``; the
``layers`` axis exists only for a per-layer genome.
"""

import json

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "Genome", "CORE_NAMES", "OPTIONAL_NAMES", "NAMES", "core_rank", "core_shape",
    "select_layer", "align_to_population", "num_core_numbers", "resolve_config", "FILE_FORMAT",
]

# name -> number of trailing "core" axes (2: k×k, 1: k, 0: scalar)
_CORE_RANK = {
    "nu": 2, "mu": 2, "pre": 2, "post": 2,
    "f": 0, "eta": 0, "f_syn": 0, "eta_syn": 0,
    "gamma": 1, "beta": 1, "oja": 0, "alpha": 0, "syn_scale": 0,
}
CORE_NAMES = ("nu", "mu", "pre", "post", "f", "eta", "f_syn", "eta_syn")
OPTIONAL_NAMES = ("gamma", "beta", "oja", "alpha", "syn_scale")
NAMES = CORE_NAMES + OPTIONAL_NAMES

_DESCRIPTIONS = {
    "nu": "forward neuron transform nu[d, c]",
    "mu": "backward neuron transform mu[d, c]",
    "pre": "Hebbian pre-synaptic transform pre[e, c]",
    "post": "Hebbian post-synaptic transform post[c, d]",
    "f": "neuron keep", "eta": "neuron update",
    "f_syn": "synapse keep", "eta_syn": "synapse update",
    "gamma": "activation-norm scale", "beta": "activation-norm shift",
    "oja": "Oja multiplier", "alpha": "saturation scale",
    "syn_scale": "synapse-norm rescale",
}


def core_rank(name):
    return _CORE_RANK[name]


def core_shape(name, k):
    return (k,) * _CORE_RANK[name]


def num_core_numbers(k):
    """4k² + 4: the size of the core genome (SPEC §1)."""
    return 4 * k * k + 4


def default_values(k):
    """Neutral values: identity transforms, keeps/updates 1, synapse update −1e-3."""
    eye = np.eye(k)
    return {
        "nu": eye, "mu": eye, "pre": eye, "post": eye,
        "f": 1.0, "eta": 1.0, "f_syn": 1.0, "eta_syn": -1e-3,
        "gamma": np.ones(k), "beta": np.zeros(k),
        "oja": 1.0, "alpha": 1.0, "syn_scale": 1.0,
    }


FILE_FORMAT = "blur_keras.genome/2"
_FILE_KEYS = ("format", "k", "num_layers", "species", "values", "config", "init_scale",
              "logit_scale", "provenance")


def _as_config(config, key):
    from blur_keras.config import BlurConfig  # config.py does not import genome.py

    if isinstance(config, BlurConfig):
        return config
    if not isinstance(config, dict):
        raise ValueError(f"Genome file key {key!r}: expected a dict of BlurConfig fields, got "
                         f"{config!r}.")
    try:
        return BlurConfig.from_dict(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Genome file key {key!r}: {err}") from None


def _as_float(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value):
        raise ValueError(f"Genome file key {key!r}: expected a finite number, got {value!r}.")
    return float(value)


def _check_int(data, key, minimum, optional):
    value = data.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = f"an int >= {minimum}" + (" or null" if optional else "")
        raise ValueError(f"Genome file key {key!r}: expected {what}, got {value!r}.")


def _check_genome_dict(data):
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
    missing = [name for name in NAMES if name not in values]
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
        try:
            arr = np.asarray(values[name], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"Genome file entry 'values.{name}' ({_DESCRIPTIONS[name]}): "
                             f"expected numbers (nested lists), got {values[name]!r:.80}.") from None
        if isinstance(values[name], bool) or arr.dtype == object:
            raise ValueError(f"Genome file entry 'values.{name}': expected numbers, got "
                             f"{values[name]!r:.80}.")
    if data.get("config") is not None:
        _as_config(data["config"], "config")
    for key in ("init_scale", "logit_scale"):
        if data.get(key) is not None:
            _as_float(data[key], key)
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
    from blur_keras.config import BlurConfig

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


def select_layer(params, layer, per_layer):
    """The entries that layer pair ``layer`` uses (identity for a shared genome)."""
    if not per_layer:
        return params
    return {name: tf.gather(v, layer, axis=len(v.shape) - _CORE_RANK[name] - 1)
            for name, v in params.items()}


def align_to_population(params, num_population_axes):
    """Give every entry exactly ``num_population_axes`` leading axes.

    Genome axes are *left-aligned* with the population axes of the synapses:
    a genome ``[S, k, k]`` with synapses ``[S, R, n, m, k]`` becomes
    ``[S, 1, k, k]`` so it broadcasts over the replica axis.
    """
    out = {}
    for name, v in params.items():
        v = tf.convert_to_tensor(v)
        lead = len(v.shape) - _CORE_RANK[name]
        if lead > num_population_axes:
            raise ValueError(
                f"Genome entry {name!r} has {lead} leading (species) axes but the synapses "
                f"have only {num_population_axes} population axes.")
        shape = tf.concat([tf.shape(v)[:lead], tf.ones([num_population_axes - lead], tf.int32),
                           tf.shape(v)[lead:]], axis=0)
        out[name] = tf.reshape(v, shape) if lead < num_population_axes else v
    return out


@keras.saving.register_keras_serializable(package="blur_keras")
class Genome(keras.layers.Layer):
    """The learned update rule, as Keras variables.

    Args:
      k: number of neuron and synapse states (≥ 2).
      num_layers: ``None`` for one genome shared by all layer pairs (default);
        an int for a per-layer genome with that many layer pairs.
      species: ``None``, or the size of a leading species axis (SPEC §6).
      values: optional dict name -> array; missing entries take neutral
        defaults (identity transforms, keeps 1, neuron update 1, synapse
        update −1e-3), broadcast to the full shape.
    """

    def __init__(self, k, num_layers=None, species=None, values=None, trainable=True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
            raise ValueError(f"Genome needs k (number of states) to be an int >= 2, got {k!r}.")
        for arg, val in (("num_layers", num_layers), ("species", species)):
            if val is not None and (not isinstance(val, (int, np.integer)) or val < 1):
                raise ValueError(f"Genome {arg} must be None or a positive int, got {val!r}.")
        self.k = int(k)
        self.num_layers = None if num_layers is None else int(num_layers)
        self.species = None if species is None else int(species)
        full = self._expand_values(values or {})
        self._vars = {}
        for name in NAMES:
            self._vars[name] = self.add_weight(
                name=name, shape=full[name].shape,
                initializer=keras.initializers.Zeros(), trainable=True)
            self._vars[name].assign(full[name])
        self.built = True

    # -- shapes and values -------------------------------------------------
    @property
    def per_layer(self):
        return self.num_layers is not None

    @property
    def leading_shape(self):
        lead = () if self.species is None else (self.species,)
        return lead + (() if self.num_layers is None else (self.num_layers,))

    def shape_of(self, name):
        return self.leading_shape + core_shape(name, self.k)

    def _expand_values(self, values):
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise ValueError(f"Unknown genome entries {unknown}; known: {list(NAMES)}.")
        base = default_values(self.k)
        full = {}
        for name in NAMES:
            given = values.get(name, base[name])
            arr = np.asarray(given, dtype=self.variable_dtype)
            target = self.shape_of(name)
            try:
                arr = np.broadcast_to(arr, target).copy()
            except ValueError:
                raise ValueError(
                    f"Genome entry {name!r} ({_DESCRIPTIONS[name]}) has shape {arr.shape}; "
                    f"expected {target} (k={self.k}, num_layers={self.num_layers}, "
                    f"species={self.species}) or a shape that broadcasts to it.") from None
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Genome entry {name!r} ({_DESCRIPTIONS[name]}) contains "
                                 f"non-finite values (NaN or Inf): {arr.tolist()}.")
            full[name] = arr
        return full

    def params(self, dtype=None):
        """The genome as a dict name -> tensor (differentiable w.r.t. the variables),
        cast to ``dtype`` when given (a float32 genome runs a float64 network exactly)."""
        return {name: tf.convert_to_tensor(v) if dtype is None else tf.cast(v, dtype)
                for name, v in self._vars.items()}

    def variable(self, name):
        return self._vars[name]

    def numpy(self):
        return {name: np.array(v.numpy()) for name, v in self._vars.items()}

    def assign(self, values):
        """Set entries from a dict of arrays (checked like the constructor)."""
        full = self._expand_values({**self.numpy(), **values})
        for name, arr in full.items():
            self._vars[name].assign(arr)

    def check_finite(self):
        """Raise ValueError naming the first non-finite entry."""
        for name, arr in self.numpy().items():
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Genome {self.name!r}: entry {name!r} ({_DESCRIPTIONS[name]}) "
                                 f"is not finite: {arr.tolist()}.")

    def call(self, inputs=None):
        raise TypeError("A Genome is not called on data; pass it to BlurModel or use "
                        "genome.params() with the functions in blur_keras.inner.")

    # -- serialisation ----------------------------------------------------
    # What a genome file carries besides its numbers (SPEC §1 needs the switches to mean
    # anything); ``None`` when unknown (an old values-only file, or a genome built in code).
    config = None        # the BlurConfig it was trained with
    init_scale = None    # synapse initialisation scale of the networks it trained
    logit_scale = None   # logit scale of the meta-loss it was trained under
    provenance = None    # dict: task, sizes, T, meta-steps, seed, package version, ...

    def with_metadata(self, config=None, init_scale=None, logit_scale=None, provenance=None):
        """Attach the conventions the genome was trained under (returns ``self``)."""
        if config is not None:
            self.config = _as_config(config, "config")
        if init_scale is not None:
            self.init_scale = _as_float(init_scale, "init_scale")
        if logit_scale is not None:
            self.logit_scale = _as_float(logit_scale, "logit_scale")
        if provenance is not None:
            if not isinstance(provenance, dict):
                raise ValueError(f"Genome provenance must be a dict, got {provenance!r}.")
            self.provenance = json.loads(json.dumps(provenance))
        return self

    def to_dict(self):
        """Everything needed to use the genome again (``from_dict`` inverts it)."""
        out = {"format": FILE_FORMAT, "k": self.k, "num_layers": self.num_layers,
               "species": self.species,
               "values": {name: arr.tolist() for name, arr in self.numpy().items()}}
        if self.config is not None:
            out["config"] = self.config.to_dict()
        for key in ("init_scale", "logit_scale"):
            if getattr(self, key) is not None:
                out[key] = float(getattr(self, key))
        if self.provenance is not None:
            out["provenance"] = dict(self.provenance)
        return out

    @classmethod
    def from_dict(cls, data, **kwargs):
        """A genome from ``to_dict``'s output; strict: every problem is a ``ValueError``
        naming the key, the value received and what is expected.

        Old values-only dicts (``k``, ``num_layers``, ``species``, ``values``) load with
        ``config`` etc. left ``None``.
        """
        data = _check_genome_dict(data)
        genome = cls(k=data["k"], num_layers=data.get("num_layers"),
                     species=data.get("species"), values=data["values"], **kwargs)
        return genome.with_metadata(config=data.get("config"), init_scale=data.get("init_scale"),
                                    logit_scale=data.get("logit_scale"),
                                    provenance=data.get("provenance"))

    def to_json(self):
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text, **kwargs):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"Genome JSON is not valid JSON ({err}).") from None
        return cls.from_dict(data, **kwargs)

    def save_json(self, path):
        with open(path, "w") as fh:
            fh.write(self.to_json())

    @classmethod
    def load_json(cls, path, **kwargs):
        with open(path) as fh:
            text = fh.read()
        try:
            return cls.from_json(text, **kwargs)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def get_config(self):
        config = super().get_config()
        config.update(self.to_dict())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("dtype", None)
        layer_kwargs = {key: config.pop(key) for key in ("name", "trainable") if key in config}
        return cls.from_dict(config, **layer_kwargs)

    def species_member(self, index):
        """A species-free Genome holding species ``index``."""
        if self.species is None:
            raise ValueError("This genome has no species axis.")
        member = Genome(self.k, num_layers=self.num_layers,
                        values={n: a[index] for n, a in self.numpy().items()})
        return member.with_metadata(self.config, self.init_scale, self.logit_scale,
                                    self.provenance)

    # -- presets ----------------------------------------------------------
    @classmethod
    def backprop(cls, learning_rate, k=2, num_layers=None, species=None, **kwargs):
        """The genome that makes a BLUR step an SGD step (SPEC §4; k must be 2).

        Use it with ``BlurConfig.backprop()``.
        """
        if k != 2:
            raise ValueError(f"The backprop genome exists for k=2 only, got k={k}.")
        values = {
            "nu": [[1.0, 1.0], [0.0, 0.0]], "mu": np.eye(2), "pre": np.eye(2),
            "post": [[0.0, 1.0], [1.0, 0.0]], "f": 1.0, "eta": 1.0, "f_syn": 1.0,
            "eta_syn": -float(learning_rate),
        }
        return cls(k, num_layers=num_layers, species=species, values=values, **kwargs)

    @classmethod
    def random(cls, k, seed=0, num_layers=None, species=None, transform_std=1.0,
               neuron_keep=1.0, neuron_update=1.0, synapse_keep=1.0, synapse_update=-1e-3,
               same_start=True, **kwargs):
        """The paper's random start: transforms ~ N(0, transform_std²), keeps 1,
        neuron update 1, synapse update −1e-3.

        With a species axis and ``same_start`` (the paper's choice) every
        species starts from the same draw (one draw, broadcast over species).
        """
        rng = np.random.default_rng(seed)
        lead = () if num_layers is None else (num_layers,)
        if species is not None and not same_start:
            lead = (species,) + lead
        values = {name: rng.normal(0.0, transform_std, lead + (k, k))
                  for name in ("nu", "mu", "pre", "post")}
        values.update(f=neuron_keep, eta=neuron_update, f_syn=synapse_keep,
                      eta_syn=synapse_update)
        return cls(k, num_layers=num_layers, species=species, values=values, **kwargs)
