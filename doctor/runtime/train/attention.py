"""Which attention implementation a packed run uses, each proven by a probe before it is trusted.

Packed rows need attention that stops at example boundaries. Candidates, in order of preference on CUDA:

    flash_attention_2   flash-attn's variable-length kernel (transformers reads the boundaries from position_ids)
    flex_attention      torch's FlexAttention with a document mask (the same boundaries, a compiled kernel)
    sdpa                the torch reference: SDPA with an explicit block-diagonal causal mask (packing.py)

A candidate is used only when its probe passed: a child process (its own group, a timeout; a crash or a
hang in a broken extension is a failed probe, never a dead run) runs the implementation on two packed
examples, forward and backward, and compares output and input gradients against each example run alone
through plain causal SDPA. On CPU the reference is the only candidate, with no probe (FlexAttention has no
backward on CPU). An implementation named in the config is probed too (on this device), and refused when it fails. Run directly: `python -m doctor.runtime.train.attention flash_attention_2 [cuda]` exits 0
when the probe passes.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Tuple

from doctor._util.proc import exit_reason, run
from doctor._util.timeouts import TimedOut
from doctor.errors import DoctorError
from doctor.runtime.train.packing import TORCH_MASK_IMPLEMENTATIONS, block_causal_mask

CUDA_CANDIDATES = ("flash_attention_2", "flex_attention")
PROBE_TIMEOUT = 180.0  # s: FlexAttention compiles on first use
PROBE_TOLERANCE = 2e-2  # bf16 output and gradients vs the per-example reference (relative to their scale)

Prober = Callable[[str], Tuple[bool, str]]


def choose(requested: str, device_type: str, packing: bool, prober: Optional[Prober] = None) -> Tuple[str, str]:
    """(transformers attn_implementation, why) for this run; DoctorError when the config names one whose probe fails."""
    probe = prober or (lambda impl: _announced_probe(impl, "cuda" if device_type == "cuda" else "cpu"))
    if requested in CUDA_CANDIDATES:  # named in the config: proven all the same (flex has no CPU backward, flash-attn
        # may be absent or broken), so a bad pick is one line now rather than an internal error at the first step
        ok, detail = probe(requested)
        if not ok:
            raise DoctorError(f"attention = {requested!r}: its probe failed on {device_type} ({detail}); "
                              f"use \"auto\" or \"sdpa\"")
        return requested, "set in the config; its packed-attention probe passed"
    if requested != "auto":
        return requested, "set in the config"
    if not packing:
        return "sdpa", "no packing: plain causal SDPA"
    if device_type != "cuda":
        return "sdpa", "torch SDPA with an explicit block-diagonal causal mask (the reference for packed rows)"
    failed: List[str] = []
    for impl in CUDA_CANDIDATES:
        ok, detail = probe(impl)
        if ok:
            return impl, f"packed-attention probe passed{'; ' + '; '.join(failed) if failed else ''}"
        failed.append(f"{impl}: {detail}")
    return "sdpa", "explicit block-diagonal mask (" + "; ".join(failed) + ")"


def _announced_probe(impl: str, device: str) -> Tuple[bool, str]:
    """probe_in_child, after a line on stderr: it takes seconds (FlexAttention compiles), and says who probed."""
    print(f"doctor train: probing attention {impl} on {device} (an isolated child process)", file=sys.stderr, flush=True)
    return probe_in_child(impl, device)


def probe_in_child(impl: str, device: str = "cuda") -> Tuple[bool, str]:
    """Run the packed-attention probe for impl in its own process: (passed, one-line detail)."""
    try:
        done = run([sys.executable, "-m", "doctor.runtime.train.attention", impl, device], timeout=PROBE_TIMEOUT)
    except TimedOut as e:
        return False, f"probe timed out ({e})"
    except OSError as e:
        return False, f"probe could not start ({e})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, (lines[-1][:200] if lines else exit_reason(done.returncode))


def probe_body(impl: str, device: str = "cuda") -> str:
    """The probe itself (bf16 on CUDA, fp32 elsewhere): packed attention vs each example alone; AssertionError on a mismatch."""
    from types import SimpleNamespace

    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    torch.manual_seed(0)
    dev, heads, dim = device, 4, 64
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    lengths = (37, 91)
    t = sum(lengths)
    q, k, v = (torch.randn(1, heads, t, dim, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
    pos = torch.cat([torch.arange(n, device=dev) for n in lengths])[None]
    fn = ALL_ATTENTION_FUNCTIONS[impl]

    class _Module(torch.nn.Module):
        """What the implementations read from the attention module they serve."""

        def __init__(self) -> None:
            super().__init__()
            self.is_causal = True
            self.layer_idx = 0
            self.config = SimpleNamespace(_attn_implementation=impl)
            self.proj = torch.nn.Linear(dim, dim, device=dev, dtype=dt)  # the dtype flash-attn casts fp32 inputs to

    mask: Any = None
    if impl in TORCH_MASK_IMPLEMENTATIONS:  # the reference takes its mask explicitly, as the loop passes it
        mask = block_causal_mask(pos, dt)
    elif impl == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        doc = torch.cat([torch.full((n,), i, device=dev) for i, n in enumerate(lengths)])
        mask = create_block_mask(lambda b, h, qi, ki: (doc[qi] == doc[ki]) & (ki <= qi), 1, None, t, t, device=dev)
    module = _Module()
    module.train()
    out, _ = fn(module, q, k, v, mask, scaling=dim ** -0.5, dropout=0.0, position_ids=pos, is_causal=True)
    out = out.transpose(1, 2) if out.shape[1] != heads else out  # implementations return [b, s, h, d]
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    start = 0
    for n in lengths:
        s = slice(start, start + n)
        qs, ks, vs = (x.detach()[:, :, s].float().requires_grad_() for x in (q, k, v))
        ref = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
        rq, rk, rv = torch.autograd.grad(ref, (qs, ks, vs), grad[:, :, s].float())
        for name, got, want in (("out", out[:, :, s], ref), ("dq", dq[:, :, s], rq), ("dk", dk[:, :, s], rk),
                                ("dv", dv[:, :, s], rv)):
            err = float((got.detach().float() - want.detach()).abs().max() / (want.detach().abs().max() + 1e-6))
            assert err < PROBE_TOLERANCE, f"{impl}: {name} off by {err:.3g} (relative) at example of {n} tokens"
        start += n
    return f"{impl}: packed output and gradients match each example alone ({str(dt).replace('torch.', '')}, {dev})"


def main(argv: List[str]) -> int:
    """`python -m doctor.runtime.train.attention IMPL [DEVICE]`: 0 when the probe passes, 1 when it fails."""
    impl = argv[0] if argv else ""
    try:
        print(probe_body(impl, argv[1] if len(argv) > 1 else "cuda"))
        return 0
    except Exception as e:  # the verdict is the exit code and the last line
        print(" ".join(f"{type(e).__name__}: {e}".split())[:300])
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
