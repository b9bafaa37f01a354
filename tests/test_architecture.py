"""docs/architecture.md's rules, checked on the source: imports point one way, no cycles, no long functions."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zhijian", "training", "serving")


def _modules() -> dict[str, ast.Module]:
    return {f"{path.parent.name}.{path.stem}": ast.parse(path.read_text(encoding="utf-8")) for package in PACKAGES for path in (ROOT / package).glob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
    """The project modules a module imports anywhere in its code, inside functions too."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES and name.count(".") == 1}


GRAPH = {name: _imports(tree) for name, tree in _modules().items()}


@pytest.mark.parametrize("package, forbidden", [("zhijian", {"training", "serving"}), ("training", {"serving"}), ("serving", {"training"})])
def test_imports_point_one_way(package, forbidden):
    upward = sorted(f"{module} -> {imported}" for module, imports in GRAPH.items() if module.startswith(package + ".")
                    for imported in imports if imported.split(".")[0] in forbidden)
    assert upward == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to its start, or None (depth-first search)."""
    done, visiting = set(), []

    def visit(module):
        if module in visiting:
            return visiting[visiting.index(module):] + [module]
        if module in done:
            return None
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            if cycle := visit(imported):
                return cycle
        visiting.pop()
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module))), None)


def test_no_import_cycle_not_even_a_lazy_one():
    assert find_cycle(GRAPH) is None
    # the export's two sides: the scorer reads exports, the writer uses the scorer
    assert "zhijian.scorer" not in GRAPH["zhijian.backends"] | GRAPH["zhijian.model"] and "zhijian.export" not in GRAPH["zhijian.scorer"]


def test_the_checks_see_both_import_forms_and_a_cycle():
    assert _imports(ast.parse("from zhijian import scorer\nimport zhijian.export\n")) == {"zhijian.scorer", "zhijian.export"}
    assert find_cycle({"zhijian.export": {"zhijian.scorer"}, "zhijian.scorer": {"zhijian.export"}}) == ["zhijian.export", "zhijian.scorer", "zhijian.export"]


def test_no_function_is_longer_than_80_lines():
    long = sorted(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines" for name, tree in _modules().items() for node in ast.walk(tree)
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80)
    assert long == []
