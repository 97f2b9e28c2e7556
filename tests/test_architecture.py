"""The package's shape, read from its source: no import cycles, one owner per file-name
contract, tests that share builders through tests/support rather than through each other."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "emomatch"
TESTS = Path(__file__).resolve().parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, package: bool) -> Iterator[str]:
    """Every module name an ``import``/``from`` statement of the file names, those inside
    functions included, those under ``if TYPE_CHECKING:`` left out (never run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a import b`` counts ``a.b`` where
    that is a module, else ``a``)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        targets = set()
        for imported in _imported_names(ast.parse(path.read_text()), name, package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_through_an_import_inside_a_function(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    graph = import_graph(pkg)
    assert graph["pkg.c"] == set()
    assert find_cycle(graph) in (
        ["pkg.a", "pkg.sub.b", "pkg.a"],
        ["pkg.sub.b", "pkg.a", "pkg.sub.b"],
    )


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def _string_literals(path: Path, value: str) -> int:
    tree = ast.parse(path.read_text())
    return sum(isinstance(node, ast.Constant) and node.value == value for node in ast.walk(tree))


def test_the_run_folder_names_are_spelled_in_one_place() -> None:
    for name in ("metrics.json", "best.ckpt", "last.ckpt", "selected.ckpt"):
        spelled = [p for p in PACKAGE.rglob("*.py") if _string_literals(p, name)]
        assert [p.name for p in spelled] == ["rundir.py"], name


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in TESTS.rglob("*.py"):
        for imported in _imported_names(ast.parse(path.read_text()), "tests.x", False):
            if imported.split(".")[-1].startswith("test_") or imported.startswith("test_"):
                offenders.append(f"{path.relative_to(TESTS)} imports {imported}")
    assert offenders == []


def test_a_config_is_read_and_checked_without_torch(tmp_path) -> None:
    """The measure names a config may give are known below the model, so reading and checking
    a YAML file (every command does it first) does not import torch."""
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text("data: {store: s}\nloss: {measure: batch}\n")
    code = (
        "import sys; from emomatch.config import load_config; "
        f"assert load_config({str(config)!r}).loss.measure == 'batch'; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_shipped_measures_are_the_registered_ones() -> None:
    from emomatch.domain import BUILTIN_MEASURES
    from emomatch.model.matching import MEASURES

    assert sorted(BUILTIN_MEASURES) == MEASURES.names()
