"""Side-by-side benchmark of the training kernels, forward + backward, bf16, at the shapes of ANCHORS.md.

doctor's Triton kernels against torch eager, torch.compile, Liger, Unsloth's kernels (in their OWN process:
`import unsloth` changes torch settings for the whole process) and, for the loss, Cut Cross-Entropy; with
the device-to-device copy bandwidth measured in the same run as the ceiling.

    GB/s = minimum bytes / time, bytes counted as ../shared/ANCHORS.md counts them:
      RMSNorm 5 x rows x hidden x 2 B (read x, write y; read dy, x, write dx; w and the row stats are noise)
      SwiGLU / GeGLU 8 x rows x inter x 2 B (read g, u, write y; read dy, g, u, write dg, du)
      RoPE 4 x (q + k) x 2 B (read and write q and k, forward and backward)
    extra peak = the peak during one fwd+bwd above the steady state that already holds the inputs and
    their gradient buffers (for the loss: the weight and its gradient too).

Fused linear cross-entropy (8192 tokens x 4096 -> vocab 128256) is timed with the weight's gradient and
frozen (the LoRA case), against eager's time and 0.1 GiB extra.

Usage:
    python benchmarks/kernels.py --out DIR            # on the GPU: the full run (JSON + markdown in DIR)
    python benchmarks/kernels.py --out DIR --smoke    # tiny shapes, runs on the CPU (Triton's interpreter)
    --ops rms_norm,rope,swiglu,geglu,cross_entropy    # a subset; --no-unsloth skips the Unsloth process
An op whose module is not in doctor.kernels yet is reported as missing; a peer that is not installed
is skipped with the reason; nothing of either stops the run. The chart: benchmarks/kernels_chart.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# the full run (ANCHORS.md) and the smoke run (the interpreter costs ~3 ms per program instance)
SHAPES: Dict[str, Dict[str, Any]] = {
    "full": {"rms_norm": (16384, 4096), "glu": (16384, 14336), "rope": (4, 32, 8, 4096, 128),
             "ce": (8192, 4096, 128256), "copy": 1 << 30},
    "smoke": {"rms_norm": (8, 96), "glu": (4, 200), "rope": (1, 4, 2, 8, 16), "ce": (16, 32, 300), "copy": 1 << 16},
}
# fraction of the copy bandwidth each op is to reach (issue 10)
TARGETS = {"rms_norm": 0.80, "swiglu": 0.95, "geglu": 0.95, "rope_contiguous": 0.75, "rope_views": 0.75}
CE_EXTRA_GIB = 0.1  # the loss: at most this much extra peak memory
CE_FROZEN_VS_EAGER = 0.75  # frozen weight: at most this fraction of eager's time
EPS = 1e-6
OPS = ("rms_norm", "rope", "swiglu", "geglu", "cross_entropy")


class Skip(Exception):
    """An implementation that cannot run here (the reason goes in the table)."""


class Missing(Skip):
    """doctor's module for the op is not there yet."""


# ------------------------------------------------------------------------------------------------ timing


