"""The meta-objective: a population of genomes unrolled through T inner steps, and its loss."""
