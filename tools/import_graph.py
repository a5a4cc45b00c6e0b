"""Draw the import graph of the blur_keras package as an SVG (no graphviz needed).

    python tools/import_graph.py                 # writes docs/import_graph.svg
    python tools/import_graph.py --out graph.svg

Every module of ``blur_keras/`` is read with ``ast`` (nothing is imported). Modules are
grouped by sub-package (core, rules, keras, evaluation, meta.objective, meta.outer, meta.run,
data; ``blur_keras`` for the package's ``__init__.py``, the public API; ``meta`` for
``blur_keras/meta/__init__.py``; ``files`` for ``blur_keras/files.py``). A box per group
lists its modules; the boxes stand in one column, every group above the groups it imports
from. An arrow, in the colour of the importing group, runs on a lane of its own from the
importer's box down to the imported one ("imports from"; dashed when it points up: a cycle),
labelled with the number of (importing module, imported module) pairs. The output is a pure
function of the source tree, so ``tests/test_import_graph.py`` checks that the committed
picture is current.
"""

import argparse
import ast
import os
from xml.sax.saxutils import escape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "blur_keras"
DEFAULT_OUT = os.path.join(REPO, "docs", "import_graph.svg")

# sub-packages whose modules form one group, most specific first
GROUPS = ("meta.objective", "meta.outer", "meta.run", "meta", "core", "rules", "keras",
          "evaluation", "data")
TOP = PACKAGE  # the group of the package's __init__.py

MODULE_WIDTH, MODULES_PER_ROW = 120, 5
BOX_WIDTH, LINE, PAD, TITLE, BOX_GAP, LANE_GAP, MARGIN = 610, 15, 8, 20, 22, 16, 20
CAPTION = ("An arrow: imports from (dashed: against the order, a cycle); its number: the pairs "
           "(importing module, imported module). Regenerate: python tools/import_graph.py")
# one colour per group (its box and the arrows it draws), in the order of the sorted names
PALETTE = ("#1f4e9c", "#b03a2e", "#1e8449", "#7d3c98", "#b9770e", "#117a8b", "#6e2c00",
           "#34495e", "#c2185b", "#2e7d32", "#5d4037")


def module_names(root):
    """Dotted names (``core.step``, ``keras``…, relative to the package) of every module
    under ``root/blur_keras``; a package is named by its folder (its ``__init__.py``)."""
    names = {}
    base = os.path.join(root, PACKAGE)
    for folder, dirs, files in os.walk(base):
        dirs.sort()
        rel = os.path.relpath(folder, base).replace(os.sep, ".")
        prefix = "" if rel == "." else rel
        for name in sorted(files):
            if name.endswith(".py"):
                stem = name[:-3]
                dotted = prefix if stem == "__init__" else ".".join(p for p in (prefix, stem) if p)
                names[dotted] = os.path.join(folder, name)
    return names


def group_of(module):
    """The group a module belongs to: one of ``GROUPS``; ``TOP`` for the package's
    ``__init__.py`` (the public API); a top-level module of its own (``files``)."""
    for group in GROUPS:
        if module == group or module.startswith(group + "."):
            return group
    return module.partition(".")[0] or TOP


def _imported_names(node, module, is_package):
    """Absolute dotted names an import node names: ``import a.b`` names ``a.b``; ``from a
    import b`` names ``a.b`` (a module, or a name of ``a`` that the caller resolves to ``a``);
    relative imports are resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = [PACKAGE] + (module.split(".") if module else [])
        parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" for alias in node.names]


def imports_of(module, path, known):
    """The package modules ``module`` imports (anywhere in the file, lazy imports too): a
    name that is not a module stands for the module that defines it."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for name in _imported_names(node, module, path.endswith("__init__.py")):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            inner = name[len(PACKAGE) + 1:]
            while inner not in known:
                inner = inner.rpartition(".")[0]
            if inner != module:
                found.add(inner)
    return found


def group_edges(root):
    """``(groups {name: [modules]}, edges {(importer group, imported group): count})``; a
    package's ``__init__.py`` is listed as ``<package>.__init__``."""
    names = module_names(root)
    groups, edges = {}, {}
    for module in sorted(names):
        is_init = names[module].endswith("__init__.py")
        groups.setdefault(group_of(module), []).append(
            f"{module}.__init__".lstrip(".") if is_init else module)
        for target in imports_of(module, names[module], names):
            pair = (group_of(module), group_of(target))
            if pair[0] != pair[1]:
                edges[pair] = edges.get(pair, 0) + 1
    return groups, edges


def ranks(groups, edges):
    """Rank of each group: 0 for groups that import no other group, else one more than the
    highest rank it imports from (edges that close a cycle are left out, in a fixed order)."""
    rank, visiting = {}, set()

    def visit(group):
        if group in rank:
            return rank[group]
        if group in visiting:  # a cycle: this edge does not raise the rank
            return -1
        visiting.add(group)
        below = [visit(t) for (s, t) in sorted(edges) if s == group]
        visiting.discard(group)
        rank[group] = 1 + max(below, default=-1)
        return rank[group]

    for group in sorted(groups):
        visit(group)
    return rank