class Bench:
    """Timing and memory on the run's device (CUDA events through do_bench on a GPU, wall time on CPU)."""

    def __init__(self, device: str, smoke: bool, graphs: bool = False) -> None:
        self.device, self.smoke, self.graphs = device, smoke, graphs

    def ms(self, fn: Callable[[], Any]) -> float:
        """Median ms of fn."""
        if self.device == "cuda":
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=50, rep=300, return_mode="median"))
        fn()
        times: List[float] = []
        start = time.perf_counter()
        while len(times) < 3 or (len(times) < 50 and time.perf_counter() - start < 0.05):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return sorted(times)[len(times) // 2]

    def graph_ms(self, fn: Callable[[], Any]) -> Optional[float]:
        """GPU time of fn alone: fn captured in a CUDA graph and replayed (no host work between its kernels).

        Tells the kernels' own time from the host's per-call cost (autograd, launches: ~0.15 ms a fwd+bwd
        on the H200's host, as much as a whole RMSNorm at the anchors' shape). None on the CPU.
        """
        if self.device != "cuda" or not self.graphs:
            return None
        import torch
        from triton.testing import do_bench

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        try:
            return float(do_bench(graph.replay, warmup=50, rep=300, return_mode="median"))
        finally:
            del graph

    def extra_peak_gib(self, fn: Callable[[], Any]) -> Optional[float]:
        """Peak during one run of fn above the steady state after a first run (GPU only)."""
        if self.device != "cuda":
            return None
        import torch

        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return round((torch.cuda.max_memory_allocated() - base) / 2 ** 30, 4)


def rel_err(out: Any, ref: Any) -> float:
    """||out - ref|| / ||ref|| in fp32 (the anchors' measure of a forward output)."""
    o, r = out.detach().float(), ref.detach().float()
    return float((o - r).norm() / r.norm().clamp_min(1e-30))


def copy_gbps(bench: Bench, n: int, dtype: Any) -> float:
    """Device-to-device copy: bytes read + written / time."""
    import torch

    a = torch.randn(n, device=bench.device, dtype=dtype)
    b = torch.empty_like(a)
    ms = bench.ms(lambda: b.copy_(a))
    del a, b
    return float(f"{2 * n * a_itemsize(dtype) / ms / 1e6:.4g}")


def a_itemsize(dtype: Any) -> int:
    """Bytes per element of a torch dtype."""
    import torch

    return torch.empty((), dtype=dtype).element_size()


# ------------------------------------------------------------------------------------------------ peers


def doctor_fn(name: str) -> Callable[..., Any]:
    """doctor.kernels.<name> taken from its op module, or Missing when that module has not landed.

    From the op module, so a module that has not landed is Missing rather than an AttributeError.
    """
    import importlib

    import doctor.kernels as kernels

    module = kernels._OPS[name]  # the lazy map: public name -> module
    try:
        mod = importlib.import_module(f"doctor.kernels.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("doctor.kernels"):
            raise Missing(f"doctor.kernels.{module} is not there yet") from None
        raise
    fn: Callable[..., Any] = getattr(mod, name)
    return fn


def liger(module: str, attr: str) -> Any:
    """A Liger-Kernel op (its ops modules: liger_kernel.transformers would import transformers)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"liger_kernel.ops.{module}"), attr)
    except ImportError as exc:
        raise Skip(f"liger-kernel not importable: {exc}") from None


def compiled(fn: Callable[..., Any], bench: Bench) -> Callable[..., Any]:
    """torch.compile(fn) on the GPU; skipped on the CPU (Inductor's CPU backend is not what training uses)."""
    if bench.device != "cuda":
        raise Skip("torch.compile is measured on the GPU only")
    import torch

    return torch.compile(fn)


# ------------------------------------------------------------------------------------------------ cases


Row = Dict[str, Any]


def measure(case: str, impl: str, bench: Bench, make: Callable[[], Callable[[], Any]], step: Callable[[Callable[[], Any]], Callable[[], None]],
            ref: Any, nbytes: Optional[float], copy: float, shape: str) -> Row:
    """One implementation of one case: its forward checked against the reference, then timed fwd+bwd."""
    row: Row = {"case": case, "impl": impl, "shape": shape}
    try:
        f = make()
        out = f()
        outs = out if isinstance(out, tuple) else (out,)
        refs = ref if isinstance(ref, tuple) else (ref,)
        row["rel_err"] = float(f"{max(rel_err(o, r) for o, r in zip(outs, refs)):.2e}")
        g = step(f)
        g()  # first fwd+bwd outside the timing: compiles, autotunes (do_bench sizes its loop from the first runs)
        ms = bench.ms(g)
        row["ms"] = round(ms, 4)
        if nbytes is not None:
            row["GBps"] = float(f"{nbytes / ms / 1e6:.4g}")  # significant digits: smoke runs are at ~0.001 GB/s
            row["pct_copy"] = float(f"{100 * row['GBps'] / copy:.3g}")
        row["extra_GiB"] = bench.extra_peak_gib(g)
        if nbytes is not None and bench.graphs and GRAPHED(impl):
            try:
                gms = bench.graph_ms(g)
            except Exception as exc:  # a step that cannot be captured keeps its per-call figure
                row["graph_error"] = f"{type(exc).__name__}: {exc}"[:200]
                _recover()
            else:
                if gms is not None:
                    row["graph_ms"] = round(gms, 4)
                    row["graph_pct_copy"] = float(f"{100 * nbytes / gms / 1e6 / copy:.3g}")
    except Missing as exc:
        row["missing"] = str(exc)
    except Skip as exc:
        row["skipped"] = str(exc)
    except Exception as exc:  # a peer that breaks is a row, not the end of the run
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc()
    print(json.dumps(row), flush=True)
    return row


def GRAPHED(impl: str) -> bool:
    """Implementations timed in a CUDA graph too: not torch.compile's (a failed capture of a compiled
    function broke the process's CUDA state in the 2026-12-01 runs)."""
    return "compile" not in impl


def _recover() -> None:
    """After a failed capture: wait for the device so the next case starts clean."""
    try:
        import torch

        torch.cuda.synchronize()
    except Exception:
        pass


def _bwd(leaves: List[Any], grads: List[Any]) -> Callable[[Callable[[], Any]], Callable[[], None]]:
    """fwd+bwd step for f: clear the leaves' grads, run f, backpropagate the fixed upstream gradients."""
    import torch

    def step(f: Callable[[], Any]) -> Callable[[], None]:
        def g() -> None:
            for t in leaves:
                t.grad = None
            out = f()
            torch.autograd.backward(list(out) if isinstance(out, tuple) else [out], grads)
        return g

    return step


def case_rms_norm(bench: Bench, dt: Any, shapes: Dict[str, Any], copy: float, impls: Dict[str, bool]) -> List[Row]:
    """RMSNorm rows x hidden."""
    import torch

    rows, hid = shapes["rms_norm"]
    dev = bench.device
    x = torch.randn(rows, hid, device=dev, dtype=dt, requires_grad=True)
    w = (1 + 0.1 * torch.randn(hid, device=dev)).to(dt).requires_grad_(True)
    dy = torch.randn(rows, hid, device=dev, dtype=dt)
    nbytes = 5 * rows * hid * a_itemsize(dt)

    def eager() -> Any:  # the Hugging Face formula, as the anchors timed it
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(dt) * w

    ref = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + EPS) * w.float()).to(dt)
    makers: Dict[str, Callable[[], Callable[[], Any]]] = {
        "doctor": lambda: (lambda fn: (lambda: fn(x, w, EPS)))(doctor_fn("rms_norm")),
        "torch_eager": lambda: eager,
        "torch_compile": lambda: compiled(eager, bench),
        "liger": lambda: (lambda F: (lambda: F.apply(x, w, EPS)))(liger("rms_norm", "LigerRMSNormFunction")),
    }
    return [measure("rms_norm", k, bench, m, _bwd([x, w], [dy]), ref, nbytes, copy, f"{rows}x{hid}")
            for k, m in makers.items() if impls.get(k, True)]


def case_glu(op: str, bench: Bench, dt: Any, shapes: Dict[str, Any], copy: float, impls: Dict[str, bool]) -> List[Row]:
    """SwiGLU silu(g) * u or GeGLU gelu_tanh(g) * u, rows x inter."""
    import torch
    import torch.nn.functional as F

    rows, inter = shapes["glu"]
    dev = bench.device
    g = torch.randn(rows, inter, device=dev, dtype=dt, requires_grad=True)
    u = torch.randn(rows, inter, device=dev, dtype=dt, requires_grad=True)
    dy = torch.randn(rows, inter, device=dev, dtype=dt)
    nbytes = 8 * rows * inter * a_itemsize(dt)
    swi = op == "swiglu"

    def eager() -> Any:
        return F.silu(g) * u if swi else F.gelu(g, approximate="tanh") * u

    ref = ((F.silu(g.float()) if swi else F.gelu(g.float(), approximate="tanh")) * u.float()).to(dt)
    if swi:
        ours = lambda: (lambda fn: (lambda: fn(g, u)))(doctor_fn("swiglu"))  # noqa: E731
        peer = lambda: (lambda Fn: (lambda: Fn.apply(g, u)))(liger("swiglu", "LigerSiLUMulFunction"))  # noqa: E731
    else:
        ours = lambda: (lambda fn: (lambda: fn(g, u, approximate="tanh")))(doctor_fn("geglu"))  # noqa: E731
        peer = lambda: (lambda Fn: (lambda: Fn.apply(g, u)))(liger("geglu", "LigerGELUMulFunction"))  # noqa: E731
    makers: Dict[str, Callable[[], Callable[[], Any]]] = {
        "doctor": ours, "torch_eager": lambda: eager, "torch_compile": lambda: compiled(eager, bench), "liger": peer}
    return [measure(op, k, bench, m, _bwd([g, u], [dy]), ref, nbytes, copy, f"{rows}x{inter}")
            for k, m in makers.items() if impls.get(k, True)]


def rope_inputs(bench: Bench, dt: Any, shapes: Dict[str, Any], views: bool) -> Tuple[Any, ...]:
    """Leaves (q, k as [B,H,S,D] or as [B,S,H,D] projections), cos/sin [1,S,D], upstream grads, sizes."""
    import torch

    b, hq, hk, s, d = shapes["rope"]
    dev = bench.device
    ql = torch.randn(*((b, s, hq, d) if views else (b, hq, s, d)), device=dev, dtype=dt, requires_grad=True)
    kl = torch.randn(*((b, s, hk, d) if views else (b, hk, s, d)), device=dev, dtype=dt, requires_grad=True)
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=dev).float() / d))
    emb = torch.cat([torch.outer(torch.arange(s, device=dev).float(), inv)] * 2, -1)
    cos, sin = emb.cos().to(dt)[None], emb.sin().to(dt)[None]  # [1, S, D]
    dq = torch.randn(b, hq, s, d, device=dev, dtype=dt)
    dk = torch.randn(b, hk, s, d, device=dev, dtype=dt)
    return ql, kl, cos, sin, dq, dk


