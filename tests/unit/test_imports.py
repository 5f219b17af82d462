"""Imports run one way: no cycles, and no layer imports a higher one.

Every module of ``src/sftgo`` is parsed with ``ast``; every import counts, module-level and inside functions (a
function-level import still runs, and still ties the two modules together), relative and absolute, including
``from . import x``. ``LAYERS`` below is the layering, bottom to top: a module may import its own layer and the layers
under it. A new module must be placed in it (the test says so), which is the moment to decide where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sftgo

# Bottom to top. A name covers the module and, for a package, its submodules (the longest name wins); "sftgo" is only
# the package's own __init__ (its version and lazy attributes).
LAYERS: list[tuple[str, set[str]]] = [
    ("base: errors, names, run directories, caches", {"sftgo", "sftgo.errors", "sftgo.naming", "sftgo.rundir",
                                                      "sftgo.launch", "sftgo.distributed", "sftgo.cliargs",
                                                      "sftgo.recipes", "sftgo.cache", "sftgo.grouping",
                                                      "sftgo.user_functions", "sftgo.startup_gc"}),
    ("hub, models and data loading", {"sftgo.hub", "sftgo.models", "sftgo.data"}),
    ("per-token compute", {"sftgo.tokens", "sftgo.token_head", "sftgo.scorers"}),
    ("objectives", {"sftgo.objectives", "sftgo.loss_func"}),
    ("report (reads run directories: never config, trainer, pipeline or sweep)", {"sftgo.report"}),
    ("config", {"sftgo.config"}),
    ("training", {"sftgo.checkpoints", "sftgo.step_stats", "sftgo.trainer"}),
    ("commands", {"sftgo.pipeline", "sftgo.evaluation", "sftgo.generate", "sftgo.score_cmd", "sftgo.integrations"}),
    ("sweep", {"sftgo.sweep"}),
    ("cli", {"sftgo.cli"}),
]

# Cycles another change removes. The coordinator empties this set when that change lands; a listed cycle that no
# longer exists fails the test, so the allowance cannot outlive its reason. A group of modules importing each other is
# allowed only where its modules are exactly a listed cycle's; the edges of a listed cycle are also exempt from the
# layer checks.
KNOWN_CYCLES_TO_REMOVE: set[tuple[str, ...]] = {
}

# report reads run directories: it must not import these, directly or through anything it imports.
REPORT_NEVER = ("sftgo.config", "sftgo.trainer", "sftgo.pipeline", "sftgo.sweep")

PACKAGE = Path(sftgo.__file__).resolve().parent


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package is named by its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_edges(files: dict[str, Path]) -> dict[str, dict[str, list[str]]]:
    """module -> {imported sftgo module: ["file:line", ...]}. ``from X import a`` points at ``X.a`` where that is a
    module, else at ``X`` (``from sftgo import a``: at the module ``sftgo.a`` lazily comes from); a dotted name that is
    not a module points at its longest module prefix."""
    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, dict[str, list[str]]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # sftgo's lazy attributes (``from sftgo import SFTGoTrainer``) import the module that defines them
                lazy = sftgo._EXPORTS if source == "sftgo" else {}
                targets = [lazy.get(a.name) or (f"{source}.{a.name}" if f"{source}.{a.name}" in files else source)
                           for a in node.names]
            else:
                continue
            for target in targets:
                if target != "sftgo" and not target.startswith("sftgo."):
                    continue
                target = known(target)
                if target and target != mod:
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    edges.setdefault(mod, {}).setdefault(target, []).append(where)
    return edges


def cycle_groups(edges: dict[str, dict[str, list[str]]]) -> list[set[str]]:
    """The modules that import each other in a circle: the strongly connected components of more than one module
    (Tarjan). Each holds at least one cycle; each cycle lies in one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
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
                components.append(set(component))

    for v in sorted(set(edges) | {w for targets in edges.values() for w in targets}):
        if v not in index:
            visit(v)
    return components


def cycle_through(component: set[str], edges) -> tuple[str, ...]:
    """One shortest cycle from the group's smallest module back to itself (a readable witness)."""
    start = min(component)
    paths = {start: (start,)}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w == start:
                    return paths[v]
                if w in component and w not in paths:
                    paths[w] = paths[v] + (w,)
                    nxt.append(w)
        frontier = nxt
    return tuple(sorted(component))


def layer_of(module: str) -> int | None:
    best, found = -1, None
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            covers = module == name or (name != "sftgo" and module.startswith(name + "."))
            if covers and len(name) > best:
                best, found = len(name), i
    return found


def describe(cycle, edges) -> str:
    hops = [f"{a} -> {b} ({edges[a][b][0]})" for a, b in zip(cycle, cycle[1:] + cycle[:1])]
    return "\n    ".join(hops)


def known_cycle_edges() -> set[tuple[str, str]]:
    return {(a, b) for cycle in KNOWN_CYCLES_TO_REMOVE for a, b in zip(cycle, cycle[1:] + cycle[:1])}


def test_no_import_cycles():
    """A group of modules in a cycle is allowed only where it is exactly a cycle of KNOWN_CYCLES_TO_REMOVE."""
    edges = import_edges(module_files())
    known = [set(c) for c in KNOWN_CYCLES_TO_REMOVE]
    new = [g for g in cycle_groups(edges) if g not in known]
    assert not new, "import cycles (break each; a function-level import counts too):\n  " + "\n  ".join(
        f"{len(g)} modules in a cycle: {', '.join(sorted(g))}; one cycle:\n    " + describe(cycle_through(g, edges), edges)
        for g in new)


def test_known_cycles_still_exist():
    """A cycle listed in KNOWN_CYCLES_TO_REMOVE that is gone must leave the list."""
    edges = import_edges(module_files())
    gone = [c for c in KNOWN_CYCLES_TO_REMOVE
            if not all(b in edges.get(a, {}) for a, b in zip(c, c[1:] + c[:1]))]
    assert not gone, f"these cycles no longer exist: remove them from KNOWN_CYCLES_TO_REMOVE: {gone}"


def test_every_module_has_a_layer():
    missing = [m for m in module_files() if layer_of(m) is None]
    assert not missing, f"place these modules in LAYERS of {__file__}: {missing}"


def test_no_layer_imports_a_higher_one():
    edges = import_edges(module_files())
    allowed = known_cycle_edges()
    bad = []
    for mod, targets in sorted(edges.items()):
        for target, places in sorted(targets.items()):
            low, high = layer_of(mod), layer_of(target)
            if low is not None and high is not None and high > low and (mod, target) not in allowed:
                bad += [f"{where}: {mod} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})" for where in places]
    assert not bad, "imports of a higher layer (move the code down, or the import up):\n  " + "\n  ".join(bad)


def test_report_never_imports_config_trainer_pipeline_or_sweep():
    """Directly or through what it imports: the report reads run directories, and runs on a machine without torch."""
    edges = import_edges(module_files())
    allowed = known_cycle_edges()
    reports = [m for m in module_files() if m == "sftgo.report" or m.startswith("sftgo.report.")]
    via = {m: (m,) for m in reports}
    frontier = list(reports)
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w not in via and (v, w) not in allowed:
                    via[w] = via[v] + (w,)
                    nxt.append(w)
        frontier = nxt
    bad = [" -> ".join(path) for m, path in sorted(via.items())
           if any(m == n or m.startswith(n + ".") for n in REPORT_NEVER)]
    assert not bad, "report reaches modules it must never import:\n  " + "\n  ".join(bad)
