"""Import order: a runtime that patches transformers/trl/peft at import must be imported first.

Two views of the same rule:
- `check_imports()` looks at a live process (a notebook kernel) through `sys.modules`;
- `check_script()` reads a script or a notebook file with `ast`, without running it.

Which libraries count as import-time patchers is data (IMPORT_TIME_PATCHERS below), with the why.

How order is read from a live process. CPython's import machinery inserts a module into
sys.modules when its import starts, but `_load_unlocked` pops and re-inserts it when the import
finishes ("update the order of insertion into sys.modules for module clean-up at shutdown",
importlib/_bootstrap.py; seen on 3.9 to 3.13). So sys.modules key order is the order in which imports
FINISHED. A package that imports transformers inside its own __init__ therefore always comes
AFTER transformers in key order, whether or not the user imported transformers first (checked by
tests/rules/test_imports.py with two small packages in subprocesses). Comparing the patcher's own
position is useless; we compare against its first *marker*: the earliest-finished submodule of
the patcher (or of a helper package only it imports). A submodule `unsloth.x` cannot start before
`unsloth` has started, so a patched library that finished before the first marker is taken as
imported before the patcher; one that finished after it was certainly imported after the patcher
started. The first case relies on the patcher finishing a plain marker module before it imports
transformers, which unsloth does (read in the released sources: 2025.3.14 imports `unsloth_zoo`,
whose __init__ is stdlib only, before `from .models import *`; 2026.10.9 first imports
`unsloth.fsdp2_launch`, stdlib only). Evidence names the basis used. When no marker is loaded at all
the rule falls back to the patcher's own position and only warns.
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import sys
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor.errors import DoctorError
from doctor.findings import Action, ActionKind, Category, Finding, Severity, finding


class Patcher(NamedTuple):
    """A library that patches other libraries' classes while it is being imported."""

    name: str  # top-level import name
    patches: Tuple[str, ...]  # top-level names it must be imported before
    markers: Tuple[str, ...]  # packages whose submodules only load during this patcher's import
    why: str


# Data: import-time patchers and the libraries they must precede.
IMPORT_TIME_PATCHERS: Tuple[Patcher, ...] = (
    Patcher(
        name="unsloth",
        patches=("transformers", "trl", "peft"),
        markers=("unsloth", "unsloth_zoo"),
        # unsloth replaces transformers/trl/peft classes and functions while it is imported; names a
        # program bound earlier (`from trl import SFTTrainer`) keep the unpatched objects. It checks
        # sys.modules for ['trl', 'transformers', 'peft'] itself and warns
        # "Unsloth should be imported before ...".
        why="unsloth patches transformers, trl and peft classes when it is imported",
    ),
)

# Deliberately NOT import-order rules, with the reason (kept next to the data so nobody adds them back
# by guess):
NOT_IMPORT_ORDER_SENSITIVE: Mapping[str, str] = {
    # liger_kernel.transformers.monkey_patch does `import transformers` at its own top, and Liger's
    # docs show `import transformers` before `from liger_kernel.transformers import ...`. Importing
    # liger patches nothing: `apply_liger_kernel_to_<model>()` swaps module attributes
    # (modeling_llama.LlamaRMSNorm = LigerRMSNorm, ...) when CALLED, which affects models built
    # afterwards, and with `model=` it also patches an existing instance. What matters is the call
    # coming before model construction, which import order cannot tell, so no import finding.
    "liger_kernel": "patches when apply_liger_kernel_to_*() is called, not when imported",
}

_RESTART = Action(ActionKind.RESTART, "restart the Python runtime/kernel")


def _reorder_action(p: Patcher) -> Action:
    """The generic 'import it first' step for one patcher."""
    libs = ", ".join(p.patches)
    return Action(
        ActionKind.REORDER_IMPORTS,
        f"put `import {p.name}` in the first cell / at the top, before {libs}",
    )


# ----------------------------------------------------------------------------- live process


