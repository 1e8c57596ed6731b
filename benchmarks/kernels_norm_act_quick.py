"""Quick timing of doctor's RMSNorm and SwiGLU/GeGLU kernels at the issue's shapes (GPU only).

bf16, forward+backward through autograd, as ../shared/anchors/gpu_anchors.py measures the peers: RMSNorm
16384x4096 (bytes 5 x rows x hidden x 2) and SwiGLU/GeGLU 16384x14336 (bytes 8 x rows x inter x 2), against
torch eager, torch.compile and a device copy (bf16 copy_ of 2 GiB, bytes read + written) in the same run.
With --sweep, the kernels' launch configurations are timed one by one first (kernel only, forward and
backward apart), and the fastest is also timed end to end beside the default heuristic. Prints JSON lines
and writes them to $OUT/norm_act_quick.json as it goes (a run cut short keeps what it measured).
Run from the repository root: PYTHONPATH=$PWD python benchmarks/kernels_norm_act_quick.py [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import doctor.kernels.activations as act
import doctor.kernels.norm as rn

DEV, BF = "cuda", torch.bfloat16
ROWS, HID, INTER = 16384, 4096, 14336
RESULTS: List[Dict[str, Any]] = []
START = time.monotonic()


def emit(row: Dict[str, Any]) -> None:
    """Print one result row and rewrite the JSON file with everything so far (atomically)."""
    row["t_s"] = round(time.monotonic() - START, 1)
    RESULTS.append(row)
    print(json.dumps(row), flush=True)
    out = os.environ.get("OUT", "/tmp")
    tmp = os.path.join(out, ".norm_act_quick.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(RESULTS, fh, indent=1)
    os.replace(tmp, os.path.join(out, "norm_act_quick.json"))


def bench(fn: Callable[[], Any], rep: int = 200) -> float:
    """Median ms of fn (do_bench flushes L2 between runs)."""
    return float(do_bench(fn, warmup=25, rep=rep, return_mode="median"))


def fwd_bwd(f: Callable[[], Any], inputs: Sequence[Any], grad: Any) -> Callable[[], None]:
    """One training step of f: forward, then backward with grad (as the anchors time the peers)."""
    def step() -> None:
        for t in inputs:
            t.grad = None
        f().backward(grad)
    return step


BUDGET = [150.0]  # seconds for the whole script (--budget)


def graph_ms(step: Callable[[], None]) -> float:
    """GPU time of one step alone: the step captured in a CUDA graph and replayed (no host work between
    kernels), to tell the kernels' time from the host's per-call overhead in the plain timing."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    ms = bench(graph.replay)
    del graph
    return ms


def graphed(op: str, impl: str, step: Callable[[], None], nbytes: int, copy: float) -> None:
    """Emit the CUDA-graph (GPU-only) time of step; a failure is recorded, not fatal."""
    try:
        ms = graph_ms(step)
    except Exception as exc:
        emit({"op": op, "impl": impl, "graph_err": repr(exc)[:300]})
        return
    gbps = nbytes / ms / 1e6
    emit({"op": op, "impl": impl, "ms": round(ms, 4), "GBps": round(gbps), "pct_copy": round(100 * gbps / copy, 1)})


def left() -> float:
    """Seconds left of the run's budget."""
    return BUDGET[0] - (time.monotonic() - START)


def timed(op: str, impl: str, fn: Callable[[], Any], nbytes: int, copy: float, **extra: Any) -> Optional[float]:
    """Time fn, emit ms, GB/s and % of copy; a failure is recorded, not fatal."""
    try:
        ms = bench(fn)
    except Exception as exc:  # one broken implementation must not hide the others
        emit({"op": op, "impl": impl, "err": repr(exc)[:300]})
        return None
    gbps = nbytes / ms / 1e6
    emit({"op": op, "impl": impl, "ms": round(ms, 4), "GBps": round(gbps), "pct_copy": round(100 * gbps / copy, 1),
          **extra})
    return ms


