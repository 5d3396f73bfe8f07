"""The package's import graph (built with ``ast``, imports inside functions included): no cycles, and
the core never imports a feature package (features build on the core, not the other way)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "kgcomplete"
#: packages that build on the core; the core finds them by their folders (kgcomplete.features), never by name
FEATURES = ("distributed", "seq2seq", "serving", "tune", "tracking", "cli")
#: entry points above everything (``python -m kgcomplete`` runs the CLI)
ENTRY = ("__main__",)


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = ["kgcomplete", *f.relative_to(PKG).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Modules of the package that ``mod`` imports (a package's __init__ counts as its modules' parent)."""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            prefix = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            target = ".".join(x for x in (prefix, node.module or "") if x)
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for t in names:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != mod and mods[t].name != "__init__.py":
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, f, mods) for m, f in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (as a path that returns to its start), or [] when there is none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(v: str) -> list[str]:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return []

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return []


def test_the_graph_is_read():
    graph = _graph()
    assert "kgcomplete.seq2seq.run" in graph["kgcomplete.seq2seq.kind"]  # a function-level import
    assert "kgcomplete.runs.kinds" in graph["kgcomplete.api"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_core_imports_no_feature():
    bad = [(m, t) for m, targets in _graph().items() for t in targets
           if m.split(".")[1] not in FEATURES + ENTRY and t.split(".")[1] in FEATURES]
    assert not bad, bad


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_the_core_names_no_feature_even_as_a_string():
    """Features are found by their folders: no core module holds a feature's module name in code
    (a list of feature modules to import would be a second place to edit when adding one)."""
    bad = []
    for mod, path in _modules().items():
        if mod.split(".")[1:2] and mod.split(".")[1] in FEATURES + ENTRY:
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if any(f"kgcomplete.{f}" in node.value or f"{f}." in node.value for f in FEATURES):
                    bad.append((mod, node.value))
    assert not bad, bad


def test_feature_kinds_and_sections_are_found_by_folder():
    from kgcomplete.config import feature_sections
    from kgcomplete.features import feature_packages
    from kgcomplete.api import run_kinds

    assert {"kgcomplete.seq2seq", "kgcomplete.distributed"} <= set(feature_packages())
    assert [k.name for k in run_kinds()][-1] == "kge"
    assert {"kgt5", "sharded"} <= {k.name for k in run_kinds()}
    assert {"kgt5", "distributed"} <= set(feature_sections())