def _first_marker(keys: Sequence[str], patcher: Patcher, patcher_pos: int) -> Tuple[int, str]:
    """Position and name of the earliest-finished marker module, else the patcher itself."""
    for i, key in enumerate(keys[:patcher_pos]):
        for m in patcher.markers:
            # `unsloth` itself is not a marker (it finishes last); its submodules and helpers are.
            if key.startswith(m + ".") or (key == m and m != patcher.name):
                return i, key
    return patcher_pos, patcher.name


def check_imports(modules: Optional[Mapping[str, object]] = None) -> List[Finding]:
    """Check a live process's import order (default: this one's sys.modules)."""
    mods = sys.modules if modules is None else modules
    keys = list(mods.keys())  # snapshot: other threads may import meanwhile
    pos: Dict[str, int] = {}
    for i, k in enumerate(keys):
        pos.setdefault(k, i)

    out: List[Finding] = []
    checked: List[str] = []
    for p in IMPORT_TIME_PATCHERS:
        if p.name not in pos:
            continue
        ppos = pos[p.name]
        bpos, bname = _first_marker(keys, p, ppos)
        checked.append(p.name)
        early = [lib for lib in p.patches if lib in pos and pos[lib] < bpos]
        if not early:
            continue
        exact = bname != p.name
        basis = (
            f"first {p.name} submodule to finish: {bname} (#{bpos})"
            if exact
            else f"{p.name} itself (#{ppos}); no {p.name} submodule loaded, order is approximate"
        )
        out.append(
            finding(
                "imports.patch-order",
                Severity.ERROR if exact else Severity.WARN,
                Category.IMPORTS,
                f"{', '.join(early)} imported before {p.name}: its patches are not applied",
                evidence={
                    "patcher": f"{p.name} (sys.modules #{ppos})",
                    "loaded before it": ", ".join(f"{lib} (#{pos[lib]})" for lib in early),
                    "order basis": basis,
                },
                explanation=(
                    f"{p.why}. Classes and functions that were already imported (and any names bound "
                    f"to them) keep the unpatched code, so training runs slower or uses more memory. "
                    f"Re-importing does not help: in a notebook, restart the runtime and import "
                    f"{p.name} first."
                ),
                fix=(_RESTART, _reorder_action(p)),
                subject=p.name,
            )
        )
    if out:
        return out
    loaded = [lib for p in IMPORT_TIME_PATCHERS for lib in p.patches if lib in pos]
    if checked:
        title = f"{', '.join(checked)} imported before the libraries it patches"
    else:
        title = "no import-time patching library loaded in this process"
    return [
        finding(
            "imports.order",
            Severity.OK,
            Category.IMPORTS,
            title,
            evidence={
                "patchers loaded": ", ".join(checked) or "none",
                "patched libraries loaded": ", ".join(loaded) or "none",
            },
        )
    ]


# ----------------------------------------------------------------------------- scripts


class ImportSite(NamedTuple):
    """One import of a top-level name found in a source file."""

    name: str  # top-level module name ("transformers")
    line: int  # line in the file, or in the cell for notebooks
    col: int
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

    visit_TryStar = visit_Try  # 3.11+ `try: ... except* ...`

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


def _collect(source: str, display: str, cell: Optional[int] = None, flags: int = 0) -> List[ImportSite]:
    """Import sites of one source unit, in source order."""
    where = f"cell {cell}, " if cell is not None else ""
    tree = _parse(source, display, where, flags)
    col = _ImportCollector(source, cell)
    col.visit(tree)
    return sorted(col.sites, key=lambda s: (s.line, s.col))


