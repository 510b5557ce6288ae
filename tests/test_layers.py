"""sdviz's layers, read from the source (ast, nothing imported): the command line sits on
top, and the import graph of sdviz's modules has no cycles.

Every `import` / `from ... import` of an sdviz module is an edge, relative ones resolved,
`from pkg import name` counted as an import of the submodule `pkg.name` when that is a
module. Imports under `if TYPE_CHECKING:` never run and are left out. An edge is
"module-level" when the import runs at import time, "deferred" when it sits inside a
function (it runs at the first call). Importing `a.b` also runs `a/__init__.py`, but that
is not counted as an edge: the package `__init__`s import their children lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sdviz"
COMMANDS = ("sdviz.commands", "sdviz.cli")  # the command layer (sdviz.cli: its old name)
SHIMS = {"sdviz.lab"}  # `python -m sdviz.lab`, three lines that run sdviz.commands.lab

# Imports that close a cycle, allowed while their owners untangle them: (importer,
# imported). The tests below fail on any other cycle, and on an entry that no longer
# closes one (then delete the entry). None today.
KNOWN_CYCLES: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, deferred: bool):
    """(import node, inside a function?) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _walk(other, deferred)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, deferred
        inside = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, inside)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The sdviz modules an import statement in `module` imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    found = set()
    for name in names:
        while name and name not in MODULES:  # `import sdviz.figures.style.FORMATS`-like
            name = name.rpartition(".")[0] if name.startswith("sdviz.") else ""
        if name and name != module:
            found.add(name)
    return found


def imports() -> dict[str, dict[str, bool]]:
    """module -> {imported sdviz module: True when only deferred (inside functions)}."""
    graph: dict[str, dict[str, bool]] = {}
    for module, path in MODULES.items():
        edges: dict[str, bool] = {}
        for node, deferred in _walk(ast.parse(path.read_text(encoding="utf-8")), False):
            for target in _targets(module, node):
                edges[target] = edges.get(target, True) and deferred
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _module_level(graph: dict[str, dict[str, bool]]) -> dict[str, set[str]]:
    return {m: {t for t, deferred in edges.items() if not deferred} for m, edges in graph.items()}


def _all(graph: dict[str, dict[str, bool]]) -> dict[str, set[str]]:
    return {m: set(edges) for m, edges in graph.items()}


def test_the_walk_sees_relative_and_deferred_imports():
    graph = imports()
    assert graph["sdviz.commands.figures"]["sdviz.commands.common"] is False  # module level
    assert graph["sdviz.commands.trace"]["sdviz.pipeline"] is True  # inside run_trace
    assert "sdviz.training.recipe" in graph["sdviz.commands.train"]  # `from ..training.recipe`
    assert "sdviz.figures.image_row" in graph["sdviz.commands.trace"]


def test_nothing_below_the_command_line_imports_it():
    offenders = {
        module: sorted(t for t in edges if t.startswith(COMMANDS))
        for module, edges in imports().items()
        if not module.startswith(COMMANDS) and module not in SHIMS
    }
    assert not {m: t for m, t in offenders.items() if t}, (
        "sdviz.commands is the top layer: library modules must not import it"
    )
    assert "sdviz.cli" not in MODULES  # the command line moved to sdviz.commands


def test_no_import_cycles_at_module_level():
    found = cycles(_module_level(imports()))
    assert not found, f"import cycles among sdviz modules (module-level imports): {found}"


def test_no_new_import_cycles_counting_imports_inside_functions():
    graph = _all(imports())
    for importer, imported in KNOWN_CYCLES:
        graph.get(importer, set()).discard(imported)
    found = [sorted(c) for c in cycles(graph)]
    assert not found, f"import cycles among sdviz modules (all imports): {found}"


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v not in seen:
            seen.add(v)
            todo.extend(graph.get(v, ()))
    return False


def test_known_cycles_are_still_there():
    graph = _all(imports())
    gone = [
        (importer, imported)
        for importer, imported in sorted(KNOWN_CYCLES)
        if imported not in graph.get(importer, ()) or not _reaches(graph, imported, importer)
    ]
    assert not gone, f"these imports close no cycle any more: remove them from KNOWN_CYCLES: {gone}"


def test_readme_module_table_lists_every_module():
    """Someone new finds each module in the README's table (path, or folder + file name)."""
    readme = (ROOT.parent / "README.md").read_text()
    start = readme.index("## Where each stage lives")
    table = readme[start : readme.index("\n## ", start + 1)]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        folder = path.parent.relative_to(ROOT.parent).as_posix() + "/"
        if path.name == "__init__.py" and folder != "sdviz/tracing/":
            continue  # a package's __init__ re-exports its modules
        listed = f"`{rel}`" in table or any(
            f"`{folder}`" in row and f"`{path.name}`" in row for row in rows
        )
        if not listed:
            missing.append(rel)
    assert not missing, f"README's module table lacks: {missing}"


# The one-way flow: load and stages -> trace -> probes -> figures -> widgets -> what the
# lessons call; training sits beside them (it reads the stages), the command line on top.
LAYERS = {
    "sdviz.tracing": 1,
    "sdviz.probes": 2,
    "sdviz.figures": 3,
    "sdviz.widgets": 4,
    "sdviz.course": 5,
    "sdviz.training": 5,
    "sdviz.commands": 6,
    "sdviz.lab": 6,
}


def layer(module: str) -> int:
    """0 for `sdviz` itself, loading and the stage modules; else the rank of its package."""
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return 0


def test_no_module_imports_a_higher_layer():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in imports().items()
        for target in targets
        if module != "sdviz" and layer(target) > layer(module)
    )
    assert not upward, f"imports against the flow (move the helper down): {upward}"
