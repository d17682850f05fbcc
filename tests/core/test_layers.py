"""agex-core imports no module that imports it back: no import cycles, of any length.

The graph is grimp's, the one import-linter checks ``.importlinter``'s layers on. It counts
every import statement: at module level, inside functions, and under ``TYPE_CHECKING`` (a
type-only import is still a dependency: the layer that names a type depends on it).
"""

from __future__ import annotations

import itertools

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("agex", exclude_type_checking_imports=False, cache_dir=None)


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module that imports
    itself), each as one cycle through all of its modules, found without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1 or graph.direct_import_exists(
                    importer=module, imported=module
                ):
                    found.append(_walk(graph, sorted(component)))
    return found


def _walk(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """One closed path through the component, from its first module back to it: the
    modules to read to see the cycle."""
    members = set(component)
    first = component[0]
    for other in component[1:] or [first]:
        there = graph.find_shortest_chain(importer=first, imported=other)
        back = graph.find_shortest_chain(importer=other, imported=first)
        if there and back and set(there) | set(back) <= members:
            return [*there, *back[1:]]
    return [*component, first]


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    lines = []
    for importer, imported in itertools.pairwise(cycle):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = ", ".join(f"l.{d['line_number']}" for d in details)
        lines.append(f"  {importer} -> {imported} ({where})")
    return "\n".join(lines)


def test_type_checking_and_function_level_imports_are_counted(graph) -> None:
    # agex.protocols names Event only under TYPE_CHECKING; the runner loads its watchdog in a
    # function
    assert "agex.events" in graph.find_modules_directly_imported_by("agex.protocols")
    details = graph.get_import_details(
        importer="agex.sandbox.runner", imported="agex.sandbox.watchdog"
    )
    assert details, "function-level imports must be in the graph"


def test_the_cycle_finder_finds_and_names_a_cycle() -> None:
    toy = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        toy.add_module(module)
    toy.add_import(importer="a.x", imported="a.y", line_number=1, line_contents="import a.y")
    toy.add_import(importer="a.y", imported="a.z", line_number=2, line_contents="import a.z")
    toy.add_import(importer="a.z", imported="a.x", line_number=3, line_contents="import a.x")
    (cycle,) = cycles(toy)
    assert cycle == ["a.x", "a.y", "a.z", "a.x"]
    assert "a.z -> a.x (l.3)" in describe(toy, cycle)


def test_agex_has_no_import_cycle(graph) -> None:
    found = cycles(graph)
    assert not found, "import cycles in agex-core:\n" + "\n\n".join(
        describe(graph, cycle) for cycle in found
    )
