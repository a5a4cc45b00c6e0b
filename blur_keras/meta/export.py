"""Export a learned rule as a SavedModel usable without blur_keras.

The module holds the genome as variables and three signatures, with the
synapses passed as a flat list ``W^0, V^0, W^1, V^1, …`` (no population
axes):

* ``init(seed)`` -> the flat synapses of a fresh network;
* ``train_step(*synapses, x, y)`` -> the synapses after one BLUR inner step on
  the batch ``x [B, n_0]`` with integer labels ``y [B]``;
* ``predict(*synapses, x)`` -> ``[B, n_L]`` (state 0 of the last layer);
* ``genome()`` -> dict of the genome entries.

Load with ``tf.saved_model.load(path)``; nothing of blur_keras is imported.
"""

import json
import os

import tensorflow as tf

from blur_keras.inner import inner_step, predict
from blur_keras.meta.unroll import pm1_targets
from blur_keras.synapses import init_synapses

__all__ = ["LearnedRule", "export_saved_model"]


class LearnedRule(tf.Module):
    """A genome (no species axis) with ``init``/``train_step``/``predict`` functions."""

    def __init__(self, genome_values, config, sizes, init_scale=1.0, per_layer=False):
        super().__init__(name="learned_rule")
        self.sizes = tuple(int(s) for s in sizes)
        self.k = int(genome_values["nu"].shape[-1])
        self._config, self._per_layer, self._init_scale = config, per_layer, float(init_scale)
        self.genome_vars = {n: tf.Variable(v, name=n, trainable=False)
                            for n, v in sorted(genome_values.items())}
        self.config_json = tf.Variable(json.dumps(config.to_dict()), trainable=False)
        syn_specs = []
        for n, m in zip(self.sizes[:-1], self.sizes[1:]):
            syn_specs += [tf.TensorSpec([n + 1, m, self.k], tf.float32),
                          tf.TensorSpec([m, n, self.k], tf.float32)]
        x_spec = tf.TensorSpec([None, self.sizes[0]], tf.float32, name="x")
        y_spec = tf.TensorSpec([None], tf.int32, name="y")
        self.init = tf.function(self._init, input_signature=[tf.TensorSpec([], tf.int64)],
                                autograph=False)
        self.train_step = tf.function(self._train_step,
                                      input_signature=syn_specs + [x_spec, y_spec],
                                      autograph=False)
        self.predict = tf.function(self._predict, input_signature=syn_specs + [x_spec],
                                   autograph=False)
        self.genome = tf.function(self._genome, input_signature=[], autograph=False)

    def _params(self):
        return {n: tf.convert_to_tensor(v) for n, v in self.genome_vars.items()}

    def _pack(self, flat):
        return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))

    def _init(self, seed):
        synapses = init_synapses(seed, self.sizes, self.k, (), self._config, self._init_scale)
        return [t for pair in synapses for t in pair]

    def _train_step(self, *args):
        *flat, x, y = args
        targets = pm1_targets(y, self.sizes[-1])
        new, _ = inner_step(self._params(), self._pack(flat), x, targets, self._config,
                            self._per_layer)
        return [t for pair in new for t in pair]

    def _predict(self, *args):
        *flat, x = args
        return predict(self._params(), self._pack(flat), x, self._config, self._per_layer)

    def _genome(self):
        return self._params()


def export_saved_model(path, genome_values, config, sizes, init_scale=1.0, per_layer=False):
    """Write the SavedModel of a species-free genome to ``path``; returns ``path``."""
    module = LearnedRule(genome_values, config, sizes, init_scale, per_layer)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.saved_model.save(module, path, signatures={
        "train_step": module.train_step.get_concrete_function(),
        "predict": module.predict.get_concrete_function(),
    })
    return path
