"""The package boundaries hold without anyone remembering them.

import-linter (run by `make test`, contracts in pyproject.toml) checks the layers; these
tests add what it cannot see: what a real import of the engine loads, and cycles between
single modules.
"""

from __future__ import annotations

import subprocess
import sys

import grimp

IMPORT_EVERY_CORE_MODULE = """
import importlib, pkgutil, sys
import opstower_core
for info in pkgutil.walk_packages(opstower_core.__path__, "opstower_core."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "rich", "opstower_tui"))
print(len([m for m in sys.modules if m.startswith("opstower_core")]), ui)
"""


def test_importing_every_engine_module_loads_no_console_code() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERY_CORE_MODULE], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split(maxsplit=1)
    assert int(out[0]) > 50  # the walk really imported the engine
    assert out[1].strip() == "[]"


def test_a_sub_command_runs_without_importing_textual() -> None:
    code = ("import sys; from opstower_tui.launcher import main; rc = main(['schedule', '--print', 'cron']); "
            "print('LOADED', [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "LOADED []" in out


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_between_modules() -> None:
    graph = grimp.build_graph("opstower_core", "opstower_tui")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y"]]
