"""The package's import rules, checked by walking every import in src/ and flows/ (module-level
and inside functions), as import-linter's "layers" contract would:

* imports point one way, down the layers below (a module may import its own layer and those under
  it; top-level packages of one layer are independent of each other);
* no import cycle between modules;
* no private name (leading underscore) imported from another module: a helper two modules share is
  a public name of a shared module.

And no module is a dumping ground: none passes ~800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ketaoutcomes"

#: Bottom to top. A name is the first component under ``ketaoutcomes`` (a module or a package).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "failpoints", "contract", "table_contract", "endpoints", "notes", "settings", "protocol", "registries",
               "suggest", "snapshots", "warehouse", "query", "memory"}),
    frozenset({"ingest", "validate", "derive", "simulate", "docs"}),
    frozenset({"models"}),
    frozenset({"analysis", "truth"}),
    frozenset({"report"}),
    frozenset({"step_records", "analysis_inputs"}),
    frozenset({"pipeline"}),
    frozenset({"reproduce"}),
    frozenset({"cli", "__main__", "flows"}),
)
#: Layers whose top-level packages may import each other (the bottom one is a set of small leaves).
SHARED_LAYERS = {0, 3, 8}
MAX_LINES = 800


def _module_name(path: Path) -> str:
    if path.is_relative_to(SRC):
        parts = ("ketaoutcomes", *path.relative_to(SRC).with_suffix("").parts)
    else:
        parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files() -> list[Path]:
    return sorted([*SRC.rglob("*.py"), *(ROOT / "flows").rglob("*.py")])


MODULES = {_module_name(p): p for p in _files()}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import of ketaoutcomes code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] in ("ketaoutcomes", "flows")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] not in ("ketaoutcomes", "flows"):
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in MODULES]
            if submodules:  # `from package import module`
                out += [(node.lineno, f"{target}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest or not names:
                out.append((node.lineno, target, rest))
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] == "flows" else (parts[1] if len(parts) > 1 else "")


def _layer(module: str) -> int:
    top = _top(module)
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer of tests/unit/test_layers.py: add its package to LAYERS")


def _edges() -> list[tuple[str, int, str, list[str]]]:
    return [(src, line, dst, names) for src, path in MODULES.items() for line, dst, names in _imports(path)]


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_point_down_the_layers():
    bad = []
    for src, line, dst, _ in _edges():
        ls, ld = _layer(src), _layer(dst)
        if ld > ls:
            bad.append(f"{MODULES[src].relative_to(ROOT)}:{line} imports {dst} (layer {ld} above {ls})")
        elif ld == ls and ls not in SHARED_LAYERS and _top(src) != _top(dst):
            bad.append(f"{MODULES[src].relative_to(ROOT)}:{line} imports its sibling {dst} (layer {ls})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{MODULES[src].relative_to(ROOT)}:{line} imports {n} from {dst}"
           for src, line, dst, names in _edges() if dst != src
           for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    assert not bad, "private names imported across modules (make the shared helper public):\n" + "\n".join(bad)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for src, _, dst, _ in _edges():
        if dst in graph and dst != src:
            graph[src].add(dst)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_a_dumping_ground(path: Path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}): split it by what it owns"


def test_the_walker_sees_what_it_checks():
    """The checks above are only as good as the walk: it must find lazy imports inside functions,
    relative imports and `from package import module`."""
    edges = {(s, d) for s, _, d, _ in _edges()}
    assert ("ketaoutcomes.pipeline", "ketaoutcomes.analysis") in edges  # imported inside a function
    assert ("ketaoutcomes.simulate.writer", "ketaoutcomes.simulate.cohort") in edges  # relative import
    assert ("ketaoutcomes.cli", "ketaoutcomes.pipeline") in edges
