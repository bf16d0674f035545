"""The packages stay layered: each imports only packages below it (or beside it, without a cycle).

Every import of every module counts, those inside functions and `if TYPE_CHECKING:` blocks too. bench/ and
tests/ may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top: core is the floor (it imports nothing of the project), the `twin` CLI assembles the rest.
LAYERS = [{"core"}, {"storage", "engine"}, {"collector", "trainer"}, {"evaluation"}, {"bot"}, {"twin"}]
LAYER = {package: n for n, packages in enumerate(LAYERS) for package in packages}


def imported_packages(path: Path, package: str) -> set[str]:
    """The project's top-level packages that the module at `path`, in `package`, imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found & LAYER.keys()


def package_imports() -> dict[str, dict[str, list[str]]]:
    """{package: {imported package: [modules importing it]}} for every module of the layered packages."""
    graph: dict[str, dict[str, list[str]]] = {package: {} for package in LAYER}
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported in imported_packages(path, package) - {package}:
                graph[package].setdefault(imported, []).append(str(path.relative_to(ROOT)))
    return graph


def test_every_package_is_on_disk():
    assert all((ROOT / package / "__init__.py").is_file() for package in LAYER)


def test_no_package_imports_one_above_it():
    upward = [
        f"{module} ({package}, layer {LAYER[package]}) imports {imported} (layer {LAYER[imported]})"
        for package, imports in package_imports().items()
        for imported, modules in imports.items()
        if LAYER[imported] > LAYER[package]
        for module in modules
    ]
    assert not upward, "\n".join(upward)


def test_core_imports_nothing_of_the_project():
    assert package_imports()["core"] == {}


def test_no_import_cycle_between_packages():
    graph = package_imports()

    def cycle_from(start: str, package: str, path: list[str]) -> list[str] | None:
        for imported in graph[package]:
            if imported == start:
                return [*path, start]
            if imported not in path:
                found = cycle_from(start, imported, [*path, imported])
                if found:
                    return found
        return None

    cycles = [" → ".join(c) for start in graph if (c := cycle_from(start, start, [start]))]
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    "source, package, expected",
    [
        ("from storage import Storage", "trainer", {"storage"}),
        ("def f():\n    import evaluation.report", "trainer", {"evaluation"}),
        ("from .rounds import x", "trainer", {"trainer"}),
        ("import os, typer", "core", set()),
    ],
)
def test_imports_are_found_wherever_they_are(tmp_path, source, package, expected):
    module = tmp_path / "m.py"
    module.write_text(source)
    assert imported_packages(module, package) == expected
