"""Arrows only point down (DESIGN.md): the project's own check of its import layering.

Reads every import in doctor/ (module level and inside functions, relative ones resolved) and fails on
a cycle between top-level parts, an import of `commands`/`cli` from another part, or any import of
doctor from `kernels/`. ../shared/tools/layers.py is the reference this mirrors.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

PKG_DIR = Path(__file__).resolve().parents[1] / "doctor"
PKG = "doctor"


def _module(path: Path) -> Tuple[str, bool]:
    rel = list(path.relative_to(PKG_DIR).with_suffix("").parts)
    is_pkg = rel[-1] == "__init__"
    if is_pkg:
        rel = rel[:-1]
    return ".".join([PKG, *rel]), is_pkg


def _part(modname: str) -> str:
    bits = modname.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


def _targets(path: Path) -> Iterator[Tuple[int, str]]:
    modname, is_pkg = _module(path)
    base = modname.split(".") if is_pkg else modname.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(up + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PKG:
                for a in node.names:
                    sub = PKG_DIR / a.name
                    yield node.lineno, (f"{PKG}.{a.name}" if sub.is_dir() or sub.with_suffix(".py").exists() else PKG)
            else:
                yield node.lineno, target


def _edges() -> Dict[Tuple[str, str], List[str]]:
    edges: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    for path in sorted(PKG_DIR.rglob("*.py")):
        src = _part(_module(path)[0])
        for line, target in _targets(path):
            if target != PKG and not target.startswith(PKG + "."):
                continue
            dst = _part(target)
            if dst != src:
                edges[(src, dst)].append(f"{path.relative_to(PKG_DIR.parent)}:{line}")
    return edges


def _reach(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen: Set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_cycle_between_top_level_parts() -> None:
    """No two parts import each other, directly or through others."""
    edges = _edges()
    graph: Dict[str, Set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    cycles = sorted({tuple(sorted((a, b))) for a, b in edges if a in _reach(graph, b)})
    assert not cycles, "\n".join(f"{a} <-> {b}: " + ", ".join(edges.get((a, b), []) + edges.get((b, a), [])) for a, b in cycles)


def test_nothing_imports_commands_or_cli() -> None:
    """commands/ and cli sit at the top: only __main__ starts the CLI, and cli starts commands."""
    allowed = {("__main__", "cli"), ("cli", "commands")}
    bad = [f"{a} -> {b}: {where}" for (a, b), where in _edges().items() if b in ("commands", "cli") and (a, b) not in allowed]
    assert not bad, "\n".join(bad)


def test_kernels_import_nothing_of_doctor() -> None:
    """kernels/ imports torch and triton only."""
    bad = [f"kernels -> {b}: {where}" for (a, b), where in _edges().items() if a == "kernels"]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_planted_cycle(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The test would catch a cycle: plant one in a copy of the package layout and look."""
    pkg = tmp_path / PKG
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from doctor.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from doctor.a import y\n")
    (pkg / "kernels.py").write_text("from doctor import b\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "PKG_DIR", pkg)
    edges = _edges()
    assert ("a", "b") in edges and ("b", "a") in edges and ("kernels", "b") in edges
