"""Which backend each patched op runs: the dispatcher's choice from this environment's probe verdicts.

Verdicts come from the doctor's cache for this environment's fingerprint (doctor.probes.store). With none
for an op and a CUDA GPU here, the op's probes run first (isolated children, seconds); with no GPU (or when
probes cannot run) the ops get the torch references and ONE line on stderr says so. DOCTOR_BACKEND_<OP>
forces a backend; one whose probe did not pass raises (doctor.dispatch.choose), never a silent fallback.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable, Collection, Dict, List, Mapping, NamedTuple, Optional, Sequence, TextIO, Tuple

from doctor import dispatch
from doctor.envvars import CUDA_VISIBLE_DEVICES, DOCTOR_RUNTIME_PROBES, TRITON_INTERPRET
from doctor.errors import DoctorError
from doctor.verdicts import ProbeResult

if TYPE_CHECKING:  # pragma: no cover
    from doctor.probes.spec import ProbeSpec


class AttentionShape(NamedTuple):
    """The shapes a model trains attention at (what the attention probe runs)."""

    heads: int
    kv_heads: int
    head_dim: int
    seq: int


class Picks(NamedTuple):
    """The backend per op and the callable behind it, with the one line to show when nothing was proven."""

    choices: Dict[str, dispatch.Choice]
    functions: Dict[str, Callable[..., object]]
    note: str  # "" when verdicts (or forcing) decided everything


def _verdicts_by_op(results: Sequence[ProbeResult], shape_tag: str) -> Dict[str, Dict[str, ProbeResult]]:
    """Verdicts by op and backend; attention verdicts taken at this model's shape win over the generic ones."""
    by_op: Dict[str, Dict[str, ProbeResult]] = {}
    shaped: Dict[str, ProbeResult] = {}
    for r in results:
        if not r.op or not r.backend or r.id.startswith("dispatch."):
            continue
        if r.op == "attention" and shape_tag and r.id.startswith("attention.") and shape_tag in r.id:
            shaped[r.backend] = r
        elif r.op != "attention" or not r.id.startswith("attention."):
            by_op.setdefault(r.op, {})[r.backend] = r
    if shaped:
        by_op["attention"] = shaped
    return by_op


def load_verdicts(ops: Sequence[str], shape: Optional[AttentionShape], environ: Mapping[str, str],
                  run: bool = True, forced: Collection[str] = ()) -> Tuple[Dict[str, Dict[str, ProbeResult]], str]:
    """Verdicts for `ops` in this environment (probing what is missing when a CUDA GPU is here), and a note
    ("" or one line saying the torch references stand in because nothing could be proven; `forced` ops,
    whose backend DOCTOR_BACKEND_<OP> names, are left out of it: no reference stands in for them)."""
    from doctor.inventory import gather
    from doctor.probes import store
    from doctor.probes.catalogue import CATALOGUE_VERSION
    from doctor.probes.fingerprint import fingerprint
    from doctor.probes.session import probes_apply, run_probes

    facts = gather(environ=environ)
    fp = fingerprint(facts, environ.get(CUDA_VISIBLE_DEVICES), CATALOGUE_VERSION)  # the key run_probes uses
    tag = attention_tag(shape) if shape else ""
    cached = list(store.load(fp).values())
    by_op = _verdicts_by_op(cached, tag)
    # attention verdicts at other shapes stand in, but this model's shapes are probed where a GPU can
    missing = _missing(ops, by_op, tag)
    if not missing:
        return by_op, ""
    if not (run and probes_apply(facts)):
        unproven = [op for op in ops if not by_op.get(op) and op not in forced]
        why = ("probes off: " + DOCTOR_RUNTIME_PROBES + "=0" if not run else
               "no CUDA GPU here" if not facts.hardware.gpus else "probes cannot run here")
        return by_op, (f"doctor.runtime: no probe verdicts for {', '.join(unproven)} in this environment ({why}): "
                       f"using the torch reference ops (DOCTOR_BACKEND_<OP> forces one)") if unproven else ""

    def say_wait() -> None:
        print("doctor.runtime: another process on this machine is probing this environment (torchrun starts one per "
              "GPU): waiting for its verdicts", file=sys.stderr)

    # one process per machine probes (N ranks started at once would otherwise run N suites side by side)
    with store.probing(fp, on_wait=say_wait) as waited:
        if waited:  # the other process's verdicts
            cached = list(store.load(fp).values())
            by_op = _verdicts_by_op(cached, tag)
            missing = _missing(ops, by_op, tag)
            if not missing:
                return by_op, ""
        specs = probe_specs(missing, shape)
        print(f"doctor.runtime: probing {', '.join(missing)} on this GPU first ({len(specs)} probes, once per "
              "environment)", file=sys.stderr)
        done = run_probes(facts, catalogue=specs, environ=environ)
    return _verdicts_by_op(cached + list(done.results), tag), ""


