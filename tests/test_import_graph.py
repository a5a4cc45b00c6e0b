"""docs/import_graph.svg is what tools/import_graph.py draws from the package as it is now."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "import_graph", os.path.join(REPO, "tools", "import_graph.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_picture_is_current():
    tool = _tool()
    with open(os.path.join(REPO, "docs", "import_graph.svg"), encoding="utf-8") as fh:
        committed = fh.read()
    assert committed == tool.render(*tool.group_edges(REPO)), (
        "docs/import_graph.svg is stale: run python tools/import_graph.py")
    assert len(committed.encode()) < 100_000


def test_graph_reads_the_imports():
    tool = _tool()
    groups, edges = tool.group_edges(REPO)
    assert "keras.model" in groups["keras"] and "core.__init__" in groups["core"]
    assert edges[("keras", "core")] > 0  # BlurModel runs the core's step
    assert not any(source == "core" for source, _ in edges)  # the pure core imports no group
    assert tool.ranks(groups, edges)["core"] == 0
    assert tool.group_of("meta.outer.cma_es") == "meta.outer" and tool.group_of("") == "blur_keras"


def test_relative_imports_are_resolved(tmp_path):
    tool = _tool()
    package = tmp_path / "blur_keras"
    (package / "core").mkdir(parents=True)
    (package / "keras").mkdir()
    (package / "__init__.py").write_text("from .keras import model\n")
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "step.py").write_text("X = 1\n")
    (package / "keras" / "__init__.py").write_text("")
    (package / "keras" / "model.py").write_text(
        "from ..core.step import X\n\ndef f():\n    from blur_keras.core import step\n")
    groups, edges = tool.group_edges(str(tmp_path))
    assert edges == {("keras", "core"): 1, ("blur_keras", "keras"): 1}
    assert "<svg" in tool.render(groups, edges)