def rms_section(copy: float, sweep: str, compile_too: bool) -> None:
    """RMSNorm 16384x4096 bf16: config sweep (optional), then fwd+bwd of doctor, eager and compile."""
    torch.manual_seed(0)
    x = torch.randn(ROWS, HID, device=DEV, dtype=BF, requires_grad=True)
    w = (1 + 0.1 * torch.randn(HID, device=DEV)).to(BF).requires_grad_()
    dy = torch.randn(ROWS, HID, device=DEV, dtype=BF)
    elems = ROWS * HID
    best_f, best_b = rn._fwd_config(HID), rn._bwd_config(HID)
    emit({"op": "rmsnorm", "default_fwd": list(best_f), "default_bwd": list(best_b)})
    xd, wd = x.detach(), w.detach()
    _, rstd = rn._forward(xd, wd, 1e-6, 0.0)
    parts = torch.randn(2 * rn._sm_count(0), HID, device=DEV)
    dw = torch.empty(HID, device=DEV, dtype=BF)
    n_prog = parts.shape[0]
    pieces: Dict[str, Callable[[], Any]] = {
        "forward kernel": lambda: rn._forward(xd, wd, 1e-6, 0.0),
        "backward (kernel + partial sum)": lambda: rn._backward(dy, xd, wd, rstd, 0.0, True, True),
        "partial sum alone": lambda: rn._sum_parts_kernel[(HID // 16,)](
            parts, dw, n_prog, HID, BLOCK_P=min(512, rn._pow2(n_prog)), BLOCK_N=16, num_warps=4),
    }
    for name, fn in pieces.items():
        timed("rmsnorm-piece", name, fn, {"forward kernel": 2, "partial sum alone": 0}.get(name, 3) * elems * 2, copy)
    if sweep != "none":
        fms: Dict[Any, float] = {}
        for rows in (1, 2, 4) if sweep == "full" else ():
            for warps in (4, 8, 16):
                cfg = rn.FwdConfig(rows, warps)
                ms = timed("rmsnorm-fwd-kernel", str(list(cfg)), lambda: rn._forward(xd, wd, 1e-6, 0.0, cfg),
                           2 * elems * 2, copy)
                if ms is not None:
                    fms[cfg] = ms
        best_f = min(fms, key=fms.__getitem__) if fms else best_f
        bms: Dict[Any, float] = {}
        if sweep == "full":
            grid = [(r, nw, p, 3) for r in (1, 2, 4) for nw in (4, 8, 16) for p in (1, 2, 4)]
            grid += [(r, 8, p, s) for r in (1, 2) for p in (2, 4) for s in (1, 2)]
        else:  # around run 1's best ([2, 8, 2, *]): 3 programs per SM, 4 rows with 16 warps, 2 rows x 16
            grid = [(2, 8, 2, 3), (2, 8, 3, 3), (2, 16, 2, 3), (2, 4, 3, 3), (1, 8, 3, 3), (4, 16, 2, 3)]
        for r, nw, p, s in grid:
            if left() < 60:
                emit({"op": "rmsnorm-bwd-kernel", "skipped": "budget"})
                break
            bcfg = rn.BwdConfig(r, nw, p, s)
            ms = timed("rmsnorm-bwd-kernel", str(list(bcfg)),
                       lambda: rn._backward(dy, xd, wd, rstd, 0.0, True, True, bcfg), 3 * elems * 2, copy)
            if ms is not None:
                bms[bcfg] = ms
        best_b = min(bms, key=bms.__getitem__) if bms else best_b
        emit({"op": "rmsnorm", "best_fwd": list(best_f), "best_bwd": list(best_b)})

    def eager() -> Any:  # the anchors' formula
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(BF) * w

    nbytes = 5 * elems * 2
    timed("rmsnorm", "doctor", fwd_bwd(lambda: rn.rms_norm(x, w), [x, w], dy), nbytes, copy)
    graphed("rmsnorm", "doctor (CUDA graph: GPU time only)", fwd_bwd(lambda: rn.rms_norm(x, w), [x, w], dy),
            nbytes, copy)
    timed("rmsnorm", "doctor_gemma_offset1", fwd_bwd(lambda: rn.rms_norm(x, w, offset=1.0), [x, w], dy), nbytes, copy)
    w.requires_grad_(False)
    timed("rmsnorm", "doctor_frozen_weight", fwd_bwd(lambda: rn.rms_norm(x, w), [x], dy), nbytes, copy)
    w.requires_grad_(True)
    if sweep and (best_f, best_b) != (rn._fwd_config(HID), rn._bwd_config(HID)):
        saved = rn._fwd_config, rn._bwd_config
        setattr(rn, "_fwd_config", lambda n: best_f)
        setattr(rn, "_bwd_config", lambda n: best_b)
        try:
            timed("rmsnorm", "doctor_best_sweep", fwd_bwd(lambda: rn.rms_norm(x, w), [x, w], dy), nbytes, copy,
                  fwd=list(best_f), bwd=list(best_b))
        finally:
            setattr(rn, "_fwd_config", saved[0])
            setattr(rn, "_bwd_config", saved[1])
    timed("rmsnorm", "torch_eager", fwd_bwd(eager, [x, w], dy), nbytes, copy)
    graphed("rmsnorm", "torch_eager (CUDA graph)", fwd_bwd(eager, [x, w], dy), nbytes, copy)
    ref = eager().float()
    err = ((rn.rms_norm(x, w).float() - ref).norm() / ref.norm()).item()
    emit({"op": "rmsnorm", "rel_err_vs_eager": f"{err:.1e}"})
    if compile_too and left() > 45:
        compiled = torch.compile(eager)
        # (no CUDA-graph timing of the compiled function: its failed capture broke the process's CUDA
        # state on the H200, and every later section with it)
        timed("rmsnorm", "torch_compile", fwd_bwd(compiled, [x, w], dy), nbytes, copy)
    else:
        emit({"op": "rmsnorm", "impl": "torch_compile", "skipped": "not asked" if not compile_too else "budget"})


def act_section(copy: float, sweep: str, compile_too: bool) -> None:
    """SwiGLU/GeGLU 16384x14336 bf16: config sweep (optional), then fwd+bwd of doctor, eager and compile."""
    torch.manual_seed(0)
    g = torch.randn(ROWS, INTER, device=DEV, dtype=BF, requires_grad=True)
    u = torch.randn(ROWS, INTER, device=DEV, dtype=BF, requires_grad=True)
    dy = torch.randn(ROWS, INTER, device=DEV, dtype=BF)
    elems = ROWS * INTER
    best = act._config(elems)
    emit({"op": "swiglu", "default": list(best)})
    gd, ud = g.detach(), u.detach()
    for code, name in ((act._GELU_ERF, "geglu (libdevice erf)"), (act._GELU_ERF_AS, "geglu (A-S erf)"),
                       (act._SILU, "swiglu")):
        timed("act-piece", f"{name} forward kernel", lambda: act._forward(gd, ud, code), 3 * elems * 2, copy)
        timed("act-piece", f"{name} backward kernel", lambda: act._backward(dy, gd, ud, code, True, True),
              5 * elems * 2, copy)
    if sweep != "none":
        fms: Dict[Any, float] = {}
        bms: Dict[Any, float] = {}
        full = ((1024, 4), (1024, 8), (2048, 4), (2048, 8), (2048, 16), (4096, 4), (4096, 8), (4096, 16),
                (8192, 8), (8192, 16))
        narrow = ((2048, 8), (4096, 8), (4096, 16), (1024, 4))  # GeGLU's (erf) launch shapes
        sweep_code = act._SILU if sweep == "full" else act._GELU_ERF  # run 2: GeGLU, the compute-heavy one
        for block, warps in full if sweep == "full" else narrow:
            if left() < 40:
                emit({"op": "swiglu-kernel", "skipped": "budget"})
                break
            cfg = act.Config(block, warps)
            ms = timed(f"act{sweep_code}-fwd-kernel", str(list(cfg)), lambda: act._forward(gd, ud, sweep_code, cfg),
                       3 * elems * 2, copy)
            ms2 = timed(f"act{sweep_code}-bwd-kernel", str(list(cfg)),
                        lambda: act._backward(dy, gd, ud, sweep_code, True, True, cfg), 5 * elems * 2, copy)
            if ms is not None and ms2 is not None:
                fms[cfg], bms[cfg] = ms, ms2
        if fms:
            best = min(fms, key=lambda c: fms[c] + bms[c])
        emit({"op": "swiglu", "best": list(best)})

    nbytes = 8 * elems * 2
    ops: Dict[str, Callable[[], Any]] = {
        "swiglu": lambda: act.swiglu(g, u),
        "geglu": lambda: act.geglu(g, u),
        "geglu_tanh": lambda: act.geglu(g, u, approximate="tanh"),
    }
    for name, fn in ops.items():
        timed(name, "doctor", fwd_bwd(fn, [g, u], dy), nbytes, copy)
    timed("geglu", "doctor_as_erf", fwd_bwd(lambda: act._GatedActivation.apply(g, u, act._GELU_ERF_AS),
                                           [g, u], dy), nbytes, copy)
    graphed("swiglu", "doctor (CUDA graph: GPU time only)", fwd_bwd(ops["swiglu"], [g, u], dy), nbytes, copy)
    if sweep and best != act._config(elems):
        saved = act._config
        setattr(act, "_config", lambda n: best)
        try:
            for name, fn in ops.items():
                timed(name, "doctor_best_sweep", fwd_bwd(fn, [g, u], dy), nbytes, copy, cfg=list(best))
        finally:
            setattr(act, "_config", saved)
    eager = {
        "swiglu": lambda: F.silu(g) * u,
        "geglu": lambda: F.gelu(g) * u,
        "geglu_tanh": lambda: F.gelu(g, approximate="tanh") * u,
    }
    for name, fn in eager.items():
        timed(name, "torch_eager", fwd_bwd(fn, [g, u], dy), nbytes, copy)
        ref = fn().float()
        err = ((ops[name]().float() - ref).norm() / ref.norm()).item()
        emit({"op": name, "rel_err_vs_eager": f"{err:.1e}"})
    for name in ("swiglu", "geglu"):
        if not compile_too or left() < 35:
            emit({"op": name, "impl": "torch_compile", "skipped": "not asked" if not compile_too else "budget"})
            continue
        compiled = torch.compile(eager[name])
        timed(name, "torch_compile", fwd_bwd(compiled, [g, u], dy), nbytes, copy)


def main() -> None:
    """Copy ceiling, then each section; --budget bounds the run (compile and sweeps skip when short)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", choices=("none", "narrow", "full"), default="none",
                    help="time launch configurations (full: run 1's grid; narrow: around its best)")
    ap.add_argument("--sections", default="rms,act")
    ap.add_argument("--compile", action="store_true", help="time torch.compile too (its compile takes a while)")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the whole script")
    args = ap.parse_args()
    BUDGET[0] = args.budget
    emit({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
          "triton": __import__("triton").__version__})
    a = torch.randn(1 << 30, device=DEV, dtype=BF)
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    copy = 2 * a.numel() * 2 / ms / 1e6
    emit({"impl": "copy (bf16 copy_ of 2 GiB)", "ms": round(ms, 4), "GBps": round(copy)})
    del a, b
    sections = args.sections.split(",")
    if "rms" in sections:
        rms_section(copy, args.sweep, args.compile)
    torch.cuda.empty_cache()
    if "act" in sections:
        act_section(copy, args.sweep, args.compile)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    main()
