"""Learned rules: the ``Genome``, its file format, schedules, the shipped genomes and the
SavedModel export of a rule."""