def _read_text(path: str) -> str:
    """The file's text as UTF-8 (a BOM is allowed), or a one-line DoctorError."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            raise DoctorError(f"cannot read script {path}: not a regular file")
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise DoctorError(f"cannot read script {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DoctorError(f"cannot read script {path}: not UTF-8 (byte {e.start})") from None


# IPython lines that are not Python: shell escapes, line magics, `x = !cmd`, `x = %magic`, help `obj?`.
_IPY_LINE = re.compile(r"^\s*(?:[!%]|[A-Za-z_][\w.,\s]*=\s*[!%])|^\s*[\w.]+\?{1,2}\s*$")
# Cell magics whose body is still Python; any other %%magic (bash, writefile, html...) is skipped.
_PYTHON_CELL_MAGICS = {"capture", "time", "timeit", "prun", "debug", "python", "python3"}


def _notebook_cells(text: str, path: str) -> List[Tuple[int, List[str]]]:
    """(1-based cell number among all cells, source lines) of every Python code cell."""
    try:
        nb = json.loads(text)
    except ValueError as e:
        raise DoctorError(f"cannot parse {path}: not a notebook (invalid JSON: {e})") from None
    if not isinstance(nb, dict):
        raise DoctorError(f"cannot parse {path}: not a notebook (top level is not an object)")
    cells = nb.get("cells")
    src_key = "source"
    if cells is None and isinstance(nb.get("worksheets"), list) and nb["worksheets"]:  # nbformat 3
        ws = nb["worksheets"][0]
        cells, src_key = (ws.get("cells") if isinstance(ws, dict) else None), "input"
    if not isinstance(cells, list):
        raise DoctorError(f"cannot parse {path}: not a notebook (no cell list)")
    out: List[Tuple[int, List[str]]] = []
    for n, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        raw = cell.get(src_key, "")
        src = "".join(x for x in raw if isinstance(x, str)) if isinstance(raw, list) else raw if isinstance(raw, str) else ""
        lines = src.splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            words = lines[0].lstrip()[2:].split(None, 1)
            if not words or words[0] not in _PYTHON_CELL_MAGICS:
                continue  # %%bash, %%writefile...: not Python
            lines[0] = ""
        out.append((n, lines))
    return out


def _blank_magics(lines: List[str], indented: bool) -> str:
    """Cell source with IPython-only lines replaced by `pass` at the same indent (line numbers kept)."""
    out = []
    for line in lines:
        if _IPY_LINE.match(line) and (indented or not line[:1].isspace()):
            line = line[: len(line) - len(line.lstrip())] + "pass"
        out.append(line)
    return "\n".join(out) + "\n"


def _collect_cell(lines: List[str], path: str, cell: int) -> List[ImportSite]:
    """Import sites of one notebook cell."""
    # First blank only magics at column 0: an indented line starting with `%` may be the
    # continuation of a `"..." % args` expression. Indented magics (inside an if) get a second try.
    flags = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)  # IPython allows top-level await
    try:
        return _collect(_blank_magics(lines, indented=False), path, cell, flags)
    except DoctorError:
        return _collect(_blank_magics(lines, indented=True), path, cell, flags)


def _sites_in_file(path: str) -> Tuple[List[ImportSite], bool]:
    """All import sites of a script or notebook in execution (line/cell) order; True for notebooks."""
    text = _read_text(path)
    if path.lower().endswith(".ipynb"):
        sites: List[ImportSite] = []
        for cell, lines in _notebook_cells(text, path):
            sites.extend(_collect_cell(lines, path, cell))
        return sites, True
    return _collect(text, path), False


def _first_sites(sites: Iterable[ImportSite]) -> Dict[str, ImportSite]:
    """The first import site of each top-level name."""
    first: Dict[str, ImportSite] = {}
    for s in sites:
        first.setdefault(s.name, s)
    return first


def liger_after_model(source: str) -> Optional[Tuple[int, int]]:
    """(line of the first model creation, line of a later apply_liger_kernel_to_*() without model=), or None.

    Liger patches transformers' modeling classes when apply_liger_kernel_to_*() is called, so a model built
    before the call keeps the unpatched modules (unless the call is given model=). Importing liger_kernel
    itself patches nothing, which is why this is about calls, not imports.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
    created: Optional[int] = None
    for call in calls:
        f = call.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in ("from_pretrained", "from_config") and isinstance(f, ast.Attribute):
            owner = f.value.attr if isinstance(f.value, ast.Attribute) else f.value.id if isinstance(f.value, ast.Name) else ""
            if "Model" in owner and "Liger" not in owner and created is None:
                created = call.lineno
        elif name.startswith("apply_liger_kernel_to_") and created is not None:
            if not any(k.arg == "model" for k in call.keywords):
                return created, call.lineno
    return None


