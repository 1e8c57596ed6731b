"""Quick timing of doctor's RoPE at the issue's shape (GPU only), both layouts, and where the time goes.

q 4x32x4096x128 + k 4x8x4096x128, bf16, forward+backward as ../shared/anchors/peer_kernels.py measures
it (do_bench, output gradients contiguous [B, H, S, D]): the contiguous [B, H, S, D] layout and the
transposed views of [B, S, H, D] projections (as Hugging Face attention passes them). GB/s = 4 x (q + k)
x 2 B / time (ANCHORS.md's count), against torch eager, torch.compile and a 2 GiB copy (the ceiling).
Also: the GPU time of doctor's two kernels alone (CUDA graph replay, no CPU in the way) per tile size
(the sweep that picks the default), the whole autograd step replayed as a CUDA graph, and the CPU cost
per call of each piece at a tiny shape (launch overhead; an empty autograd Function as the floor).
Prints JSON lines and rewrites $OUT/rope_quick.json after each row (a run cut short still leaves what
it measured).
Run from the repository root: PYTHONPATH=$PWD python benchmarks/kernels_rope_quick.py [--no-sweep]
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from triton.testing import do_bench

import doctor.kernels.rotary as rm
from doctor.kernels import rope

B, HQ, HK, S, D = 4, 32, 8, 4096, 128
DEV, BF = "cuda", torch.bfloat16
RESULTS: List[Dict[str, Any]] = []
OUT = os.environ.get("OUT", "/tmp")
SWEEP = [(8, 8, 4), (4, 8, 4), (8, 4, 4), (4, 4, 4), (2, 8, 4), (8, 2, 4), (8, 16, 4), (4, 16, 4), (2, 16, 4),
         (8, 8, 8), (8, 16, 8), (16, 8, 8), (4, 32, 8), (16, 4, 4), (4, 4, 2), (2, 4, 1), (8, 2, 2)]


def emit(row: Dict[str, Any]) -> None:
    """Print one result row and rewrite the JSON file with every row so far."""
    RESULTS.append(row)
    print(json.dumps(row), flush=True)
    tmp = os.path.join(OUT, "rope_quick.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(RESULTS, fh, indent=1)
    os.replace(tmp, os.path.join(OUT, "rope_quick.json"))


def bench(fn: Callable[[], Any], rep: int = 300) -> float:
    """Median ms of fn (do_bench flushes L2 between runs)."""
    return float(do_bench(fn, warmup=50, rep=rep, return_mode="median"))


def rot(t: torch.Tensor) -> torch.Tensor:
    """HF's rotate_half."""
    return torch.cat([-t[..., D // 2:], t[..., : D // 2]], -1)


class Case:
    """One layout's leaves, cos/sin, output gradients and the step functions over them."""

    def __init__(self, layout: str) -> None:
        self.layout = layout
        shape_q, shape_k = ((B, S, HQ, D), (B, S, HK, D)) if layout == "transposed" else ((B, HQ, S, D), (B, HK, S, D))
        self.ql = torch.randn(shape_q, device=DEV, dtype=BF, requires_grad=True)
        self.kl = torch.randn(shape_k, device=DEV, dtype=BF, requires_grad=True)
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=DEV).float() / D))
        emb = torch.cat([torch.outer(torch.arange(S, device=DEV).float(), inv)] * 2, -1)
        self.cos, self.sin = emb.cos().to(BF), emb.sin().to(BF)  # [S, D]
        self.dq = torch.randn(B, HQ, S, D, device=DEV, dtype=BF)
        self.dk = torch.randn(B, HK, S, D, device=DEV, dtype=BF)

    def views(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """q, k as the kernels see them: [B, H, S, D] (transposed views in that layout)."""
        if self.layout == "transposed":
            return self.ql.transpose(1, 2), self.kl.transpose(1, 2)
        return self.ql, self.kl

    def eager(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """HF's apply_rotary_pos_emb, in bf16."""
        q, k = self.views()
        c, s = self.cos[None, None], self.sin[None, None]
        return q * c + rot(q) * s, k * c + rot(k) * s

    def doctor(self) -> Tuple[torch.Tensor, torch.Tensor]:
        q, k = self.views()
        return rope(q, k, self.cos, self.sin)

    def step(self, fn: Callable[[], Tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        """forward + backward with the fixed output gradients."""
        def run() -> None:
            self.ql.grad = self.kl.grad = None
            qo, ko = fn()
            torch.autograd.backward([qo, ko], [self.dq, self.dk])
        return run

    def error(self, fn: Callable[[], Tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Max relative (norm) error of the outputs vs the fp32 reference."""
        q, k = self.views()
        c, s = self.cos.float()[None, None], self.sin.float()[None, None]
        qf, kf = q.detach().float(), k.detach().float()
        qr, kr = qf * c + rot(qf) * s, kf * c + rot(kf) * s
        qo, ko = fn()
        return max(((qo.float() - qr).norm() / qr.norm()).item(), ((ko.float() - kr).norm() / kr.norm()).item())


NBYTES = 4 * (B * HQ * S * D + B * HK * S * D) * 2  # fwd + bwd, ANCHORS.md
PASS_BYTES = NBYTES // 2  # one pass: read q, k and write two outputs (or the same for the gradients)


def row(copy: float, name: str, layout: str, ms: float, nbytes: Optional[int] = None, **extra: Any
        ) -> Dict[str, Any]:
    """A result row: ms, GB/s (of fwd+bwd's bytes unless nbytes says otherwise), % of copy."""
    gbps = (nbytes or NBYTES) / ms / 1e6
    return {"layout": layout, "impl": name, "ms": round(ms, 4), "GBps": round(gbps),
            "pct_copy": round(100 * gbps / copy, 1), **extra}


def with_config(config: Optional[Tuple[int, int, int]]) -> Callable[[], None]:
    """Forces rope's tile (None: its own heuristic); returns the undo."""
    real = rm._config
    if config is not None:
        rm._config = lambda *_: config
    def undo() -> None:
        rm._config = real
    return undo


def graph_ms(fn: Callable[[], Any]) -> float:
    """Median ms of fn captured in a CUDA graph and replayed: GPU time alone, no CPU launch overhead."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay, rep=200)


def kernel_pair(case: Case) -> Callable[[], None]:
    """doctor's forward and backward kernels alone (no autograd), as a training step launches them."""
    q, k = case.views()
    qd, kd = q.detach(), k.detach()
    qo, ko = torch.empty_like(qd), torch.empty_like(kd)
    dq, dk = torch.empty_like(qd), torch.empty_like(kd)
    c3, s3 = case.cos[None], case.sin[None]

    def run() -> None:
        rm._launch(qd, qo, kd, ko, c3, s3, backward=False)
        rm._launch(case.dq, dq, case.dk, dk, c3, s3, backward=True)
    return run


def cpu_us(fn: Callable[[], Any], n: int = 300) -> float:
    """CPU microseconds per call of fn on tiny tensors (GPU work negligible): launch overhead."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    cpu = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return round(cpu, 1)


class _Empty(torch.autograd.Function):
    """Autograd's floor: a Function that allocates its outputs and gradients and launches nothing."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return torch.empty_like(q), torch.empty_like(k)

    @staticmethod
    def backward(ctx: Any, gq: torch.Tensor, gk: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return torch.empty_like(gq), torch.empty_like(gk)


def overheads() -> None:
    """CPU cost per call of each piece (tiny shapes), and what do_bench reports for a step that is all CPU."""
    qt = torch.randn(1, 2, 16, D, device=DEV, dtype=BF, requires_grad=True)
    kt = torch.randn(1, 1, 16, D, device=DEV, dtype=BF, requires_grad=True)
    ct, st = torch.randn(16, D, device=DEV, dtype=BF), torch.randn(16, D, device=DEV, dtype=BF)
    gq, gk = torch.randn_like(qt), torch.randn_like(kt)
    qd, kd = qt.detach(), kt.detach()
    qo, ko = torch.empty_like(qd), torch.empty_like(kd)

    def step(fn: Callable[[], Tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        def run() -> None:
            qt.grad = kt.grad = None
            a, b = fn()
            torch.autograd.backward([a, b], [gq, gk])
        return run

    def eager() -> Tuple[torch.Tensor, torch.Tensor]:
        c, s = ct[None, None], st[None, None]
        return qt * c + rot(qt) * s, kt * c + rot(kt) * s

    def no_grad_rope() -> None:
        with torch.no_grad():
            rope(qd, kd, ct, st)

    pieces: Dict[str, Callable[[], Any]] = {
        "one _launch (the kernel's launch)": lambda: rm._launch(qd, qo, kd, ko, ct[None], st[None], backward=False),
        "rope forward, no grad": no_grad_rope,
        "rope fwd+bwd step (autograd)": step(lambda: rope(qt, kt, ct, st)),
        "empty autograd Function fwd+bwd step (floor)": step(lambda: _Empty.apply(qt, kt)),
        "torch eager fwd+bwd step": step(eager),
        "x.clone()": lambda: qd.clone(),
    }
    res: Dict[str, Any] = {name: cpu_us(fn) for name, fn in pieces.items()}
    emit({"cpu_us_per_call": res})
    emit({"do_bench_ms_of_cpu_only_steps": {
        "empty autograd Function fwd+bwd": round(bench(pieces["empty autograd Function fwd+bwd step (floor)"]), 4),
        "rope fwd+bwd at a tiny shape": round(bench(pieces["rope fwd+bwd step (autograd)"]), 4)}})


def measure_doctor(case: Case, copy: float, name: str, config: Optional[Tuple[int, int, int]] = None,
                   graph: bool = True) -> Optional[float]:
    """fwd+bwd of doctor's rope through autograd (do_bench), and its two kernels alone (CUDA graph)."""
    undo = with_config(config)
    try:
        used = rm._config(HQ, S, D // 2)
        err = case.error(case.doctor)
        ms = bench(case.step(case.doctor))
        emit(row(copy, name, case.layout, ms, rel_err=f"{err:.1e}", config=used))
        if graph:
            emit(row(copy, name + ": its 2 kernels alone (CUDA graph)", case.layout, graph_ms(kernel_pair(case)),
                     config=used))
            emit(row(copy, name + ": whole autograd step in a CUDA graph", case.layout,
                     graph_ms(case.step(case.doctor)), config=used))
        return ms
    except Exception as exc:  # one failing config must not hide the others
        emit({"layout": case.layout, "impl": name, "config": config, "err": repr(exc)[:300]})
        return None
    finally:
        undo()


def main() -> None:
    """Every measurement; each failure is recorded, not fatal."""
    torch.manual_seed(0)
    emit({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
          "triton": __import__("triton").__version__, "q": [B, HQ, S, D], "k": [B, HK, S, D],
          "bytes_fwd_bwd": NBYTES})
    a = torch.randn(1 << 30, device=DEV, dtype=BF)
    b = torch.empty_like(a)
    copy = 2 * a.numel() * 2 / bench(lambda: b.copy_(a)) / 1e6
    emit({"impl": "copy 2 GiB (ceiling)", "GBps": round(copy)})
    del a, b
    try:
        overheads()
    except Exception as exc:
        emit({"overheads_err": repr(exc)[:300]})

    cases = [Case("contiguous"), Case("transposed")]
    best: Dict[str, Tuple[float, Any]] = {}
    if "--no-sweep" not in sys.argv:  # GPU time of the two kernels per tile, from CUDA graphs
        for config in SWEEP:
            undo = with_config(config)
            try:
                for case in cases:
                    ms = graph_ms(kernel_pair(case))
                    emit(row(copy, "sweep: 2 kernels alone (CUDA graph)", case.layout, ms, config=config))
                    if ms < best.get(case.layout, (1e9, None))[0]:
                        best[case.layout] = (ms, config)
            except Exception as exc:
                emit({"impl": "sweep", "config": config, "err": repr(exc)[:300]})
            finally:
                undo()
        emit({"sweep_best": {lay: {"ms": round(ms, 4), "config": cfg, "GBps": round(NBYTES / ms / 1e6)}
                             for lay, (ms, cfg) in best.items()}})

    for case in cases:
        # detached: a view of a leaf kept alive here would pin its AccumulateGrad node to this stream,
        # which breaks the CUDA-graph capture of the autograd step below
        qd, kd = (t.detach() for t in case.views())
        emit(row(copy, "clone of q and k (one pass's bytes)", case.layout, bench(lambda: (qd.clone(), kd.clone())),
                 PASS_BYTES))
        del qd, kd
        measure_doctor(case, copy, "doctor")
        for lay, (_, cfg) in best.items():
            measure_doctor(case, copy, f"doctor, tile best for {lay}", tuple(cfg), graph=lay == case.layout)
        try:
            err = case.error(case.eager)
            emit(row(copy, "torch_eager", case.layout, bench(case.step(case.eager)), rel_err=f"{err:.1e}"))
            emit(row(copy, "torch_eager: whole autograd step in a CUDA graph", case.layout,
                     graph_ms(case.step(case.eager))))
        except Exception as exc:
            emit({"layout": case.layout, "impl": "torch_eager", "err": repr(exc)[:300]})

    for case in cases:  # last: compiling takes a while
        try:
            compiled = torch.compile(case.eager)
            err = case.error(compiled)
            emit(row(copy, "torch_compile", case.layout, bench(case.step(compiled)), rel_err=f"{err:.1e}"))
        except Exception as exc:
            emit({"layout": case.layout, "impl": "torch_compile", "err": repr(exc)[:300]})


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    main()
