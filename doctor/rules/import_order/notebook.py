"""Notebooks (.ipynb) as the import-order check reads them: code cells in order, IPython-only lines blanked.

Cells are numbered among all cells (as Jupyter shows them); `!pip install ...`, line magics, `x = !cmd`
and `obj?` become `pass` with the line numbers kept, and cell magics whose body is not Python (%%bash,
%%writefile...) are skipped. The notebook is parsed, never executed.
"""

from __future__ import annotations

import ast
import json
from typing import List, Tuple

from doctor._util.regex import lazy
from doctor.errors import DoctorError
from doctor.rules.import_order.sites import ImportSite, import_sites


# IPython lines that are not Python: shell escapes, line magics, `x = !cmd`, `x = %magic`, help `obj?`.
_IPY_LINE = lazy(r"^\s*(?:[!%]|[A-Za-z_][\w.,\s]*=\s*[!%])|^\s*[\w.]+\?{1,2}\s*$")
# Cell magics whose body is still Python; any other %%magic (bash, writefile, html...) is skipped.
_PYTHON_CELL_MAGICS = {"capture", "time", "timeit", "prun", "debug", "python", "python3"}


def _notebook_cells(text: str, path: str) -> List[Tuple[int, List[str]]]:
    """(1-based cell number among all cells, source lines) of every Python code cell."""
    try:
        nb = json.loads(text)
    except ValueError as e:
        raise DoctorError(f"cannot parse {path}: not a notebook (invalid JSON: {e})") from None
    except RecursionError:  # absurd nesting ([[[[...) exhausts the decoder's stack
        raise DoctorError(f"cannot parse {path}: not a notebook (JSON nested too deeply)") from None
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
        return import_sites(_blank_magics(lines, indented=False), path, cell, flags)
    except DoctorError:
        return import_sites(_blank_magics(lines, indented=True), path, cell, flags)


def notebook_sites(text: str, path: str) -> List[ImportSite]:
    """All import sites of a notebook's code cells, in cell order."""
    sites: List[ImportSite] = []
    for cell, lines in _notebook_cells(text, path):
        sites.extend(_collect_cell(lines, path, cell))
    return sites
