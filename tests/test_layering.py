"""Package dependencies go one way: acl <- export <- deploy <- pipeline, with no module cycles.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["acl", "export", "deploy", "pipeline"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from pkg import mod` names a module when pkg/mod.py exists
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in ORDER}


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in ORDER for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_packages_depend_only_on_lower_packages():
    bad = []
    for mod, deps in _graph().items():
        level = ORDER.index(mod.split(".")[0])
        bad += [f"{mod} imports {d}" for d in deps if ORDER.index(d.split(".")[0]) > level]
    assert not bad, "imports against acl <- export <- deploy <- pipeline:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_between_modules():
    # A submodule importing a name from its own package's __init__ (which re-exports
    # submodules) is not a cycle worth reporting.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in _graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "module import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("pkg", ORDER)
def test_the_scan_sees_each_package(pkg):
    assert any(m.split(".")[0] == pkg for m in _graph()), f"no modules found under {pkg}/"
