"""Chart of benchmarks/train.py's JSON: tokens/s and peak memory per variant, and the loss curves (PNG).

    python benchmarks/train_chart.py train.json [-o train.png]

Three panels: tokens/s per variant (labelled with the ratio to HF and to Unsloth), peak memory per variant (not
measured on the CPU of a --smoke run), and every variant's loss at each step with the warm-up steps shaded.
Variants that did not run are named in the title. Made where matplotlib is installed (the GPU machine may
lack it): from the JSON, not from the GPU. Exit 1 with one line when matplotlib is missing or the JSON is
not the benchmark's.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # chart_common beside this script
import chart_common  # noqa: E402

LABELS = {"hf": "transformers + peft", "liger": "+ Liger", "unsloth": "Unsloth", "doctor": "doctor runtime"}
COLORS = {"hf": "#7f7f7f", "liger": "#2ca02c", "unsloth": "#9467bd", "doctor": "#d62728"}


def load(path: str) -> Dict[str, Any]:
    """The benchmark's JSON; a one-line SystemExit for a missing or malformed file."""
    return chart_common.load_json(path, lambda d: d.get("benchmark") == "train" and isinstance(d.get("variants"), dict), "benchmarks/train.py output (needs 'benchmark': 'train' and 'variants')")


def _bars(ax: Any, names: List[str], values: List[Optional[float]], labels: List[str], ylabel: str, title: str) -> None:
    xs = range(len(names))
    ax.bar(xs, [v or 0 for v in values], color=[COLORS.get(n, "#1f77b4") for n in names])
    top = max([v for v in values if v] or [1.0])
    for x, v, lab in zip(xs, values, labels):
        ax.text(x, (v or 0) + top * 0.01, lab, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [LABELS.get(n, n) for n in names], fontsize=8, rotation=12)
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def chart(doc: Dict[str, Any], out: str) -> str:
    """Draw the PNG at `out` (written atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup, results, cmp = doc["setup"], doc["variants"], doc.get("comparison", {})
    order = [v for v in doc.get("order", list(results)) if v in results]
    ok = [v for v in order if results[v].get("status") == "ok"]
    fig, (ax_t, ax_m, ax_l) = plt.subplots(1, 3, figsize=(16, 5), gridspec_kw={"width_ratios": [1, 1, 1.5]})

    tps = [results[v].get("tokens_per_s") for v in ok]
    labels = []
    for v, t in zip(ok, tps):
        c = cmp.get(v, {})
        parts = [f"{t:,.0f}" if t else "-"]
        parts += [f"{c[k]:.2f}x {ref}" for k, ref in (("speed_vs_hf", "HF"), ("speed_vs_unsloth", "Unsloth")) if k in c]
        labels.append("\n".join(parts))
    _bars(ax_t, ok, tps, labels, "tokens/s (timed steps)", "throughput (higher is better)")

    peaks = [results[v].get("peak_GiB") for v in ok]
    if any(p is not None for p in peaks):
        _bars(ax_m, ok, peaks, [f"{p:.2f} GiB" if p is not None else "-" for p in peaks], "GiB",
              "peak allocated memory (lower is better)")
    else:
        ax_m.text(0.5, 0.5, "peak memory is measured on the GPU only", ha="center", va="center", transform=ax_m.transAxes)
        ax_m.set_axis_off()

    warm = int(setup.get("warmup", 0))
    for v in ok:
        losses = results[v].get("losses") or []
        ax_l.plot(range(1, len(losses) + 1), losses, marker="o", ms=3, lw=1.2, color=COLORS.get(v), label=LABELS.get(v, v))
    if warm:
        ax_l.axvspan(0.5, warm + 0.5, color="#eeeeee", label="warm-up (untimed)")
    d = cmp.get("doctor", {}).get("loss_max_abs_rel_diff_vs_hf")
    ax_l.set_title("loss at each step" + (f" (doctor vs HF: max {d * 100:.3f}%)" if d is not None else ""), fontsize=10)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss")
    ax_l.legend(fontsize=8)

    missing = [f"{LABELS.get(v, v)}: {results[v].get('status')}" for v in order if v not in ok]
    m = setup.get("model", {})
    fig.suptitle(f"LoRA r={setup['lora']['r']} on {m.get('hidden_size')}-wide {m.get('num_hidden_layers')}-layer Llama, "
                 f"{setup['dtype']}, batch {setup['batch']} x {setup['seq']}, {doc.get('device') or setup['device']}, "
                 f"{doc.get('date', '')}" + (" (SMOKE run)" if setup.get("smoke") else "")
                 + (f"\nnot run: {'; '.join(missing)}" if missing else ""), fontsize=10)
    return chart_common.save(fig, out)


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, draw, print the path."""
    return chart_common.main(argv, description=__doc__.splitlines()[0], script="train_chart.py", source="benchmarks/train.py",
                             default_png="train.png", load=load, chart=chart)


if __name__ == "__main__":
    raise SystemExit(main())