def check_script(path: str) -> List[Finding]:
    """Check a script's (or notebook's) import order statically, without running it."""
    sites, notebook = _sites_in_file(path)
    liger = [] if notebook else _liger_findings(path)
    first = _first_sites(sites)  # a later re-import of a loaded module changes nothing
    order = {id(s): i for i, s in enumerate(sites)}
    out: List[Finding] = []
    for p in IMPORT_TIME_PATCHERS:
        ps = first.get(p.name)
        if ps is None:
            continue
        before = [first[lib] for lib in p.patches if lib in first and order[id(first[lib])] < order[id(ps)]]
        late_call = False
        if not before and ps.in_function is not None and not any(s.name == p.name and s.in_function is None for s in sites):
            # The patcher is only imported inside a def: module-level imports of patched libraries run when
            # the script starts, before any call of that def, wherever they stand in the file.
            before = [s for s in sites if s.name in p.patches and s.in_function is None][:1]
            late_call = bool(before)
        if not before:
            continue
        before.sort(key=lambda s: order[id(s)])
        top = before[0]
        # Imports inside a def run only when it is called, usually after module-level code: if every
        # earlier import sits in another function, line order is a weak guess, so warn, do not fail.
        deferred = late_call or all(s.in_function is not None and s.in_function != ps.in_function for s in before)
        stmt = ps.statement or f"import {p.name}"
        fix: List[Action] = [
            Action(ActionKind.REORDER_IMPORTS, f"move `{stmt}` ({ps.where}) to module level above {top.where}" if late_call
                   else f"move `{stmt}` ({ps.where}) above {top.where}"),
        ]
        if notebook:
            fix.append(_RESTART)  # a kernel that ran the old order keeps unpatched classes
        out.append(
            finding(
                "imports.script-order",
                Severity.WARN if deferred else Severity.ERROR,
                Category.IMPORTS,
                f"{p.name} is imported after {', '.join(s.name for s in before)} in {os.path.basename(path)}",
                evidence={
                    "script": path,
                    "patcher": ps.label(),
                    "imported before it": ", ".join(s.label() for s in before),
                },
                explanation=(
                    f"{p.why}; whatever was imported before it keeps the unpatched code. "
                    f"Imports are compared in source order"
                    + (", cells in notebook order" if notebook else "")
                    + "; imports inside functions run when the function is called"
                    + (f" ({p.name} is imported only inside {ps.in_function}(); module-level imports run first unless it "
                       "is called above them)." if late_call else
                       " (all earlier ones here are inside functions, so this may be harmless)." if deferred else ".")
                ),
                fix=fix,
                subject=p.name,
            )
        )
    out.extend(liger)
    if out:
        return out
    found = [p.name for p in IMPORT_TIME_PATCHERS if p.name in first]
    return [
        finding(
            "imports.script-order",
            Severity.OK,
            Category.IMPORTS,
            (
                f"{', '.join(found)} imported before the libraries it patches"
                if found
                else "no import-time patching library imported"
            ),
            evidence={"script": path},
        )
    ]


def _liger_findings(path: str) -> List[Finding]:
    """A WARN when Liger's patch call comes after the model was built (scripts; notebooks are not checked)."""
    hit = liger_after_model(_read_text(path))
    if hit is None:
        return []
    created, applied = hit
    return [finding(
        "imports.liger-order", Severity.WARN, Category.IMPORTS,
        f"apply_liger_kernel_to_*() is called after the model is created in {os.path.basename(path)}",
        {"script": path, "model created": f"line {created}", "liger applied": f"line {applied}"},
        "Liger swaps transformers' modeling classes when the apply call runs; a model created before it keeps "
        "the original RMSNorm/RoPE/SwiGLU/cross-entropy modules, so training runs without Liger's kernels.",
        [Action(ActionKind.REORDER_IMPORTS, f"move the apply_liger_kernel_to_*() call (line {applied}) above line {created}, "
                                             "or pass model=model to it")],
        subject="liger_kernel")]
