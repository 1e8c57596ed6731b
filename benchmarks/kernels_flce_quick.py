"""Quick timing of doctor's fused linear cross-entropy at the issue's shape (GPU only).

8192 tokens x 4096 -> vocab 128256, bf16, forward+backward: doctor (default chunk and two others), torch
eager (materialised fp32 logits, as ../shared/anchors/linear_ce.py), torch.compile of the same, and the
bare GEMMs as the floor; with the weight's gradient and frozen (the LoRA case). Also the copy bandwidth
(bf16 copy of the weight's bytes) and one chunk's pieces, to say where the time goes. Prints JSON lines
and writes them to $OUT/flce_quick.json.
Run from the repository root: PYTHONPATH=$PWD python benchmarks/kernels_flce_quick.py
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from doctor.kernels import fused_linear_cross_entropy
from doctor.kernels import fused_linear_ce as flce

N, H, V = 8192, 4096, 128256
DEV, BF = "cuda", torch.bfloat16
RESULTS: List[Dict[str, Any]] = []


def emit(row: Dict[str, Any]) -> None:
    """Print one result row and keep it for the JSON file."""
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def bench(fn: Callable[[], Any], rep: int = 600) -> float:
    """Median ms of fn (do_bench flushes L2 between runs)."""
    return float(do_bench(fn, warmup=100, rep=rep, return_mode="median"))


def extra_peak_gib(step: Callable[[], None]) -> float:
    """Peak during one step above the steady state (inputs, weight, gradient buffers already there)."""
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2 ** 30, 4)


def chunk_pieces(h: Any, w: Any, y: Any) -> None:
    """One chunk's pieces at the default chunk size: where the time of a chunk goes."""
    c = flce._default_chunk(N, V, BF)
    hc, wd, yc = h[:c], w, y[:c]
    x = torch.empty(c, V, device=DEV, dtype=BF)
    dw = torch.empty(V, H, device=DEV, dtype=BF)
    dh = torch.empty(c, H, device=DEV, dtype=BF)
    loss_rows = torch.empty(c, device=DEV)
    coef = torch.empty(c, device=DEV)
    block, warps = flce._ce_config(V)

    def ce() -> None:
        torch.mm(hc, wd.t(), out=x)
        flce._ce_chunk_kernel[(c,)](x, x.stride(0), yc, loss_rows, coef, V, -100, 0.0, HAS_SOFTCAP=False,
                                    WRITE_GRAD=True, LABEL_IN_GRAD=False, BLOCK=block, num_warps=warps)

    pieces = {
        "logits mm": lambda: torch.mm(hc, wd.t(), out=x),
        "logits mm + CE kernel": ce,
        "dW addmm (beta=1)": lambda: torch.addmm(dw, x.t(), hc, beta=1.0, alpha=1e-4, out=dw),
        "dh addmm": lambda: torch.addmm(dh, x, wd, beta=0.0, alpha=1e-4, out=dh),
        "label rows (all N tokens)": lambda: flce._add_label_terms(dw, h, y, torch.ones(N, device=DEV),
                                                                    1e-4),
    }
    row: Dict[str, Any] = {"chunk_pieces_ms": {}, "chunk": c, "chunks": -(-N // c)}
    for name, fn in pieces.items():
        row["chunk_pieces_ms"][name] = round(bench(fn, rep=200), 4)
    emit(row)


def main() -> None:
    """Run every measurement; each failure is recorded, not fatal."""
    torch.manual_seed(0)
    h = torch.randn(N, H, device=DEV, dtype=BF, requires_grad=True)
    w = (torch.randn(V, H, device=DEV, dtype=BF) * 0.02)
    y = torch.randint(0, V, (N,), device=DEV)
    emit({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
          "triton": __import__("triton").__version__, "shape": [N, H, V]})

    src = torch.empty(V * H, device=DEV, dtype=BF)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    emit({"impl": "copy (bf16, weight's bytes)", "ms": round(ms, 3), "GBps": round(2 * src.numel() * 2 / ms / 1e6)})
    del src, dst

    chunk_pieces(h.detach(), w, y)

    def eager() -> Any:
        return F.cross_entropy((h @ w.t()).float(), y)

    compiled = torch.compile(lambda a, b, c: F.cross_entropy((a @ b.t()).float(), c))
    impls: Dict[str, Callable[[], Any]] = {
        "torch_eager": eager,
        "doctor": lambda: fused_linear_cross_entropy(h, w, y),
        "doctor_chunk256": lambda: fused_linear_cross_entropy(h, w, y, chunk_size=256),
        "doctor_chunk512": lambda: fused_linear_cross_entropy(h, w, y, chunk_size=512),
        "torch_compile": lambda: compiled(h, w, y),  # last: its compile may take a while
    }
    for frozen in (False, True):
        w.requires_grad_(not frozen)
        tag = "frozen" if frozen else "weight_grad"
        ref = eager().item()
        # floor: the bare GEMMs at full M (materialised bf16 logits)
        g = torch.randn(N, V, device=DEV, dtype=BF) * 1e-4
        wd, hd = w.detach(), h.detach()
        gemms: List[Callable[[], Any]] = [lambda: hd @ wd.t(), lambda: g @ wd]
        if not frozen:
            gemms.append(lambda: g.t() @ hd)
        emit({"case": tag, "impl": f"{len(gemms)} bare GEMMs (floor)",
              "ms": round(sum(bench(f, rep=300) for f in gemms), 2)})
        del g
        for name, fn in impls.items():
            def step(fn: Callable[[], Any] = fn) -> None:
                h.grad = w.grad = None
                fn().backward()
            try:
                loss = fn().item()
                ms = bench(step)
                emit({"case": tag, "impl": name, "ms": round(ms, 2), "extra_peak_GiB": extra_peak_gib(step),
                      "loss": round(loss, 5), "eager_loss": round(ref, 5)})
            except Exception as exc:  # one broken peer must not hide the others
                emit({"case": tag, "impl": name, "err": repr(exc)[:300]})
    h.grad = w.grad = None

    out = os.environ.get("OUT", "/tmp")
    with open(os.path.join(out, "flce_quick.json"), "w") as fh:
        json.dump(RESULTS, fh, indent=1)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    main()
