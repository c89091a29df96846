"""One direction between dualex's layers: no cycle between its packages and top-level modules.

Every module's AST is walked, imports inside functions included (they are dependencies too,
only deferred), and the imports are collapsed to *units*: a package of ``dualex`` (``scale``,
``evaluate``, ``towers``, ...), a top-level module (``explainer``, ``model``, ...), or the
``dualex`` package itself. A cycle between units means two layers lean on each other.
"""

from __future__ import annotations

from tests.test_imports import _graph

# Cycles allowed to remain, each written from its alphabetically first unit. None: the family
# tangle (towers/ <-> models/ <-> model <-> encoder) went with issue 20. The test fails on any
# cycle not listed here AND on any listed cycle that no longer exists, so it cannot go stale.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _unit(module: str) -> str:
    """``dualex.scale.job`` → ``scale``; ``dualex.model`` → ``model``; ``dualex`` → ``dualex``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def units() -> dict[str, set[str]]:
    """Unit → the units it imports (anywhere in any of its modules)."""
    out: dict[str, set[str]] = {}
    for module, deps in _graph().items():
        edges = out.setdefault(_unit(module), set())
        edges.update(_unit(d) for d in deps)
    for unit, edges in out.items():
        edges.discard(unit)
    return out


def simple_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle, written from its smallest node (each found once: a cycle is
    searched from its smallest node through larger nodes only)."""
    found: set[tuple[str, ...]] = set()

    def walk(start: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                found.add(tuple(path))
            elif nxt > start and nxt not in path:
                walk(start, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_the_cycle_finder_finds_every_planted_cycle():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert simple_cycles(graph) == {("a", "b"), ("a", "b", "c")}
    assert simple_cycles({"a": {"b"}, "b": set()}) == set()


def test_function_level_imports_count():
    graph = units()
    assert len(graph) > 20, "the walk must see every package and top-level module"
    # dualex/scale/tasks.py imports dualex.cli_args only inside _explain
    assert "cli_args" in graph["scale"]


def test_no_cycle_between_packages_beyond_the_known_ones():
    cycles = simple_cycles(units())
    new = sorted(cycles - KNOWN_CYCLES)
    assert not new, "import cycles between dualex's packages/modules: " + "; ".join(
        " -> ".join((*c, c[0])) for c in new
    )
    gone = sorted(KNOWN_CYCLES - cycles)
    assert not gone, "cycles fixed: remove them from KNOWN_CYCLES: " + "; ".join(
        " -> ".join((*c, c[0])) for c in gone
    )


def test_scale_knows_nothing_of_evaluation():
    """The runner is below evaluation: evaluate uses scale, never the other way round."""
    graph = units()
    assert "scale" in graph["evaluate"]
    assert "evaluate" not in graph["scale"]
