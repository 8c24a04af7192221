"""Structure of the package: no import cycles among the modules under ``harness/``.

The graph is built from the source with `ast`, not by importing: every ``import`` and
``from ... import`` statement anywhere in a file counts (top level, inside functions, under
``if TYPE_CHECKING:``), since an import hidden in a function is still a dependency and only
moves the cycle's failure to run time. Relative imports are resolved against the importing
module's package. ``from pkg import name`` is an edge to the submodule ``pkg.name`` when that
module exists, else to ``pkg`` itself. Importing a submodule also runs its parents'
``__init__``; those implicit edges are left out (a package ``__init__`` that re-exports its
submodules is not a cycle). Imports by string (``importlib.import_module``) are not seen.

A cycle is a strongly connected component of more than one module (a module importing itself
is harmless and ignored). The test names one shortest cycle of each component, as
``a -> b -> a``, and the component's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parents[1] / "harness"

#: Import cycles tolerated for now, each as the set of modules of its strongly connected
#: component, e.g. ``frozenset({"harness.a", "harness.b"})``, with a comment naming the owner.
#: Empty at present: keep it so. The test still runs with entries here: a cycle not listed fails
#: it, and a listed one that no longer exists fails `test_known_cycles_still_exist`, so that its
#: entry is removed once the owner breaks it.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of ``path`` under ``root`` (whose own name is the top package)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = HARNESS_DIR) -> dict[str, Path]:
    """Every module of the package at ``root``: dotted name -> file. Where a package ``x/`` and a
    module ``x.py`` both exist, the package wins, as it does for Python's import."""
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        name = module_name(p, root)
        if "__pycache__" not in p.parts and (name not in out or p.name == "__init__.py"):
            out[name] = p
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package, or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` (file ``path``) imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                if node.level - 1 > len(package):
                    raise AssertionError(f"{path}: relative import beyond the top package")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if alias.name != "*" and sub in modules else _resolve(base, modules)
                if target:
                    out.add(target)
    out.discard(name)
    return out


def import_graph(root: Path = HARNESS_DIR) -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = package_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return sorted(out)


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The components that hold a cycle (more than one module), sorted."""
    return [frozenset(c) for c in strongly_connected(graph) if len(c) > 1]


def one_cycle(component: frozenset[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, as [a, b, ..., a]."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - a component has one


def describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    return " -> ".join(one_cycle(component, graph)) + f"  (component: {', '.join(sorted(component))})"


# -- the checker itself, on a package made up for the test ----------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_checker_finds_hidden_and_relative_cycles(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import f\n",
        "pkg/b.py": "def f():\n    from . import a\n",                  # inside a function, relative
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..d import x\n",
        "pkg/d.py": "import pkg.sub.c as c\nimport os\n",
        "pkg/e.py": "from pkg import a, d\nfrom pkg.sub import *\n",  # depends on both cycles, in none
    })
    graph = import_graph(root)
    assert graph["pkg.e"] == {"pkg.a", "pkg.d", "pkg.sub"}
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.sub.c"] == {"pkg.d"}
    found = cycles(graph)
    assert found == [frozenset({"pkg.a", "pkg.b"}), frozenset({"pkg.d", "pkg.sub.c"})]
    assert one_cycle(found[0], graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_checker_accepts_a_package_reexporting_its_modules(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\nfrom .b import B\n",
        "pkg/a.py": "A = 1\n",
        "pkg/b.py": "from pkg.a import A\nB = A\n",
        "pkg/__main__.py": "from pkg import A\n",
    })
    assert cycles(import_graph(root)) == []


# -- the harness ----------------------------------------------------------------------------
def test_harness_has_no_import_cycles():
    graph = import_graph()
    assert "harness.cli" in graph and "harness.reference.store" in graph, "the harness modules were not found"
    new = [c for c in cycles(graph) if c not in KNOWN_CYCLES]
    assert not new, "import cycles among harness modules:\n  " + "\n  ".join(describe(c, graph) for c in new)


def test_known_cycles_still_exist():
    found = cycles(import_graph())
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"known cycles gone or changed, remove them from KNOWN_CYCLES: {gone}"
