"""``Genome``: the meta-learned update rule as a Keras layer (docs/spec.md §1).

A thin stateful wrapper around the pure description in ``genome_spec`` (a
dict name -> array): one ``tf.Variable`` per entry, serialised through
``get_config``/``from_config`` and the JSON file format of ``genome_file``
(values plus the config, scales and provenance they were trained with), and
saved with the model that holds it.  ``params()`` gives the dict the pure
math consumes.
"""

import json

import keras
import numpy as np
import tensorflow as tf

from blur_keras.files import write_atomic
from blur_keras.rules.genome_file import (FILE_FORMAT, as_config, as_scale, check_genome_dict,
                                    resolve_config)
from blur_keras.core.genome_spec import (CORE_NAMES, DESCRIPTIONS, NAMES, OPTIONAL_NAMES,
                                    align_to_population, core_rank, core_shape, full_values,
                                    member, num_core_numbers, select_layer)
from blur_keras.rules.pretrained import pretrained_names, pretrained_text
from blur_keras.rules.schedule import check_schedule

__all__ = [
    "Genome", "CORE_NAMES", "OPTIONAL_NAMES", "NAMES", "core_rank", "core_shape",
    "select_layer", "align_to_population", "num_core_numbers", "resolve_config", "FILE_FORMAT",
]


@keras.saving.register_keras_serializable(package="blur_keras")
class Genome(keras.layers.Layer):
    """The learned update rule, as Keras variables.

    Args:
      k: number of neuron and synapse states (≥ 2).
      num_layers: ``None`` for one genome shared by all layer pairs (default);
        an int for a per-layer genome with that many layer pairs.
      species: ``None``, or the size of a leading species axis (docs/spec.md §6).
      values: optional dict name -> array; missing entries take neutral
        defaults (identity transforms, keeps 1, neuron update 1, synapse
        update −1e-3), broadcast to the full shape.
      trainable: the Keras flag of the entries' variables. Default ``False``: the
        rule trains the synapses and nothing is differentiated, so in a ``BlurModel``
        ``model.summary()`` counts every genome entry (the core 4k² + 4 and the optional
        ``OPTIONAL_NAMES``, used or not by the config) as a non-trainable param.
        Meta-training keeps its own variables and does not read this flag.
    """

    def __init__(self, k, num_layers=None, species=None, values=None, trainable=False, **kwargs):
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
        self.trainable = trainable
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
        return full_values(values, self.k, self.num_layers, self.species, self.variable_dtype)

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
                raise ValueError(f"Genome {self.name!r}: entry {name!r} ({DESCRIPTIONS[name]}) "
                                 f"is not finite: {arr.tolist()}.")

    def call(self, inputs=None):
        raise TypeError("A Genome is not called on data; pass it to BlurModel or use "
                        "genome.params() with the functions in blur_keras.core.step.")

    # -- serialisation ----------------------------------------------------
    # What a genome file carries besides its numbers (docs/spec.md §1 needs the switches to mean
    # anything); ``None`` when unknown (an old values-only file, or a genome built in code).
    config = None        # the BlurConfig it was trained with
    init_scale = None    # synapse initialisation scale of the networks it trained
    logit_scale = None   # logit scale of the meta-loss it was trained under
    provenance = None    # dict: task, sizes, T, meta-steps, seed, package version, ...
    schedule = ()        # ramps of synapse-update entries over the inner steps (schedule.py)

    def with_metadata(self, config=None, init_scale=None, logit_scale=None, provenance=None,
                      schedule=None):
        """Attach the conventions the genome was trained under and its schedule (a list of
        ramps, ``blur_keras.rules.schedule``; ``[]`` removes it) (returns ``self``)."""
        if config is not None:
            self.config = as_config(config, "config")
        if init_scale is not None:
            self.init_scale = as_scale(init_scale, "init_scale")
        if logit_scale is not None:
            self.logit_scale = as_scale(logit_scale, "logit_scale")
        if provenance is not None:
            if not isinstance(provenance, dict):
                raise ValueError(f"Genome provenance must be a dict, got {provenance!r}.")
            self.provenance = json.loads(json.dumps(provenance))
        if schedule is not None:
            self.schedule = check_schedule(schedule, self.k)
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
        if self.schedule:
            out["schedule"] = [ramp.to_json() for ramp in self.schedule]
        return out

    @classmethod
    def from_dict(cls, data, **kwargs):
        """A genome from ``to_dict``'s output; strict: every problem is a ``ValueError``
        naming the key, the value received and what is expected.

        Old values-only dicts (``k``, ``num_layers``, ``species``, ``values``) load with
        ``config`` etc. left ``None``.
        """
        data = check_genome_dict(data)
        genome = cls(k=data["k"], num_layers=data.get("num_layers"),
                     species=data.get("species"), values=data["values"], **kwargs)
        return genome.with_metadata(config=data.get("config"), init_scale=data.get("init_scale"),
                                    logit_scale=data.get("logit_scale"),
                                    provenance=data.get("provenance"),
                                    schedule=data.get("schedule"))

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
        """Write ``to_json()`` to ``path`` atomically (``blur_keras.files.write_atomic``)."""
        write_atomic(path, self.to_json())

    @classmethod
    def load_json(cls, path, **kwargs):
        with open(path) as fh:
            text = fh.read()
        try:
            return cls.from_json(text, **kwargs)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def pretrained(cls, name=None, **kwargs):
        """A genome shipped with the package (``blur_keras/rules/genomes/<name>.json``, or a
        variant of one with more schedule ramps), with its config, scales and provenance; no
        name: the default rule (``pretrained.DEFAULT``). An unknown name is a ``ValueError``
        listing the known."""
        return cls._pretrained_from(name, None, **kwargs)

    @staticmethod
    def pretrained_names():
        """Names ``Genome.pretrained`` accepts (sorted)."""
        return pretrained_names()

    @classmethod
    def _pretrained_from(cls, name, directory, **kwargs):
        text = pretrained_text(name, directory)
        try:
            return cls.from_json(text, **kwargs)
        except ValueError as err:
            raise ValueError(f"Pretrained genome {name!r}: {err}") from None

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
        one = Genome(self.k, num_layers=self.num_layers, values=member(self.numpy(), index))
        return one.with_metadata(self.config, self.init_scale, self.logit_scale,
                                 self.provenance, list(self.schedule))

    # -- presets ----------------------------------------------------------
    @classmethod
    def backprop(cls, learning_rate, k=2, num_layers=None, species=None, **kwargs):
        """The genome that makes a BLUR step an SGD step (docs/spec.md §4; k must be 2).

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
    def momentum(cls, learning_rate, momentum, num_layers=None, species=None, **kwargs):
        """The k=3 genome that makes a BLUR step a step of SGD with momentum β
        (``keras.optimizers.SGD(lr, momentum=β)``; docs/spec.md §8).

        Use it with ``BlurConfig.momentum()``. States 0 and 1 are the backprop genome's
        (activation and δ); synapse channels 0 and 1 hold the weight, channel 2 the velocity
        ``m ← β m − lr g``, and ``syn_mix`` adds ``β m`` to the weight before the update.
        """
        beta = float(momentum)
        values = {
            "nu": [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            "mu": np.diag([1.0, 1.0, 0.0]),
            "pre": [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            "post": [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
            "f": 1.0, "eta": 1.0, "f_syn": 1.0, "eta_syn": -float(learning_rate),
            "syn_mix": [[1.0, 0.0, beta], [0.0, 1.0, beta], [0.0, 0.0, beta]],
        }
        return cls(3, num_layers=num_layers, species=species, values=values, **kwargs)

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
