"""Judging a rule: the transfer suite against tuned baselines, the long-run ``fit`` check,
analysis of trained synapses, and plots."""
