"""The import graph of ``src/pneumoscan`` keeps the shape docs/ARCHITECTURE.md describes.

Every module is parsed with :mod:`ast` (nothing is imported): all ``import`` / ``from ... import`` statements count,
including the lazy ones inside functions and ``importlib.import_module("pneumoscan...")`` with a literal name; only
``if TYPE_CHECKING:`` blocks are left out (they never run). The checks:

- no import cycles between modules;
- layers, lowest first (a module imports only its own layer or lower ones)::

      core:  pneumoscan (root), errors, core, weights
      data
      models, explain
      inference, training, evaluation, export
      batch, tuning, dicomnode, serving
      cli

- within a layer, no cycles between packages;
- ``evaluation`` imports only ``data`` and core; only ``cli`` imports ``export`` and ``serving``; ``inference`` never
  imports ``training``; nothing imports ``cli``.

A failure names each offending import as ``file:line: importer -> imported``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "pneumoscan"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"(root)", "errors", "core", "weights"}),
    frozenset({"data"}),
    frozenset({"models", "explain"}),
    frozenset({"inference", "training", "evaluation", "export"}),
    frozenset({"batch", "tuning", "dicomnode", "serving"}),
    frozenset({"cli"}),
)
CORE = LAYERS[0]
#: package -> the only packages allowed to import it (besides itself)
ONLY_IMPORTED_BY = {"export": {"cli"}, "serving": {"cli"}, "cli": set()}
#: package -> the only packages it may import (besides itself)
MAY_IMPORT_ONLY = {"evaluation": {"data", *CORE}}
#: (importer, imported) package pairs that are refused although the layers would allow them
FORBIDDEN = {("inference", "training"): "inference must not depend on the training stack"}


# --------------------------------------------------------------------------------------------------- graph ---

@dataclass(frozen=True)
class Import:
    """One import statement resolved to a module of the package."""

    source: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} -> {self.target}"


def package_of(module: str) -> str:
    """``pneumoscan.training.setup`` -> ``training``; the root package itself is ``(root)``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def find_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every ``.py`` file under ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_pkg)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every import statement and ``import_module("...")`` call under ``node``, minus ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
               or (isinstance(node.func, ast.Name) and node.func.id == "import_module"))):
        yield node
    yield from _import_nodes(node)


def _targets(module: str, is_pkg: bool, node: ast.AST, modules: dict[str, tuple[Path, bool]]) -> list[str]:
    top = module.split(".")[0]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
    else:  # importlib.import_module("pneumoscan....")
        names = [node.args[0].value]  # type: ignore[attr-defined]
    out = []
    for name in names:
        if name.split(".")[0] != top:
            continue
        while name not in modules and "." in name:  # `import pneumoscan.x.attr` -> the module that exists
            name = name.rsplit(".", 1)[0]
        if name != module:
            out.append(name)
    return out


def import_graph(root: Path) -> list[Import]:
    """Every import between modules of the package at ``root`` (e.g. ``src/pneumoscan``)."""
    modules = find_modules(root)
    imports = set()
    for module, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root.parent).as_posix()
        for node in _import_nodes(tree):
            for target in _targets(module, is_pkg, node, modules):
                imports.add(Import(module, target, rel, node.lineno))  # type: ignore[attr-defined]
    return sorted(imports, key=lambda i: (i.file, i.line, i.target))


