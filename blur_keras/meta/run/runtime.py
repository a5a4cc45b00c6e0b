"""Process settings for TensorFlow that the entry points (``train/``, ``benchmarks/``) apply.

TensorFlow's default CPU allocator hands large freed buffers back to the operating system, so
every meta-step maps its buffers afresh and takes a page fault on each 4 kB page it first
touches: 13,300 faults and about 35 ms of kernel time per meta-step in the setting of ``benchmarks/meta_step.py``, where
the meta-step takes 65 ms with pooled memory (docs/benchmarks.md). TensorFlow's
BFC allocator keeps freed memory for reuse: no faults after the first step, the same numbers.

TensorFlow reads ``TF_CPU_ALLOCATOR_USE_BFC`` when it creates its CPU device, at its first op.
``pool_cpu_memory`` must run before that; importing TensorFlow first is fine.
"""

import os

__all__ = ["POOLED_CPU_ALLOCATOR", "pool_cpu_memory", "cpu_memory_pooled"]

POOLED_CPU_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"


def pool_cpu_memory():
    """Ask TensorFlow for its pooling (BFC) CPU allocator, unless the environment already
    chose one (``TF_CPU_ALLOCATOR_USE_BFC=false`` keeps the default allocator)."""
    os.environ.setdefault(POOLED_CPU_ALLOCATOR, "true")


def cpu_memory_pooled():
    """Whether TensorFlow's CPU device allocates from the pool (creates the device if it does
    not exist yet). Under oneDNN (``TF_ENABLE_ONEDNN_OPTS=1``, TensorFlow's default on CPUs
    with AVX-512) its own allocator pools large buffers whatever ``TF_CPU_ALLOCATOR_USE_BFC``
    says, and this is True."""
    import tensorflow as tf

    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # the default allocator keeps no statistics
        return False
    return True
