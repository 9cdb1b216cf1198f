"""Every import arrow points down: the import graph of ``suite`` and ``harness``, read from the source
(function-local imports included, so a cycle hidden by a deferred import is still a cycle).

A unit is a subpackage or a top-level module (``suite.web``, ``suite.instrument``, ``harness.load``).
The rules: no cycle between units; ``suite`` (the services) never imports ``harness`` (what the runbooks
call, one layer up); production code never imports the test helpers (``suite.testing``, ``tests``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("suite", "harness")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(root: Path, name: str) -> str | None:
    """The unit a dotted name belongs to, or None when it is not one of the packages' files."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    if len(parts) == 1:
        return parts[0]
    candidate = root / parts[0] / parts[1]
    return ".".join(parts[:2]) if candidate.is_dir() or candidate.with_suffix(".py").is_file() else parts[0]


def imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, set[str]]]:
    """{module: {imported module: ...}} for every module of ``packages`` under ``root``."""
    found: dict[str, dict[str, set[str]]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(root, path)
            targets: dict[str, set[str]] = defaultdict(set)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        targets[alias.name].add(f"line {node.lineno}")
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets[node.module].add(f"line {node.lineno}")
                    for alias in node.names:  # `from suite import services` names a module too
                        targets[f"{node.module}.{alias.name}"].add(f"line {node.lineno}")
            found[module] = targets
    return found


def unit_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, list[str]]]:
    """{unit: {unit it imports: [where]}}, self-imports left out."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module, targets in imports(root, packages).items():
        source = _unit(root, module)
        for target, where in targets.items():
            unit = _unit(root, target)
            if source and unit and unit != source and unit not in packages:
                graph[source][unit].extend(f"{module} {w}" for w in sorted(where))
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def _explain(graph: dict[str, dict[str, list[str]]], component: list[str]) -> str:
    return "; ".join(f"{a} -> {b} ({', '.join(graph[a][b][:2])})" for a in component for b in component
                     if b in graph.get(a, {}))


def test_no_import_cycle_between_the_packages_rooms():
    graph = unit_graph(ROOT)
    assert "suite.web" in graph and "harness.load" in graph  # the walk saw the code
    found = cycles(graph)
    assert found == [], "\n".join(_explain(graph, c) for c in found)


def test_the_services_never_import_the_harness():
    graph = unit_graph(ROOT)
    up = {f"{a} -> {b}": where for a, targets in graph.items() if a.startswith("suite")
          for b, where in targets.items() if b.startswith("harness")}
    assert up == {}


def test_production_code_imports_no_test_helper():
    found = {}
    for module, targets in imports(ROOT).items():
        if module == "suite.testing":
            continue
        bad = {t: w for t, w in targets.items() if t == "suite.testing" or t.startswith("suite.testing.")
               or t == "tests" or t.startswith("tests.")}
        if bad:
            found[module] = bad
    assert found == {}


def test_the_named_lower_rooms_stay_below():
    """The two cycles the second structure pass broke, named, so a regression says which arrow came back."""
    graph = unit_graph(ROOT)
    assert "suite.instrument" not in graph["suite.web"] and "suite.instrument" not in graph["suite.auth"]
    assert "suite.auth" not in graph["suite.web"]  # auth uses web's error shape, web knows no auth
    assert "harness.monitor" not in graph["harness.load"]


def test_the_walk_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The check itself: two rooms importing each other, one of the imports deferred into a function."""
    pkg = tmp_path / "suite"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from suite.b import thing\n")
    (pkg / "b" / "__init__.py").write_text("def thing():\n    from suite.a import other\n    return other\n")
    (pkg / "c.py").write_text("import suite.a\n")
    graph = unit_graph(tmp_path, ("suite",))
    assert cycles(graph) == [["suite.a", "suite.b"]]
    assert "suite.b line 2" in _explain(graph, ["suite.a", "suite.b"])
    (pkg / "b" / "__init__.py").write_text("def thing():\n    return 1\n")
    assert cycles(unit_graph(tmp_path, ("suite",))) == []
