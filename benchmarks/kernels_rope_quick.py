"""Quick timing of doctor's RoPE at the issue's shape (GPU only), both layouts, with a tile sweep.

q 4x32x4096x128 + k 4x8x4096x128, bf16, forward+backward as ../shared/anchors/peer_kernels.py measures
it: the contiguous [B, H, S, D] layout and the transposed views of [B, S, H, D] projections (as Hugging
Face attention passes them), output gradients contiguous [B, H, S, D]. GB/s = 4 x (q + k) x 2 B / time
(ANCHORS.md's count). Against torch eager, torch.compile, a copy of 2 GiB (the ceiling) and clones of q
and k (the same bytes as one pass). The sweep times other (BLOCK_H, BLOCK_S, num_warps) tiles to pick
the default. Prints JSON lines and rewrites $OUT/rope_quick.json after each row (a run cut short still
leaves what it measured).
Run from the repository root: PYTHONPATH=$PWD python benchmarks/kernels_rope_quick.py [--no-sweep]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from triton.testing import do_bench

import doctor.kernels as kernels

rope: Callable[..., Tuple[Any, Any]] = getattr(kernels, "rope")  # the lazy map first, then the module
rm: Any = sys.modules["doctor.kernels.rope"]

B, HQ, HK, S, D = 4, 32, 8, 4096, 128
DEV, BF = "cuda", torch.bfloat16
RESULTS: List[Dict[str, Any]] = []
OUT = os.environ.get("OUT", "/tmp")
SWEEP = [(bh, bs, w) for w in (4, 8) for bh, bs in
         ((1, 16), (2, 8), (4, 4), (8, 2), (2, 16), (4, 8), (8, 4), (16, 2), (4, 16), (8, 8), (16, 4),
          (32, 2), (8, 16))] + [(8, 4, 2), (4, 4, 2), (8, 8, 16), (16, 8, 16)]


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


def measure_doctor(case: Case, copy: float, name: str, config: Optional[Tuple[int, int, int]] = None,
                   parts: bool = False) -> Optional[float]:
    """fwd+bwd of doctor's rope (optionally with a forced tile), and its two passes alone."""
    real_config = rm._config
    if config is not None:
        rm._config = lambda *_: config
    try:
        err = case.error(case.doctor)
        ms = bench(case.step(case.doctor), rep=300 if parts else 150)
        emit(row(copy, name, case.layout, ms, rel_err=f"{err:.1e}", config=config or real_config(HQ, S, D // 2)))
        if parts:
            q, k = case.views()
            qd, kd = q.detach(), k.detach()
            qo, ko = torch.empty_like(qd), torch.empty_like(kd)
            c3, s3 = case.cos[None], case.sin[None]
            f = bench(lambda: rm._launch(qd, qo, kd, ko, c3, s3, backward=False))
            b = bench(lambda: rm._launch(case.dq, qo, case.dk, ko, c3, s3, backward=True))
            emit(row(copy, name + " forward pass alone", case.layout, f, PASS_BYTES))
            emit(row(copy, name + " backward pass alone", case.layout, b, PASS_BYTES))
        return ms
    except Exception as exc:  # one failing config must not hide the others
        emit({"layout": case.layout, "impl": name, "config": config, "err": repr(exc)[:300]})
        return None
    finally:
        rm._config = real_config


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

    cases = [Case("contiguous"), Case("transposed")]
    for case in cases:
        q, k = case.views()
        ms = bench(lambda: (q.clone(), k.clone()))
        emit(row(copy, "clone of q and k (one pass's bytes)", case.layout, ms, PASS_BYTES))
        measure_doctor(case, copy, "doctor", parts=True)
        try:
            err = case.error(case.eager)
            emit(row(copy, "torch_eager", case.layout, bench(case.step(case.eager)), rel_err=f"{err:.1e}"))
        except Exception as exc:
            emit({"layout": case.layout, "impl": "torch_eager", "err": repr(exc)[:300]})

    if "--no-sweep" not in sys.argv:
        best: Dict[str, Tuple[float, Any]] = {}
        for config in SWEEP:
            for case in cases:
                got = measure_doctor(case, copy, "doctor sweep", config)
                if got is not None and got < best.get(case.layout, (1e9, None))[0]:
                    best[case.layout] = (got, config)
        emit({"sweep_best": {lay: {"ms": round(ms, 4), "config": cfg, "GBps": round(NBYTES / ms / 1e6)}
                             for lay, (ms, cfg) in best.items()}})

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