def case_rope(views: bool, bench: Bench, dt: Any, shapes: Dict[str, Any], copy: float, impls: Dict[str, bool]) -> List[Row]:
    """RoPE on q and k, contiguous [B,H,S,D] or the transposed views of [B,S,H,D] projections."""
    import torch

    ql, kl, cos, sin, dq, dk = rope_inputs(bench, dt, shapes, views)
    d = ql.shape[-1]
    nbytes = 4 * (ql.numel() + kl.numel()) * a_itemsize(dt)

    def qk() -> Tuple[Any, Any]:
        return (ql.transpose(1, 2), kl.transpose(1, 2)) if views else (ql, kl)

    def rot(t: Any) -> Any:
        return torch.cat([-t[..., d // 2:], t[..., : d // 2]], -1)

    def eager() -> Tuple[Any, Any]:
        q, k = qk()
        c, s = cos[:, None], sin[:, None]
        return q * c + rot(q) * s, k * c + rot(k) * s

    q, k = qk()
    c32, s32 = cos.float()[:, None], sin.float()[:, None]
    ref = ((q.float() * c32 + rot(q.float()) * s32).to(dt), (k.float() * c32 + rot(k.float()) * s32).to(dt))
    makers: Dict[str, Callable[[], Callable[[], Any]]] = {
        "doctor": lambda: (lambda fn: (lambda: fn(*qk(), cos, sin)))(doctor_fn("rope")),
        "torch_eager": lambda: eager,
        "torch_compile": lambda: compiled(eager, bench),
        "liger": lambda: (lambda Fn: (lambda: Fn.apply(*qk(), cos, sin)))(liger("rope", "LigerRopeFunction")),
    }
    case = "rope_views" if views else "rope_contiguous"
    b, hq, hk, s, dd = shapes["rope"]
    shape = f"q {b}x{hq}x{s}x{dd} + k {b}x{hk}x{s}x{dd}"
    return [measure(case, k, bench, m, _bwd([ql, kl], [dq, dk]), ref, nbytes, copy, shape)
            for k, m in makers.items() if impls.get(k, True)]


def case_ce(frozen: bool, bench: Bench, dt: Any, shapes: Dict[str, Any], copy: float, impls: Dict[str, bool]) -> List[Row]:
    """Fused linear cross-entropy, tokens x hidden -> vocab, with the weight's gradient or frozen."""
    import torch
    import torch.nn.functional as F

    n, h, v = shapes["ce"]
    dev = bench.device
    torch.manual_seed(0)
    hid = torch.randn(n, h, device=dev, dtype=dt, requires_grad=True)
    w = (torch.randn(v, h, device=dev, dtype=dt) * 0.02).requires_grad_(not frozen)
    y = torch.randint(0, v, (n,), device=dev)

    def eager() -> Any:
        return F.cross_entropy((hid @ w.t()).float(), y)

    with torch.no_grad():
        ref = F.cross_entropy((hid.float() @ w.float().t()), y)

    def cce() -> Callable[[], Any]:
        try:
            from cut_cross_entropy import linear_cross_entropy
        except ImportError as exc:
            raise Skip(f"cut_cross_entropy not importable: {exc}") from None
        if bench.device != "cuda":
            raise Skip("Cut Cross-Entropy needs a GPU")
        return lambda: linear_cross_entropy(hid, w, y)

    def lig() -> Callable[[], Any]:
        Fn = liger("fused_linear_cross_entropy", "LigerFusedLinearCrossEntropyFunction")
        return lambda: Fn.apply(hid, w, y)[0]

    makers: Dict[str, Callable[[], Callable[[], Any]]] = {
        "doctor": lambda: (lambda fn: (lambda: fn(hid, w, y)))(doctor_fn("fused_linear_cross_entropy")),
        "torch_eager": lambda: eager,
        "torch_compile": lambda: compiled(eager, bench),
        "liger": lig,
        "cut_cross_entropy": cce,
    }
    leaves = [hid] if frozen else [hid, w]

    def step(f: Callable[[], Any]) -> Callable[[], None]:
        def g() -> None:
            for t in leaves:
                t.grad = None
            f().backward()
        return g

    case = "cross_entropy_frozen" if frozen else "cross_entropy"
    return [measure(case, k, bench, m, step, ref, None, copy, f"{n} tokens x {h} -> vocab {v}")
            for k, m in makers.items() if impls.get(k, True)]


# ------------------------------------------------------------------------------------------------ unsloth


def unsloth_worker(args: argparse.Namespace) -> int:
    """In its own process: import unsloth first (as it demands), then its RMSNorm and RoPE kernels and a copy."""
    rows: List[Row] = []
    try:
        import unsloth  # noqa: F401  (first: it patches torch and transformers on import)
    except Exception as exc:
        rows.append({"case": "*", "impl": "unsloth", "skipped": f"import unsloth failed: {type(exc).__name__}: {exc}"[:300]})
        _write(args.worker_out, {"rows": rows})
        return 0
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench = Bench(device, args.smoke, graphs=args.graphs)
    dt = torch.bfloat16 if device == "cuda" else torch.float32
    shapes = SHAPES["smoke" if args.smoke else "full"]
    copy = copy_gbps(bench, shapes["copy"], dt)
    ops = set(args.ops.split(","))
    if "rms_norm" in ops:
        rows += _unsloth_rms(bench, dt, shapes, copy)
    if "rope" in ops:
        for views in (False, True):
            rows += _unsloth_rope(views, bench, dt, shapes, copy)
    _write(args.worker_out, {"copy_GBps": copy, "rows": rows})
    return 0


def _unsloth_rms(bench: Bench, dt: Any, shapes: Dict[str, Any], copy: float) -> List[Row]:
    import torch

    rows, hid = shapes["rms_norm"]
    x = torch.randn(rows, hid, device=bench.device, dtype=dt, requires_grad=True)
    w = (1 + 0.1 * torch.randn(hid, device=bench.device)).to(dt).requires_grad_(True)
    dy = torch.randn(rows, hid, device=bench.device, dtype=dt)
    ref = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + EPS) * w.float()).to(dt)

    def make() -> Callable[[], Any]:
        from unsloth.kernels.rms_layernorm import Fast_RMS_Layernorm

        return lambda: Fast_RMS_Layernorm.apply(x, w, EPS, False, False, False)

    return [measure("rms_norm", "unsloth", bench, make, _bwd([x, w], [dy]), ref, 5 * rows * hid * a_itemsize(dt),
                    copy, f"{rows}x{hid}")]


def _unsloth_rope(views: bool, bench: Bench, dt: Any, shapes: Dict[str, Any], copy: float) -> List[Row]:
    import torch

    ql, kl, cos, sin, dq, dk = rope_inputs(bench, dt, shapes, views)
    d = ql.shape[-1]

    def qk() -> Tuple[Any, Any]:
        return (ql.transpose(1, 2), kl.transpose(1, 2)) if views else (ql, kl)

    def rot(t: Any) -> Any:
        return torch.cat([-t[..., d // 2:], t[..., : d // 2]], -1)

    q, k = qk()
    c32, s32 = cos.float()[:, None], sin.float()[:, None]
    ref = ((q.float() * c32 + rot(q.float()) * s32).to(dt), (k.float() * c32 + rot(k.float()) * s32).to(dt))

    def make() -> Callable[[], Any]:
        from unsloth.kernels.rope_embedding import fast_rope_embedding

        return lambda: fast_rope_embedding(*qk(), cos[0], sin[0])  # Unsloth takes cos/sin as [S, D]

    return [measure("rope_views" if views else "rope_contiguous", "unsloth", bench, make, _bwd([ql, kl], [dq, dk]), ref,
                    4 * (ql.numel() + kl.numel()) * a_itemsize(dt), copy, "as the other impls")]


def run_unsloth(args: argparse.Namespace, timeout: float) -> Tuple[List[Row], Optional[float]]:
    """The Unsloth rows from a child process (its own torch settings); a failure is one row saying why."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "unsloth.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "unsloth", "--worker-out", out, "--ops", args.ops]
        if args.smoke:
            cmd.append("--smoke")
        if args.graphs:
            cmd.append("--graphs")
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return [{"case": "*", "impl": "unsloth", "error": f"the Unsloth process did not finish in {timeout:g} s"}], None
        sys.stderr.write(proc.stderr[-3000:])
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            return [{"case": "*", "impl": "unsloth", "error": f"the Unsloth process exited {proc.returncode}: {tail}"[:300]}], None
        with open(out) as f:
            doc = json.load(f)
    for r in doc["rows"]:
        print(json.dumps(r), flush=True)
    return doc["rows"], doc.get("copy_GBps")


# ------------------------------------------------------------------------------------------------ report


def _write(path: str, doc: Any) -> None:
    """JSON written atomically (temp + os.replace)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


IMPL_ORDER = ("doctor", "torch_eager", "torch_compile", "liger", "unsloth", "cut_cross_entropy")
CASE_TITLES = {"rms_norm": "RMSNorm", "swiglu": "SwiGLU silu(g)*u", "geglu": "GeGLU gelu_tanh(g)*u",
               "rope_contiguous": "RoPE q+k, contiguous [B,H,S,D]", "rope_views": "RoPE q+k, views of [B,S,H,D]",
               "cross_entropy": "fused linear CE, weight grad", "cross_entropy_frozen": "fused linear CE, frozen weight"}


def _cell(r: Optional[Row], gbps: bool) -> str:
    if r is None:
        return ""
    if "missing" in r:
        return "missing"
    if "skipped" in r:
        return "skipped"
    if "error" in r:
        return "error"
    if gbps:
        graph = f"; graph {r['graph_ms']:.3g} ms" if r.get("graph_ms") is not None else ""
        return f"{r['GBps']:.4g} ({r['ms']:.3g} ms{graph})"
    extra = f" / {r['extra_GiB']:.3g} GiB" if r.get("extra_GiB") is not None else ""
    return f"{r['ms']:.3g} ms{extra}"


def verdicts(rows: List[Row], copy: float) -> Dict[str, str]:
    """Target met or missed per case, by how much."""
    out: Dict[str, str] = {}
    by = {(r["case"], r["impl"]): r for r in rows}
    for case, frac in TARGETS.items():
        r = by.get((case, "doctor"))
        if r is None or "GBps" not in r:
            out[case] = "not measured" + (f" ({r.get('missing') or r.get('skipped') or r.get('error')})" if r else "")
            continue
        pct = r["GBps"] / copy
        out[case] = (f"{'met' if pct >= frac else 'MISSED'}: {pct:.0%} of copy (target {frac:.0%}"
                     + ("" if pct >= frac else f", {frac * copy / max(r['GBps'], 1e-9):.3g}x short") + ")")
        if r.get("graph_pct_copy") is not None:
            gp = r["graph_pct_copy"] / 100
            out[case] += f"; GPU time only (CUDA graph): {'met' if gp >= frac else 'MISSED'}: {gp:.0%} of copy"
    for case, limit in (("cross_entropy", 1.0), ("cross_entropy_frozen", CE_FROZEN_VS_EAGER)):
        r, e = by.get((case, "doctor")), by.get((case, "torch_eager"))
        if r is None or "ms" not in r or e is None or "ms" not in e:
            out[case] = "not measured"
            continue
        ok_t = r["ms"] <= limit * e["ms"]
        ok_m = r.get("extra_GiB") is None or r["extra_GiB"] <= CE_EXTRA_GIB
        out[case] = (f"{'met' if ok_t and ok_m else 'MISSED'}: {r['ms'] / e['ms']:.2f}x eager's time (target <= {limit:g}x), "
                     f"extra {r.get('extra_GiB')} GiB (target <= {CE_EXTRA_GIB:g})")
    return out


def markdown(doc: Dict[str, Any]) -> str:
    """The side-by-side table, the targets, and every skip/error with its reason."""
    m = doc["machine"]
    copy = doc["copy_GBps"]
    lines = [f"# Kernels, forward + backward, {doc['dtype']} ({'SMOKE: tiny shapes, not a measurement' if doc['smoke'] else 'ANCHORS.md shapes'})",
             "", f"{m['date']}, {m['device']}; torch {m['torch']}, triton {m['triton']}, Python {m['python']}.",
             f"Copy bandwidth in this run: {copy:.4g} GB/s" + (f" (Unsloth's process: {doc['unsloth_copy_GBps']:.4g})" if doc.get("unsloth_copy_GBps") else "")
             + ". GB/s = minimum bytes / time (RMSNorm 5 x rows x hidden x 2 B; SwiGLU/GeGLU 8 x rows x inter x 2 B; "
             "RoPE 4 x (q + k) x 2 B); the loss: time / extra peak memory.", ""]
    rows = doc["rows"]
    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in rows)]
    lines.append("| op (shape) | " + " | ".join(impls) + " | doctor, % of copy: per call / GPU only (CUDA graph) |")
    lines.append("|---" * (len(impls) + 2) + "|")
    for case, title in CASE_TITLES.items():
        rs = {r["impl"]: r for r in rows if r["case"] == case}
        if not rs:
            continue
        shape = next((r.get("shape") for r in rs.values() if r.get("shape")), "")
        gbps = not case.startswith("cross_entropy")
        d = rs.get("doctor", {})
        pct = f"{d['pct_copy']:.3g}%" if "pct_copy" in d else ""
        if "graph_pct_copy" in d:
            pct += f" / {d['graph_pct_copy']:.3g}%"
        lines.append(f"| {title} ({shape}) | " + " | ".join(_cell(rs.get(i), gbps) for i in impls) + f" | {pct} |")
    lines += ["", "Targets (issue 10):", ""]
    lines += [f"- {CASE_TITLES[c]}: {v}" for c, v in doc["targets"].items()]
    notes = [r for r in rows if any(k in r for k in ("missing", "skipped", "error"))]
    if notes:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r['case']} / {r['impl']}: {r.get('missing') or r.get('skipped') or r.get('error')}" for r in notes]
    errs = [r for r in rows if r.get("rel_err") is not None and r["rel_err"] > 2e-2]
    if errs:
        lines += ["", "Forward output far from the fp32 reference (rel. error > 2e-2):", ""]
        lines += [f"- {r['case']} / {r['impl']}: {r['rel_err']:.1e}" for r in errs]
    return "\n".join(lines) + "\n"


def machine(device: str) -> Dict[str, str]:
    """What the numbers were measured on."""
    import torch

    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "absent"
    dev = "cpu (Triton interpreter)" if device != "cuda" else (
        f"{torch.cuda.get_device_name()} (cc {'.'.join(map(str, torch.cuda.get_device_capability()))})")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": dev,
            "torch": torch.__version__, "cuda": str(torch.version.cuda), "triton": tv,
            "python": platform.python_version(), "host": platform.node()}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark (or, with --worker unsloth, the Unsloth part in this process)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for kernels.json and kernels.md")
    p.add_argument("--smoke", action="store_true", help="tiny shapes; on CPU through Triton's interpreter")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    p.add_argument("--no-unsloth", action="store_true", help="skip the Unsloth process")
    # Off by default: on the H100 (2026-12-07) capturing a fwd+bwd step failed (AccumulateGrad on another stream
    # than the capture's), and the failed capture left the process's CUDA state broken: every later case ran out
    # of memory, and Unsloth's process hit "Offset increment outside graph capture".
    p.add_argument("--graphs", action="store_true", help="also time each step replayed as a CUDA graph (experimental)")
    p.add_argument("--unsloth-timeout", type=float, default=240.0, help="seconds for the Unsloth process")
    p.add_argument("--worker", choices=["unsloth"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bad = set(args.ops.split(",")) - set(OPS)
    if bad:
        p.error(f"unknown op(s) {', '.join(sorted(bad))}; choose from {', '.join(OPS)}")

    import torch

    if not torch.cuda.is_available():
        if not args.smoke:
            p.error("no CUDA GPU: the full run needs one (--smoke runs tiny shapes on the CPU)")
        # before any kernel module is imported: triton.jit reads it when a kernel is defined
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if args.worker:
        return unsloth_worker(args)
    sys.path.insert(0, ROOT)  # doctor from this checkout when it is not installed
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # bf16 on the GPU; the interpreter has no bf16 (it stores it as raw bits), so fp32 on the CPU
    dt = torch.bfloat16 if device == "cuda" else torch.float32
    bench = Bench(device, args.smoke, graphs=args.graphs)
    shapes = SHAPES["smoke" if args.smoke else "full"]
    os.makedirs(args.out, exist_ok=True)
    ops = args.ops.split(",")
    unsloth_rows: List[Row] = []
    unsloth_copy = None
    if not args.no_unsloth and ("rms_norm" in ops or "rope" in ops):
        unsloth_rows, unsloth_copy = run_unsloth(args, args.unsloth_timeout)  # first: the GPU is otherwise idle
    copy = copy_gbps(bench, shapes["copy"], dt)
    print(json.dumps({"copy_GBps": copy}), flush=True)
    rows: List[Row] = []
    impls: Dict[str, bool] = {}
    cases: List[Tuple[str, Callable[[], List[Row]]]] = [
        ("rms_norm", lambda: case_rms_norm(bench, dt, shapes, copy, impls)),
        ("swiglu", lambda: case_glu("swiglu", bench, dt, shapes, copy, impls)),
        ("geglu", lambda: case_glu("geglu", bench, dt, shapes, copy, impls)),
        ("rope", lambda: case_rope(False, bench, dt, shapes, copy, impls)),
        ("rope", lambda: case_rope(True, bench, dt, shapes, copy, impls)),
        ("cross_entropy", lambda: case_ce(False, bench, dt, shapes, copy, impls)),
        ("cross_entropy", lambda: case_ce(True, bench, dt, shapes, copy, impls)),
    ]
    for op, run in cases:
        if op in ops:
            rows += run()
            if device == "cuda":
                torch.cuda.empty_cache()
    rows += unsloth_rows
    doc: Dict[str, Any] = {"schema": 1, "smoke": args.smoke, "dtype": str(dt).replace("torch.", ""),
                           "machine": machine(device), "copy_GBps": copy, "unsloth_copy_GBps": unsloth_copy,
                           "rows": rows}
    doc["targets"] = verdicts(rows, copy)
    _write(os.path.join(args.out, "kernels.json"), doc)
    md = markdown(doc)
    with open(os.path.join(args.out, "kernels.md.tmp"), "w") as f:
        f.write(md)
    os.replace(os.path.join(args.out, "kernels.md.tmp"), os.path.join(args.out, "kernels.md"))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
