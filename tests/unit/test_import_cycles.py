"""No import cycle between the modules of ``app_server``.

Every import is an edge: module level, under ``TYPE_CHECKING`` and inside
functions, so a lazy or type-only import cannot hide a circle (``App.run`` ->
``cli`` -> ``workers`` -> ``framework`` counted). A cycle is reported as a
chain of modules, first module repeated at the end.
"""

from __future__ import annotations

from tests.unit.import_graph import internal_graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
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


def chain_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle inside ``component``: the shortest path back to its first module."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for step in sorted(graph[node] & members):
            if step == start:
                return [*paths[node], start]
            if step not in paths:
                paths[step] = [*paths[node], step]
                queue.append(step)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_no_import_cycle() -> None:
    graph = internal_graph()
    cycles = [
        " -> ".join(chain_through(graph, component)) for component in strongly_connected(graph)
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    # Guard against a finder that silently finds nothing.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    [component] = strongly_connected(graph)
    assert component == ["a", "b", "c"]
    assert chain_through(graph, component) == ["a", "b", "c", "a"]


def test_the_graph_counts_lazy_and_type_only_imports() -> None:
    graph = internal_graph()
    assert "app_server.cli" in graph["app_server.application"]  # inside App.run
    # Under TYPE_CHECKING:
    assert "app_server.framework.routing.router" in graph["app_server.framework.request"]
    # ``from app_server import control`` depends on control, not on the package:
    assert "app_server.control" in graph["app_server.master.arbiter"]
    assert "app_server" not in graph["app_server.master.arbiter"]
