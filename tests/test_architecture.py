"""Structure the design promises: the pure core imports no Keras."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "blur_keras")
CORE = os.path.join(PACKAGE, "core")
PURE_CORE = tuple(sorted("core." + name[:-3] for name in os.listdir(CORE)
                         if name.endswith(".py") and name != "__init__.py"))


def _path(module):
    """``blur_keras/<module>.py``, or the package's ``__init__.py``."""
    base = os.path.join(PACKAGE, *module.split("."))
    return base + ".py" if os.path.exists(base + ".py") else os.path.join(base, "__init__.py")


def _imports(module):
    """Top-level modules imported by ``blur_keras/<module>.py`` (absolute names)."""
    with open(_path(module)) as fh:
        tree = ast.parse(fh.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if os.path.exists(_path(f"{node.module}.{alias.name}"[11:]))
                         and node.module.startswith("blur_keras"))
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
                if os.path.exists(_path(inner)):
                    todo.append(inner)
            else:
                external.add(imported.split(".")[0])
    return seen, external


@pytest.mark.parametrize("module", PURE_CORE)
def test_pure_core_imports_no_keras(module):
    modules, external = _closure(module)
    assert "keras" not in external, (module, sorted(modules))
    assert modules <= set(PURE_CORE) | {"core"}, sorted(modules - set(PURE_CORE))


def test_the_baseline_engine_is_pure_tensorflow():
    """``evaluation.baselines`` (the suite's and meta-training's baselines) needs only the core."""
    modules, external = _closure("evaluation.baselines")
    assert "keras" not in external, sorted(modules)
    assert modules <= set(PURE_CORE) | {"core", "evaluation.baselines"}, sorted(modules)


@pytest.mark.parametrize("module", sorted(
    "evaluation." + name[:-3] for name in os.listdir(os.path.join(PACKAGE, "evaluation"))
    if name.endswith(".py") and name != "__init__.py"))
def test_evaluation_does_not_import_meta_training(module):
    """Meta-training may use the evaluation (its baselines, suite and plots), never the reverse."""
    modules, _ = _closure(module)
    assert not [m for m in modules if m == "meta" or m.startswith("meta.")], sorted(modules)


# -- short functions, a short experiment, no branch on the outer optimiser's name --------------
def _python_files():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in _python_files():
        with open(path) as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{os.path.relpath(path, PACKAGE)}:{node.name} ({lines} lines)")
    assert not long, long


def _compared_names(tree):
    """Names, attributes and string constants that appear in comparisons (``==``, ``in``, ...)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                for sub in ast.walk(operand):
                    if isinstance(sub, ast.Name):
                        out.add(sub.id)
                    elif isinstance(sub, ast.Attribute):
                        out.add(sub.attr)
                    elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        out.add(sub.value)
    return out


def test_experiment_is_short():
    with open(os.path.join(PACKAGE, "meta", "run", "experiment.py")) as fh:
        assert len(fh.read().splitlines()) < 250


def test_meta_train_has_at_most_8_parameters():
    """A run is composed of its parts (``blur_keras.meta.run.parts``: objective, start, outer,
    schedule, report), each a gin configurable, not configured by dozens of arguments."""
    with open(os.path.join(PACKAGE, "meta", "run", "experiment.py")) as fh:
        tree = ast.parse(fh.read())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "meta_train"]
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    assert args.vararg is None and args.kwarg is None
    assert len(names) <= 8, names


def test_no_branch_on_the_outer_optimiser_outside_outer_py():
    """Only ``meta/outer/base.py`` (where gin builds the trainer) looks at the optimiser's name."""
    for path in _python_files():
        if path.endswith(os.path.join("meta", "outer", "base.py")):
            continue
        with open(path) as fh:
            compared = _compared_names(ast.parse(fh.read()))
        assert not compared & {"outer", "cma"}, (path, compared & {"outer", "cma"})


def test_no_module_level_mutable_state_in_the_core():
    """The core's modules bind no mutable object (dict, list, set) at module level: a
    choice such as hand/autodiff is an argument, not a global switch."""
    found = []
    for module in PURE_CORE:
        with open(_path(module)) as fh:
            tree = ast.parse(fh.read())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and \
                    isinstance(node.value, (ast.Dict, ast.List, ast.Set, ast.DictComp,
                                            ast.ListComp, ast.SetComp)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if names != ["__all__"]:
                    found.append(f"{module}: {names}")
    assert not found, found


def _tf_function_calls(tree):
    """``tf.function(...)`` calls (decorators included) of a module's syntax tree."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "function"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "tf"]


def test_the_library_traces_without_autograph():
    """Every ``tf.function`` of the package passes ``autograph=False``, and the public step
    functions are marked ``do_not_convert``: a user's ``tf.function`` traces them as written."""
    import blur_keras as bk
    from blur_keras.core import network, step

    converted = []
    for path in _python_files():
        with open(path) as fh:
            tree = ast.parse(fh.read())
        for call in _tf_function_calls(tree):
            flags = {k.arg: k.value for k in call.keywords}
            if not (isinstance(flags.get("autograph"), ast.Constant)
                    and flags["autograph"].value is False):
                converted.append(f"{os.path.relpath(path, PACKAGE)}:{call.lineno}")
    assert not converted, converted
    public = [bk.inner_step, bk.forward_pass, bk.predict] + [
        getattr(module, name) for module in (step, network)
        for name in ("forward_states", "backward_states", "update_synapses", "step",
                     "inner_step", "forward_pass", "predict")]
    assert all(hasattr(fn, "autograph_info__") for fn in public)


def test_every_slow_prefix_names_a_test():
    """``conftest.SLOW`` marks tests by node-id prefix: each names a test file, or a test
    function of it, that exists (a renamed test would silently join the fast tier)."""
    from conftest import SLOW

    tests = os.path.dirname(os.path.abspath(__file__))
    for prefix in SLOW:
        path, _, name = prefix.partition("::")
        assert path.startswith("tests/") and os.path.exists(os.path.join(tests, path[6:])), prefix
        with open(os.path.join(tests, path[6:])) as fh:
            functions = {n.name for n in ast.parse(fh.read()).body if isinstance(n, ast.FunctionDef)}
        assert not name or any(f.startswith(name) for f in functions), prefix
