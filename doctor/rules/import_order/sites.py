"""Import sites of one unit of Python source (a script, or one notebook cell), read with ast, never run."""

from __future__ import annotations

import ast
from typing import Dict, Iterable, List, NamedTuple, Optional

from doctor.errors import DoctorError


class ImportSite(NamedTuple):
    """One import of a top-level name found in a source file."""

    name: str  # top-level module name ("transformers")
    line: int  # line in the file, or in the cell for notebooks
    col: int  # column, orders two imports on one line (`import transformers, unsloth`)
    cell: Optional[int] = None  # 1-based cell number in a notebook
    scope: str = ""  # "", or the nesting: "def main > try"
    statement: str = ""  # the statement as written (first line), for the fix text
    in_function: Optional[str] = None  # innermost enclosing def, if any

    @property
    def where(self) -> str:
        """'line 12' or 'cell 3, line 2'."""
        return f"line {self.line}" if self.cell is None else f"cell {self.cell}, line {self.line}"

    def label(self) -> str:
        """'transformers (line 3)' or 'transformers (line 3, in def main)'."""
        scope = f", in {self.scope}" if self.scope else ""
        return f"{self.name} ({self.where}{scope})"


_DYNAMIC_IMPORTERS = {"import_module", "__import__"}  # importlib.import_module / builtins.__import__


class _ImportCollector(ast.NodeVisitor):
    """Collects import sites at any depth, remembering the blocks they sit in."""

    def __init__(self, source: str, cell: Optional[int]) -> None:
        self.source = source
        self.cell = cell
        self.stack: List[str] = []
        self.functions: List[str] = []
        self.sites: List[ImportSite] = []

    def _add(self, name: str, node: ast.AST) -> None:
        seg = ast.get_source_segment(self.source, node) or ""
        first = " ".join(seg.split())  # collapse continuation lines
        if len(first) > 80:
            first = first[:77] + "..."
        self.sites.append(
            ImportSite(
                name=name,
                line=getattr(node, "lineno", 0),
                col=getattr(node, "col_offset", 0),
                cell=self.cell,
                scope=" > ".join(self.stack),
                statement=first,
                in_function=self.functions[-1] if self.functions else None,
            )
        )

    def _block(self, label: str, node: ast.AST, func: Optional[str] = None) -> None:
        self.stack.append(label)
        if func is not None:
            self.functions.append(func)
        self.generic_visit(node)
        if func is not None:
            self.functions.pop()
        self.stack.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name.split(".")[0], node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:  # relative imports are the script's own package
            self._add(node.module.split(".")[0], node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if fname in _DYNAMIC_IMPORTERS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value and not arg.value.startswith("."):
                self._add(arg.value.split(".")[0], node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._block(f"def {node.name}", node, func=node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._block(f"async def {node.name}", node, func=node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._block("lambda", node, func="<lambda>")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._block(f"class {node.name}", node)

    def visit_If(self, node: ast.If) -> None:
        self._block("if", node)

    def visit_Try(self, node: ast.Try) -> None:
        self._block("try", node)

    def visit_TryStar(self, node: ast.AST) -> None:
        """3.11+ `try: ... except* ...`: a block like any try."""
        self._block("try", node)

    def visit_With(self, node: ast.With) -> None:
        self._block("with", node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self._block("async with", node)

    def visit_For(self, node: ast.For) -> None:
        self._block("for", node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self._block("async for", node)

    def visit_While(self, node: ast.While) -> None:
        self._block("while", node)


def _parse(source: str, display: str, where: str = "", flags: int = 0) -> ast.AST:
    """ast.parse with every failure turned into a one-line DoctorError."""
    try:
        return compile(source, display, "exec", flags=ast.PyCF_ONLY_AST | flags, dont_inherit=True)
    except SyntaxError as e:
        line = f"line {e.lineno}: " if e.lineno else ""
        raise DoctorError(f"cannot parse {display}: {where}{line}{e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        raise DoctorError(f"cannot parse {display}: {where}{type(e).__name__}: {e}") from None


def import_sites(source: str, display: str, cell: Optional[int] = None, flags: int = 0) -> List[ImportSite]:
    """Import sites of one source unit, in source order."""
    where = f"cell {cell}, " if cell is not None else ""
    tree = _parse(source, display, where, flags)
    col = _ImportCollector(source, cell)
    col.visit(tree)
    return sorted(col.sites, key=lambda s: (s.line, s.col))


def first_sites(sites: Iterable[ImportSite]) -> Dict[str, ImportSite]:
    """The first import site of each top-level name."""
    first: Dict[str, ImportSite] = {}
    for s in sites:
        first.setdefault(s.name, s)
    return first
