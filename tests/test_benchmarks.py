"""The layout benchmark measures what it says: its restated inner step is the library's."""

import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks",
                                                                     name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_state_layout_step_restates_the_library_inner_step():
    bench = _load("state_layout_step")
    # raises unless [k, B, n] gives inner_step's bits and [B, n, k] its numbers (1e-5)
    bench.check_against_library(bench.genome_params(), np.random.default_rng(3))


def test_the_check_catches_a_different_step():
    bench = _load("state_layout_step")
    original = bench.step

    def wrong_step(L, p, ws, x, t):  # another synapse update than inner_step's
        return original(L, {**p, "eta_syn": p["eta_syn"] * 1.5}, ws, x, t)

    bench.step = wrong_step
    try:
        bench.check_against_library(bench.genome_params(), np.random.default_rng(3))
    except AssertionError:
        return
    finally:
        bench.step = original
    raise AssertionError("check_against_library accepted a step with another synapse update")
