"""What the benchmark chart scripts share: reading their JSON, writing the PNG atomically, and the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional


def load_json(path: str, valid: Callable[[Any], bool], what: str) -> Dict[str, Any]:
    """The benchmark's JSON; a one-line SystemExit for a missing or malformed file (`what` says what it needs)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read the benchmark's JSON: {exc}") from None
    if not isinstance(doc, dict) or not valid(doc):
        raise SystemExit(f"{path}: not {what}")
    return doc


def save(fig: Any, out: str) -> str:
    """Write the figure to `out` through a temporary file and os.replace (a reader never sees half a PNG)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def main(argv: Optional[List[str]], *, description: str, script: str, source: str, default_png: str,
         load: Callable[[str], Dict[str, Any]], chart: Callable[[Dict[str, Any], str], str]) -> int:
    """Parse `JSON [-o PNG]`, draw, print the PNG's path; exit 1 with one line when matplotlib is missing."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("json", help=f"the JSON written by {source}")
    p.add_argument("-o", "--out", help=f"PNG path (default: beside the JSON, {default_png})")
    args = p.parse_args(argv)
    doc = load(args.json)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        print(f"{script} needs matplotlib, which is not installed here ({exc}): pip install matplotlib, or make "
              "the chart on a machine that has it (it reads only the JSON)", file=sys.stderr)
        return 1
    print(chart(doc, args.out or os.path.join(os.path.dirname(os.path.abspath(args.json)), default_png)))
    return 0