def _box_height(modules):
    rows = (len(modules) + MODULES_PER_ROW - 1) // MODULES_PER_ROW
    return TITLE + PAD + rows * LINE + PAD


def layout(groups, rank):
    """``({group: (x, y, width, height)}, height)``: one column, importers above what they
    import (highest rank first, then by name)."""
    order = sorted(groups, key=lambda g: (-rank[g], g))
    boxes, y = {}, MARGIN
    for group in order:
        boxes[group] = (MARGIN, y, BOX_WIDTH, _box_height(groups[group]))
        y += boxes[group][3] + BOX_GAP
    return boxes, y - BOX_GAP + MARGIN + LINE


def arcs(boxes, edges):
    """``{(source, target): (y out, y in, lane)}``: every arrow leaves the right side of the
    importer's box and enters the right side of the imported one along a vertical lane of
    its own, shorter arrows on inner lanes. On a box's side the arrows that enter sit above
    those that leave, and the outer ones nearer the middle, so that the arrows of one box do
    not cross each other."""
    span = {e: abs(boxes[e[1]][1] - boxes[e[0]][1]) for e in edges}
    lane = {e: i for i, e in enumerate(sorted(edges, key=lambda e: (span[e], e)))}
    ends = {}
    for e in sorted(edges):
        ends.setdefault(e[0], []).append(("out", e))
        ends.setdefault(e[1], []).append(("in", e))
    ys = {}
    for group, items in ends.items():
        _, y, _, h = boxes[group]
        entering = sorted((i for i in items if i[0] == "in"), key=lambda i: lane[i[1]])
        leaving = sorted((i for i in items if i[0] == "out"), key=lambda i: -lane[i[1]])
        ordered = entering + leaving
        for i, end in enumerate(ordered):
            ys[end] = y + h * (i + 1) / (len(ordered) + 1)
    return {e: (ys[("out", e)], ys[("in", e)], lane[e]) for e in edges}


def _box_svg(group, modules, box, color):
    x, y, w, h = box
    out = [f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" class="box" '
           f'style="stroke:{color}"/>',
           f'<text x="{x + PAD}" y="{y + TITLE - 4}" class="title" style="fill:{color}">'
           f'{escape(group)} ({len(modules)} module{"s" if len(modules) > 1 else ""})</text>']
    for i, module in enumerate(modules):
        row, column = divmod(i, MODULES_PER_ROW)
        short = module[len(group) + 1:] if module.startswith(group + ".") else module
        out.append(f'<text x="{x + PAD + column * MODULE_WIDTH}" '
                   f'y="{y + TITLE + PAD + (row + 1) * LINE - 3}" class="module">'
                   f'{escape(short)}</text>')
    return out


def _edge_svg(arc, count, color):
    """An arrow from the importer's box round its lane to the imported box, its count on the
    lane (a dashed arrow points up: it closes a cycle)."""
    y1, y2, lane = arc
    x0 = MARGIN + BOX_WIDTH
    xl = x0 + LANE_GAP * (lane + 1)
    turn = 6 if y2 >= y1 else -6
    path = (f'<path d="M{x0},{y1:.1f} H{xl - 6} Q{xl},{y1:.1f} {xl},{y1 + turn:.1f} '
            f'V{y2 - turn:.1f} Q{xl},{y2:.1f} {xl - 6},{y2:.1f} H{x0 + 1}" '
            f'class="{"edge" if y2 >= y1 else "cycle"}" style="stroke:{color}" '
            'marker-end="url(#arrow)"/>')
    label = (f'<text x="{xl}" y="{(y1 + y2) / 2 + 4:.1f}" class="count" style="fill:{color}">'
             f'{count}</text>')
    return [path], [label]


def render(groups, edges):
    """The SVG text of the graph."""
    boxes, height = layout(groups, ranks(groups, edges))
    width = MARGIN + BOX_WIDTH + LANE_GAP * (len(edges) + 1) + MARGIN
    colors = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(sorted(groups))}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>.box{fill:#f6f7fa;stroke-width:1.5}"
        ".title{font-size:13px;font-weight:bold}"
        ".module{font-size:11px;fill:#333}"
        ".edge{fill:none;stroke-width:1.3}"
        ".cycle{fill:none;stroke-width:1.3;stroke-dasharray:5 3}"
        ".count{font-size:11px;font-weight:bold;text-anchor:middle;"
        "paint-order:stroke;stroke:#fff;stroke-width:4px}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#555"/></marker></defs>',
    ]
    placed, labels = arcs(boxes, edges), []
    for edge, count in sorted(edges.items()):
        path, label = _edge_svg(placed[edge], count, colors[edge[0]])
        parts += path
        labels += label
    for group in sorted(groups):
        parts += _box_svg(group, groups[group], boxes[group], colors[group])
    parts += labels  # on top of the arrows
    parts.append(f'<text x="{MARGIN}" y="{height - 6}" class="module">{escape(CAPTION)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the SVG")
    args = parser.parse_args(argv)
    svg = render(*group_edges(REPO))
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(svg)
    print(f"wrote {args.out} ({len(svg)} bytes)")


if __name__ == "__main__":
    main()
