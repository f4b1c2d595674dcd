"""The house by stage (DESIGN.md): imports run one way, down the journey, with no cycles.

Read with the standard library's ``ast``: every ``import`` / ``from ... import`` anywhere in a
module counts, at module level, inside functions and under ``TYPE_CHECKING`` alike (a cycle
hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LIBRARY = ROOT / "segmentation"
# Bottom to top: a package may import itself and the packages listed before it, never one
# after it. ``errors`` is the foundation every layer raises from, config included.
LAYERS = (
    "errors",
    "config",
    "runtime",
    "storage",
    "sample",
    "inputs",
    "identity",
    "features",
    "modeling",
    "value",
    "explain",
    "activation",
    "workflows",
)
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The library modules ``path`` imports (``from pkg import mod`` names the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("segmentation")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("segmentation"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found - {"segmentation"}


def _layer(module: str) -> str:
    return module.split(".")[1]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) for name, path in modules.items()}


def test_every_package_is_a_known_layer_with_a_docstring():
    packages = sorted(p.parent.name for p in LIBRARY.glob("*/__init__.py"))
    loose = sorted(p.stem for p in LIBRARY.glob("*.py") if p.stem != "__init__")
    assert set(packages) | set(loose) <= set(LAYERS), "a package or module outside LAYERS"
    for name in packages:
        doc = ast.get_docstring(ast.parse((LIBRARY / name / "__init__.py").read_text()))
        assert doc and "imports" in doc.lower(), (
            f"segmentation/{name}/__init__.py must say what it imports"
        )


def test_imports_point_down_the_journey():
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module != "segmentation"
        for target in targets
        if LAYERS.index(_layer(target)) > LAYERS.index(_layer(module))
    ]
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = _graph()
    # Tarjan-free: a depth-first search that reports the first back edge it meets.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.endswith("__init__") or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", ["segmentation", "jobs"])
def test_rooms_stay_small(folder):
    big_modules, big_functions = [], []
    for path in sorted((ROOT / folder).rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            big_modules.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big_functions.append(f"{path.relative_to(ROOT)}:{node.name}: {length}")
    assert not big_modules, f"modules over {MAX_MODULE_LINES} lines: {big_modules}"
    assert not big_functions, f"functions over {MAX_FUNCTION_LINES} lines: {big_functions}"


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The direction check can fail: a storage module importing a workflow is reported."""
    pkg = tmp_path / "segmentation" / "storage"
    pkg.mkdir(parents=True)
    bad = pkg / "bad.py"
    bad.write_text("from segmentation.workflows import train\n")
    known = {"segmentation.workflows.train"}
    targets = _imports(bad, known)
    assert targets == {"segmentation.workflows.train"}
    assert LAYERS.index(_layer(next(iter(targets)))) > LAYERS.index("storage")
