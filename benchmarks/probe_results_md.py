"""Render benchmarks/results/h100-*.probe.json + h100-timings.txt (from gpu_probe_run.sh) as the RESULTS.md section."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
R = HERE / "results"


def times(block: str) -> list:
    """Seconds of each timed command in one block of timings.txt."""
    return [float(line.split()[0]) for line in block.splitlines() if line[:1].isdigit()]


def main() -> int:
    """Print the Markdown section."""
    blocks = (R / "h100-timings.txt").read_text().split("== ")
    clean, xf = times(blocks[1]), times(blocks[2])
    out = ["## Probes on the H100 (benchmarks/gpu_probe_run.sh, 2026-11-22)", "",
           "Machine: NVIDIA H100 80GB HBM3 (cc 9.0), driver 580.159.04, Python 3.12.3, torch 2.11.0+cu130, triton 3.6.0,",
           "transformers 5.17.0, peft 0.21.0 (the lent image). Every run started cold: no doctor cache, no Triton or Inductor",
           "cache; tune-doctor installed with `--no-deps` beside the image's packages. Probe groups without dispatcher timings",
           "ran 3 at a time, the attention groups alone afterwards. Raw output: benchmarks/results/h100-*.", "",
           "| figure | clean image | + xformers 0.0.35 + bitsandbytes 0.50.2 | target |", "|---|---|---|---|",
           f"| `doctor probe` cold, whole catalogue | {clean[0]:.1f} s | {xf[0]:.1f} s | <= 60 s |",
           f"| `doctor check --json` warm (cached verdicts), median of 5 | {statistics.median(clean[1:]):.2f} s | "
           f"{statistics.median(xf[1:]):.2f} s | <= 1.0 s |"]
    anchors = [b for b in blocks if b.startswith("anchors")]
    if anchors:
        a = times(anchors[0])
        med = [statistics.median(a[i:i + 3]) for i in (0, 3, 6)]
        out += ["", "Side by side in the same run (median of 3, whole process, wall):", "",
                "| command | time | note |", "|---|---|---|",
                f"| `doctor check --json --no-probes` (metadata only) | {med[0]:.2f} s | never imports torch |",
                f"| `python -m torch.utils.collect_env` (anchor) | {med[1]:.2f} s | ANCHORS.md: 7.0 s on its H100 |",
                f"| `python -m xformers.info` with xformers 0.0.35 (anchor) | {med[2]:.2f} s | runs nothing on the GPU; ANCHORS.md: 9.3 s |",
                f"| `doctor check` warm, probes included (cached verdicts) | {statistics.median(clean[1:]):.2f} s | GPU verdicts, not availability flags |"]
    for label, name in (("clean image", "h100-clean.probe.json"),
                        ("with xformers 0.0.35 (built for torch 2.10.0+cu128) and bitsandbytes 0.50.2", "h100-xformers035.probe.json")):
        d = json.loads((R / name).read_text())
        out += ["", f"### Verdicts, {label} (exit {d['exit_code']})", "",
                "| probe | backend | verdict | error / tolerance | time | detail |", "|---|---|---|---|---|---|"]
        for r in d["results"]:
            err = "" if r["error"] is None else f"{r['error']:.2e} / {r['tolerance']:.1e}"
            tm = "" if r["time_ms"] is None else f"{r['time_ms']:.3g} ms"
            det = (r["detail"].splitlines() or [""])[0][:110].replace("|", "/")
            out.append(f"| {r['id']} | {r['backend']} | {r['status']} | {err} | {tm} | {det} |")
        out += ["", "| op | backend | why |", "|---|---|---|"]
        out += [f"| {c['op']} | {c['backend']} | {c['reason']} |" for c in d["dispatch"]]
    out += ["", "xformers.mea fails as observed in compat-facts ('No operator found'); the matrix rule xformers.binary-mismatch",
            "flags the same wheel before any probe runs (built for torch 2.10.0 / CUDA 12.8). xformers.bias-to is skipped:",
            "0.0.35's biases are no longer tensor subclasses, so the aten.to.dtype_layout bug cannot occur. flash-attn has no",
            "wheel on the index (sdist only) and is not in the image: skipped. `DOCTOR_BACKEND_ATTENTION=xformers` is refused",
            "with exit 3 naming the failed probe. flash / cudnn / efficient SDPA are within ~15% of each other at the probe",
            "shapes, so the attention pick among them can differ from run to run.", ""]
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
