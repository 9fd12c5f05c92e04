"""The package's shape: imports flow one way, deferred imports say why, Django stays out of ocr/ and training/.

Read from the source (ast), so nothing is imported and the rules hold for every module, loaded or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from mls_helpers import ROOT

PACKAGE = ROOT / "marker_ls_plugin"
MAX_LINES = 300
SIZE_REASON = "Size:"  # a module over MAX_LINES says why in a docstring paragraph starting with this
# Label Studio's Django apps: importing them (or Django) needs configured settings and loaded apps.
DJANGO_ROOTS = {"django", "rest_framework", "drf_spectacular", "django_rq", "rq", "core", "projects", "tasks", "ml",
                "organizations", "users", "data_import", "data_export", "io_storages", "label_studio", "webhooks",
                "data_manager", "jwt_auth", "fsm"}
PURE_PACKAGES = ("ocr", "training")  # no Django, nothing of the plugin outside themselves
# Modules that run before Django's apps are loaded; they may defer the plugin's own imports until then.
BEFORE_APPS = ("marker_ls_plugin.apps", "marker_ls_plugin.settings", "marker_ls_plugin.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


class Import:
    def __init__(self, module: str, node: ast.Import | ast.ImportFrom, targets: list[str], deferred: bool,
                 commented: bool):
        self.module, self.node, self.targets, self.deferred, self.commented = (module, node, targets, deferred,
                                                                               commented)

    def __repr__(self) -> str:
        return f"{self.module}:{self.node.lineno} {ast.unparse(self.node)}"


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")[: len(module.split(".")) - (0 if is_package else 1) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    # "from package import module" imports the module; "from module import name" the module.
    return [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source for alias in node.names]


def _imports(module: str, path: Path) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                around = lines[child.lineno - 2: child.end_lineno]  # the line above and the statement
                commented = any("#" in line for line in around)
                found.append(Import(module, child, _targets(module, child, path.name == "__init__.py"), in_function,
                                    commented))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return found


IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def _own(target: str) -> str | None:
    """The plugin module ``target`` names (a module, or the module holding a name), else None."""
    while target and target not in MODULES:
        if "." not in target:
            return None
        target = target.rsplit(".", 1)[0]
    return target or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, imports in IMPORTS.items():
        for item in imports:
            for target in item.targets:
                own = _own(target)
                if own and own != module and own != "marker_ls_plugin":
                    edges[module].add(own)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_deferred_imports_say_why():
    """An import inside a function defers a heavy dependency or waits for Django's apps; a comment says which."""
    silent = [item for imports in IMPORTS.values() for item in imports if item.deferred and not item.commented]
    assert silent == []


def test_only_modules_run_before_django_defer_the_plugins_own_imports():
    deferred_own = [
        item for imports in IMPORTS.values() for item in imports
        if item.deferred and any(_own(target) for target in item.targets)
        and not item.module.startswith(BEFORE_APPS)
    ]
    assert deferred_own == []


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_no_django_and_nothing_of_the_plugin_outside(package):
    prefix = f"marker_ls_plugin.{package}"
    wrong = [
        (item, target) for module, imports in IMPORTS.items() if module.startswith(prefix) for item in imports
        for target in item.targets
        if target.split(".")[0] in DJANGO_ROOTS
        or (_own(target) and not _own(target).startswith(prefix) and _own(target) != "marker_ls_plugin")
    ]
    assert wrong == []


def test_modules_over_the_size_say_why():
    long = []
    for module, path in MODULES.items():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and SIZE_REASON not in docstring:
            long.append((module, lines))
    assert long == []
