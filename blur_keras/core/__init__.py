"""The pure core: one BLUR inner step as pure TensorFlow functions (docs/spec.md §1–§3, §6).

States and synapses in, states and synapses out; no Keras, no loss, no gradient inside.
``step`` (one inner step, forward, feedback, backward, synapse update) is built from
``forward``, ``backward``, ``feedback`` and ``synapses``; ``step_reverse`` (its hand-derived
reverse, for meta-gradients) differentiates what those return; ``states``, ``neurons``,
``normalization``, ``activations`` and ``layout`` are their pieces; ``config`` and
``genome_spec`` say what a rule may set.
"""
