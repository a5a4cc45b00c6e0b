"""Structure the design promises: the pure core imports no Keras."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "blur_keras")
PURE_CORE = ("states", "forward", "backward", "feedback", "synapses", "normalization",
             "activations", "inner", "checks", "config", "genome_spec", "gradient")


def _imports(module):
    """Top-level modules imported by ``blur_keras/<module>.py`` (absolute names)."""
    with open(os.path.join(PACKAGE, *module.split(".")) + ".py") as fh:
        tree = ast.parse(fh.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if node.module == "blur_keras")
    return names


def _closure(module):
    """Every module reachable from ``module`` through blur_keras imports."""
    seen, todo, external = set(), [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imports(name):
            if imported.startswith("blur_keras."):
                inner = imported[len("blur_keras."):]
                if os.path.exists(os.path.join(PACKAGE, *inner.split(".")) + ".py"):
                    todo.append(inner)
            else:
                external.add(imported.split(".")[0])
    return seen, external


@pytest.mark.parametrize("module", PURE_CORE)
def test_pure_core_imports_no_keras(module):
    modules, external = _closure(module)
    assert "keras" not in external, (module, sorted(modules))
    assert modules <= set(PURE_CORE), sorted(modules - set(PURE_CORE))
