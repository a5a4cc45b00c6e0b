"""Meta-training of BLUR genomes: the meta-loss, outer optimisers, checkpoints, export."""

from blur_keras.meta.unroll import meta_loss, pm1_targets, unroll

__all__ = ["meta_loss", "pm1_targets", "unroll"]