def strongly_connected(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The cycles of a directed graph: its strongly connected components of more than one node (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        if a != b:
            graph[a].add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


# -------------------------------------------------------------------------------------------------- checks ---

def cycle_problems(imports: list[Import]) -> list[str]:
    """One entry per module cycle: its modules, then the imports that close it."""
    problems = []
    for cycle in strongly_connected((i.source, i.target) for i in imports):
        members = set(cycle)
        inside = [f"    {i}" for i in imports if i.source in members and i.target in members]
        problems.append(f"import cycle between {', '.join(cycle)}:\n" + "\n".join(inside))
    return problems


def layer_of(package: str) -> int | None:
    return next((n for n, layer in enumerate(LAYERS) if package in layer), None)


def layer_problems(imports: list[Import]) -> list[str]:
    """Upward imports, packages missing from :data:`LAYERS`, and package cycles within a layer."""
    problems = []
    for i in imports:
        src, dst = package_of(i.source), package_of(i.target)
        for pkg in (src, dst):
            if layer_of(pkg) is None:
                problems.append(f"{i}  (package '{pkg}' is in no layer: add it to LAYERS and docs/ARCHITECTURE.md)")
        if src != dst and None not in (layer_of(src), layer_of(dst)) and layer_of(dst) > layer_of(src):  # type: ignore
            problems.append(f"{i}  ({src} may not import {dst}, a higher layer)")
    same_layer = {(package_of(i.source), package_of(i.target)) for i in imports
                  if package_of(i.source) != package_of(i.target)
                  and layer_of(package_of(i.source)) == layer_of(package_of(i.target))}
    for cycle in strongly_connected(same_layer):
        members = set(cycle)
        inside = [f"    {i}" for i in imports
                  if package_of(i.source) in members and package_of(i.target) in members
                  and package_of(i.source) != package_of(i.target)]
        problems.append(f"package cycle within a layer between {', '.join(cycle)}:\n" + "\n".join(inside))
    return problems


def rule_problems(imports: list[Import]) -> list[str]:
    """The package rules beyond the layers (see the module docstring)."""
    problems = []
    for i in imports:
        src, dst = package_of(i.source), package_of(i.target)
        if src == dst:
            continue
        if dst in ONLY_IMPORTED_BY and src not in ONLY_IMPORTED_BY[dst]:
            allowed = ", ".join(sorted(ONLY_IMPORTED_BY[dst])) or "nothing"
            problems.append(f"{i}  (only {allowed} may import {dst})")
        if src in MAY_IMPORT_ONLY and dst not in MAY_IMPORT_ONLY[src]:
            problems.append(f"{i}  ({src} may import only {', '.join(sorted(MAY_IMPORT_ONLY[src]))})")
        if (src, dst) in FORBIDDEN:
            problems.append(f"{i}  ({FORBIDDEN[(src, dst)]})")
    return problems


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = import_graph(SRC)
    assert len({i.source for i in found}) > 50, "the package was not found or not parsed"
    return found


def test_no_import_cycles(imports: list[Import]) -> None:
    problems = cycle_problems(imports)
    assert not problems, _report("import cycles", problems)


def test_layers_point_down(imports: list[Import]) -> None:
    problems = layer_problems(imports)
    assert not problems, _report("imports against the layering", problems)


def test_package_rules(imports: list[Import]) -> None:
    problems = rule_problems(imports)
    assert not problems, _report("imports against the package rules", problems)


# -------------------------------------------------------------------------------- the checker itself ---

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pneumoscan" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pneumoscan"


def test_checker_catches_a_lazy_cycle_an_upward_import_and_broken_rules(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/a.py": "import os\n\nfrom pneumoscan.cli import main\n",        # upward, and imports cli
        "data/b.py": "def f():\n    from pneumoscan.data import c\n",         # lazy half of a cycle
        "data/c.py": "from . import b\n",
        "models/__init__.py": "",
        "models/x.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pneumoscan.cli.main import m\n"
                        "else:\n    import pneumoscan.data.a\n"),           # only the else branch counts
        "evaluation/__init__.py": "",
        "evaluation/m.py": "import importlib\n\nimportlib.import_module('pneumoscan.models.x')\n",
        "cli/__init__.py": "",
        "cli/main.py": "from pneumoscan.data.a import thing\nfrom pneumoscan.widgets import w\n",
        "widgets.py": "",
    })
    imports = import_graph(root)
    assert [str(i) for i in imports] == [
        "pneumoscan/cli/main.py:1: pneumoscan.cli.main -> pneumoscan.data.a",
        "pneumoscan/cli/main.py:2: pneumoscan.cli.main -> pneumoscan.widgets",
        "pneumoscan/data/a.py:3: pneumoscan.data.a -> pneumoscan.cli.main",
        "pneumoscan/data/b.py:2: pneumoscan.data.b -> pneumoscan.data.c",
        "pneumoscan/data/c.py:1: pneumoscan.data.c -> pneumoscan.data.b",
        "pneumoscan/evaluation/m.py:3: pneumoscan.evaluation.m -> pneumoscan.models.x",
        "pneumoscan/models/x.py:6: pneumoscan.models.x -> pneumoscan.data.a",
    ]
    cycles = cycle_problems(imports)
    assert len(cycles) == 2
    assert cycles[0].startswith("import cycle between pneumoscan.cli.main, pneumoscan.data.a:")
    assert cycles[1].startswith("import cycle between pneumoscan.data.b, pneumoscan.data.c:")
    assert "pneumoscan/data/b.py:2: pneumoscan.data.b -> pneumoscan.data.c" in cycles[1]
    layers = layer_problems(imports)
    assert "pneumoscan/data/a.py:3: pneumoscan.data.a -> pneumoscan.cli.main  (data may not import cli, a higher " \
           "layer)" in layers
    assert any("package 'widgets' is in no layer" in p for p in layers)
    assert not any("models/x.py" in p for p in layers)  # models -> data points down
    rules = rule_problems(imports)
    assert "pneumoscan/data/a.py:3: pneumoscan.data.a -> pneumoscan.cli.main  (only nothing may import cli)" in rules
    assert any(p.startswith("pneumoscan/evaluation/m.py:3:") and "evaluation may import only" in p for p in rules)


def test_checker_passes_a_clean_package(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "__init__.py": "", "errors.py": "", "data/__init__.py": "from pneumoscan.errors import E\n",
        "training/__init__.py": "", "training/setup.py": "from pneumoscan.training import trainer\n",
        "training/trainer.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                               "    from pneumoscan.training.setup import X\nfrom pneumoscan import data\n",
    })
    imports = import_graph(root)
    assert len(imports) == 3
    assert not cycle_problems(imports) and not layer_problems(imports) and not rule_problems(imports)


# ---------------------------------------------------------------------------------- ARCHITECTURE.md ---

def test_architecture_md_names_only_modules_that_exist() -> None:
    """Every ``pneumoscan.x.y`` and ``src/pneumoscan/...`` path in docs/ARCHITECTURE.md is a module or folder."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = find_modules(SRC)
    dotted = set(re.findall(r"\bpneumoscan(?:\.[a-z_][a-z0-9_]*)+", text))
    paths = set(re.findall(r"\bsrc/pneumoscan/[\w/.-]*\w", text))
    assert dotted and paths, "ARCHITECTURE.md names no module paths"
    missing = []
    for name in sorted(dotted):
        if name in modules:
            continue
        # or a module's attribute (pneumoscan.data.records.register_source): a name that module defines or imports
        parent, _, attr = name.rpartition(".")
        if parent not in modules or not re.search(rf"\b{attr}\b", modules[parent][0].read_text(encoding="utf-8")):
            missing.append(name)
    missing += [p for p in sorted(paths) if not (REPO / p).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {', '.join(missing)}"
