"""blur_keras.meta.run.runtime: pooled CPU memory, asked for before TensorFlow's first op."""

import os
import subprocess
import sys

import pytest

import helpers
from blur_keras.meta.run import runtime
# TensorFlow and blur_keras imported first, as in the entry points
CHILD = ("import tensorflow as tf\n"
         "import blur_keras\n"
         "from blur_keras.meta.run.runtime import cpu_memory_pooled, pool_cpu_memory\n"
         "pool_cpu_memory()\n"
         "x = tf.ones([256, 256]) @ tf.ones([256, 256])\n"
         "print('POOLED', cpu_memory_pooled(), float(x[0, 0]))\n")


def _child(value, onednn=None):
    """What a fresh process reports with ``TF_CPU_ALLOCATOR_USE_BFC`` unset (None) or ``value``,
    and ``TF_ENABLE_ONEDNN_OPTS=onednn`` (None: TensorFlow's choice for this CPU; it turns
    oneDNN on for CPUs with AVX-512, whose allocator pools whatever the variable says)."""
    env = helpers.subprocess_env()
    env.pop(runtime.POOLED_CPU_ALLOCATOR, None)
    if value is not None:
        env[runtime.POOLED_CPU_ALLOCATOR] = value
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split("POOLED ")[-1].split()


@pytest.mark.process
def test_pool_cpu_memory_pools_a_fresh_process():
    assert _child(None) == ["True", "256.0"]


@pytest.mark.process
def test_an_explicit_false_keeps_the_default_allocator():
    assert _child("false", onednn="0") == ["False", "256.0"]


@pytest.mark.process
def test_onednn_pools_cpu_memory_whatever_the_variable():
    """What a CPU with AVX-512 gets by default: oneDNN's allocator pools large buffers."""
    assert _child("false", onednn="1") == ["True", "256.0"]
    assert _child(None, onednn="1") == ["True", "256.0"]


def test_pool_cpu_memory_sets_the_variable_only_when_unset(monkeypatch):
    monkeypatch.delenv(runtime.POOLED_CPU_ALLOCATOR, raising=False)
    runtime.pool_cpu_memory()
    assert os.environ[runtime.POOLED_CPU_ALLOCATOR] == "true"
    monkeypatch.setenv(runtime.POOLED_CPU_ALLOCATOR, "false")
    runtime.pool_cpu_memory()
    assert os.environ[runtime.POOLED_CPU_ALLOCATOR] == "false"