def _missing(ops: Sequence[str], by_op: Mapping[str, Mapping[str, ProbeResult]], tag: str) -> List[str]:
    """The ops without verdicts; attention also when none was probed at this model's shape (`tag`)."""
    return [op for op in ops if not by_op.get(op) or (op == "attention" and tag and not any(
        tag in r.id for r in by_op["attention"].values()))]


def probe_specs(ops: Sequence[str], shape: Optional[AttentionShape]) -> List["ProbeSpec"]:
    """The probes that prove backends for `ops`: the catalogue's kernels.* probes, and attention at `shape`
    (the catalogue's generic attention probes without one); never the dispatch.* checks."""
    from doctor.probes.catalogue import CATALOGUE, attention_at

    specs = [s for s in CATALOGUE if s.op in ops and s.op != "attention"]
    if "attention" in ops:
        specs += list(attention_at(*shape)) if shape else [s for s in CATALOGUE if s.op == "attention"]
    return specs


# What a forced, never-probed backend imports beyond torch (a package missing would fail at the first forward)
_ATTENTION_NEEDS = {"flash-attn": ("flash-attn",), "xformers": ("xformers",)}
_TRITON_KERNELS = ("triton", "liger", "cut-cross-entropy")  # Triton kernels as such (torch-compile also runs on CPU)


def _check_installed(op: str, backend: str, verdicts: Mapping[str, ProbeResult], env: Mapping[str, str]) -> None:
    """DoctorError now, at patch time, for a forced backend no probe saw whose package is not installed."""
    import importlib.util

    from doctor.backends.ops import REQUIRES

    if backend in verdicts:  # a probe judged it (choose() refuses one that did not pass)
        return
    needs = _ATTENTION_NEEDS.get(backend, ()) if op == "attention" else REQUIRES.get(backend, ())
    missing = [d for d in needs if importlib.util.find_spec(d.replace("-", "_")) is None]
    if missing:
        raise DoctorError(f"{dispatch.env_var(op)}={backend}: {', '.join(missing)} is not installed here "
                          f"(unset it, or install {missing[0]})")
    if backend in _TRITON_KERNELS and not env.get(TRITON_INTERPRET):
        import torch

        if not torch.cuda.is_available():  # else Triton's "0 active drivers" at the first forward
            raise DoctorError(f"{dispatch.env_var(op)}={backend}: Triton kernels need a CUDA GPU here "
                              "(TRITON_INTERPRET=1 runs them in Triton's interpreter, slowly: for tests)")


def attention_tag(shape: AttentionShape) -> str:
    """The probe-id fragment naming an attention shape ("h32kv8d128s2048")."""
    return f"h{shape.heads}kv{shape.kv_heads}d{shape.head_dim}s{shape.seq}"


def pick(ops: Sequence[str], shape: Optional[AttentionShape] = None, environ: Optional[Mapping[str, str]] = None,
         out: Optional[TextIO] = None) -> Picks:
    """The dispatcher's backend and callable for each op (DoctorError for a forced backend that failed its probe)."""
    env = dict(os.environ if environ is None else environ)
    dispatch.validate_overrides(env)  # DOCTOR_BACKEND_RMSNORM (no such op) would otherwise be ignored silently
    forced = [op for op in ops if (env.get(dispatch.env_var(op)) or "").strip()]
    # `doctor run --no-probes` sets DOCTOR_RUNTIME_PROBES=0: cached verdicts only, never a probe before the script
    by_op, note = load_verdicts(ops, shape, env, run=(env.get(DOCTOR_RUNTIME_PROBES) or "1").strip() != "0",
                                forced=forced)
    choices = {op: dispatch.choose(op, by_op.get(op, {}), env) for op in ops}
    for op in forced:
        _check_installed(op, choices[op].backend, by_op.get(op, {}), env)
    if note:
        print(note, file=out or sys.stderr)
    functions = {op: dispatch.implementation(op, c.backend) for op, c in choices.items()}
    return Picks(choices, functions, note)
