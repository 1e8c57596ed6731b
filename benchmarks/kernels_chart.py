"""Chart of benchmarks/kernels.py's JSON: each op's GB/s per implementation against the copy ceiling (PNG).

    python benchmarks/kernels_chart.py RESULTS.json [-o kernels.png]

One panel of bars per bandwidth case (RMSNorm, SwiGLU, GeGLU, RoPE both layouts), the run's copy bandwidth
as a line across all of them and each op's target as a dashed mark; a last panel with the fused linear
cross-entropy's time (lower is better) and extra peak memory, with and without the weight's gradient.
Made where matplotlib is installed (the GPU machine may lack it): from the JSON, not from the GPU.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # chart_common beside this script
import chart_common  # noqa: E402

GBPS_CASES = (("rms_norm", "RMSNorm"), ("swiglu", "SwiGLU"), ("geglu", "GeGLU (tanh)"),
              ("rope_contiguous", "RoPE [B,H,S,D]"), ("rope_views", "RoPE views of [B,S,H,D]"))
CE_CASES = (("cross_entropy", "weight grad"), ("cross_entropy_frozen", "frozen weight"))
IMPLS = ("doctor", "torch_eager", "torch_compile", "liger", "unsloth", "cut_cross_entropy")
LABELS = {"doctor": "doctor (Triton)", "torch_eager": "torch eager", "torch_compile": "torch.compile",
          "liger": "Liger", "unsloth": "Unsloth", "cut_cross_entropy": "Cut CE"}
COLORS = {"doctor": "#d62728", "torch_eager": "#7f7f7f", "torch_compile": "#1f77b4", "liger": "#2ca02c",
          "unsloth": "#9467bd", "cut_cross_entropy": "#ff7f0e"}
TARGETS = {"rms_norm": 0.80, "swiglu": 0.95, "geglu": 0.95, "rope_contiguous": 0.75, "rope_views": 0.75}


def load(path: str) -> Dict[str, Any]:
    """The benchmark's JSON; a one-line SystemExit for a missing or malformed file."""
    return chart_common.load_json(path, lambda d: isinstance(d.get("rows"), list) and bool(d.get("copy_GBps")), "benchmarks/kernels.py output (needs 'rows' and 'copy_GBps')")


def _value(rows: List[Dict[str, Any]], case: str, impl: str, key: str) -> Optional[float]:
    for r in rows:
        if r.get("case") == case and r.get("impl") == impl and isinstance(r.get(key), (int, float)):
            return float(r[key])
    return None


def chart(doc: Dict[str, Any], out: str) -> str:
    """Draw the PNG at `out` (written atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, copy = doc["rows"], float(doc["copy_GBps"])
    impls = [i for i in IMPLS if any(r.get("impl") == i for r in rows)]
    fig, (ax, axc) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [3.2, 1]})
    bar_impls = [i for i in impls if any(_value(rows, c, i, "GBps") is not None for c, _ in GBPS_CASES)]
    width = 0.8 / max(1, len(bar_impls))
    for j, impl in enumerate(bar_impls):
        xs, ys = [], []
        for i, (case, _) in enumerate(GBPS_CASES):
            v = _value(rows, case, impl, "GBps")
            if v is not None:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(v)
        ax.bar(xs, ys, width, label=LABELS[impl], color=COLORS[impl])
    ax.axhline(copy, color="black", lw=1.2)
    ax.text(-0.45, copy, f"copy {copy:.4g} GB/s (this run)", va="bottom", ha="left", fontsize=8)
    for i, (case, _) in enumerate(GBPS_CASES):
        t = TARGETS[case] * copy
        ax.plot([i - 0.45, i + 0.45], [t, t], ls="--", color="black", lw=0.8)
    ax.set_xticks(range(len(GBPS_CASES)), [t for _, t in GBPS_CASES], fontsize=9)
    ax.set_ylabel("GB/s (minimum bytes / time), fwd+bwd")
    ax.set_ylim(0, copy * 1.08)
    ax.legend(fontsize=8, ncol=len(bar_impls), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title("bandwidth-bound ops vs the copy ceiling (dashed: target)", fontsize=10)

    ce_impls = [i for i in impls if any(_value(rows, c, i, "ms") is not None for c, _ in CE_CASES)]
    cw = 0.8 / max(1, len(ce_impls))
    for j, impl in enumerate(ce_impls):
        for i, (case, _) in enumerate(CE_CASES):
            v = _value(rows, case, impl, "ms")
            if v is None:
                continue
            x = i - 0.4 + cw * (j + 0.5)
            axc.bar([x], [v], cw, color=COLORS[impl], label=LABELS[impl] if i == 0 or _value(rows, CE_CASES[0][0], impl, "ms") is None else None)
            extra = _value(rows, case, impl, "extra_GiB")
            if extra is not None:
                axc.text(x, v, f"{extra:.2g}", ha="center", va="bottom", fontsize=7, rotation=90)
    top = max([v for c, _ in CE_CASES for i in ce_impls for v in [_value(rows, c, i, "ms")] if v is not None] or [1.0])
    axc.set_ylim(0, top * 1.15)  # room for the memory labels
    axc.set_xticks(range(len(CE_CASES)), [t for _, t in CE_CASES], fontsize=9)
    axc.set_ylabel("ms, fwd+bwd (lower is better)")
    axc.set_title("fused linear CE (labels: extra GiB)", fontsize=10)
    axc.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.08))

    m = doc.get("machine", {})
    fig.suptitle(f"doctor kernels, {doc.get('dtype', '')}: {m.get('device', '?')}, torch {m.get('torch', '?')}, "
                 f"triton {m.get('triton', '?')}, {m.get('date', '')}" + (" (SMOKE run)" if doc.get("smoke") else ""),
                 fontsize=10)
    return chart_common.save(fig, out)


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, draw, print the path."""
    return chart_common.main(argv, description=__doc__.splitlines()[0], script="kernels_chart.py", source="benchmarks/kernels.py",
                             default_png="kernels.png", load=load, chart=chart)


if __name__ == "__main__":
    raise SystemExit(main())
