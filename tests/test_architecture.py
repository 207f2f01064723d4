"""The shape of the package (docs/architecture.md): layers that only point down, no import cycle, no private name
imported from another module. Read from the source (every import statement, also inside functions), so a
violation fails here before it can fail at run time in some import order."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Top to bottom. A module may import its own package, or a package of a lower layer; the bottom layer's
# small modules may import each other (they form no cycle).
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"commands"},
    {"runs", "recipes"},
    {"training", "explain"},
    {"inference"},
    {"ensemble"},
    {"evaluation"},
    {"models"},
    {"losses"},
    {"data"},
    {"cxrlt", "config", "registry", "params", "labels", "layout", "io", "errors", "ownership", "processes",
     "progress", "seeds"},
]
BOTTOM = len(LAYERS) - 1


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "cxrlt").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported cxrlt module, names taken from it) for every import statement of the module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("cxrlt")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cxrlt") and not node.level:
            names = [alias.name for alias in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules]
            found.append((node.module, [n for n in names if f"{node.module}.{n}" not in modules]))
            found += [(module, []) for module in submodules]
    return [(target, names) for target, names in found if target in modules and target != name]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cxrlt"


def _layer(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(f"package or module cxrlt.{package} is in no layer of tests/test_architecture.py (and "
                         "docs/architecture.md): add it where it belongs")


_MODULES = _modules()
IMPORTS: dict[str, list[tuple[str, list[str]]]] = {name: _imports(name, path, _MODULES) for name, path in _MODULES.items()}


def test_imports_only_point_down_the_layers():
    upward = []
    for module, imports in IMPORTS.items():
        source = _package(module)
        for target, _ in imports:
            destination = _package(target)
            same = destination == source or (_layer(source) == _layer(destination) == BOTTOM)
            if not same and _layer(destination) <= _layer(source):
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = {module: {target for target, _ in imports} for module, imports in IMPORTS.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_no_private_name_is_imported_from_another_module():
    private = [f"{module} imports {name} from {target}" for module, imports in IMPORTS.items()
               for target, names in imports for name in names
               if name.startswith("_") and not name.startswith("__")]
    assert not private, "\n".join(sorted(private))


def test_every_package_has_a_layer_and_the_docs_name_them_all():
    docs = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for module in IMPORTS:
        package = _package(module)
        _layer(package)
        assert package == "cxrlt" or f"`{package}" in docs, f"docs/architecture.md does not mention {package}"


TESTS = Path(__file__).resolve().parent
# Test folders that mirror no package: whole-toolkit runs as users launch them, and the benchmark scripts.
NOT_PACKAGES = {"integration", "benchmarks"}


def test_test_folders_mirror_the_packages_and_no_test_module_imports_another():
    test_files = sorted(TESTS.rglob("test_*.py"))
    for folder in {path.parent.relative_to(TESTS) for path in test_files} - {Path(".")}:
        if folder.parts[0] not in NOT_PACKAGES:
            assert (SRC / "cxrlt" / folder / "__init__.py").exists(), f"tests/{folder} mirrors no package of src/cxrlt"
    names = [path.name for path in test_files]
    assert len(names) == len(set(names)), "two test files share a name (pytest imports them by file name)"
    test_modules = {path.stem for path in test_files}
    crossing = [f"{path.relative_to(TESTS)} imports {node.module if isinstance(node, ast.ImportFrom) else alias.name}"
                for path in test_files for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names
                if (node.module if isinstance(node, ast.ImportFrom) else alias.name) in test_modules]
    assert not crossing, "shared test code belongs in a helper module of tests/:\n" + "\n".join(crossing)
