"""The one JSON schema of `doctor check`, `doctor probe`, `doctor cache` and `doctor install` output.

Every document starts with the same envelope, so one reader handles all three:

    schema_version  int     bumped when a field is removed or changes meaning (additions keep it)
    doctor_version  str
    command         str     "check", "check --undo", "probe", "probe all-gpus", "probe distributed", "cache status",
                            "cache verify", "cache repair", "cache clear", "install"
    exit_code       int     the process's exit code (doctor.exits)
    status          str     its word: healthy / warnings / errors / a change failed
    summary         object  findings per severity: {"ok": n, "info": n, "warn": n, "error": n}
    findings        array   Finding.to_dict(): id, severity, category, title, subject, evidence, explanation, fix

then the command's own fields (check: facts, rules_run, probes, dispatch; probe: fingerprint, results,
dispatch with candidates; cache: roots, plan, applied, ...).

`probe --all-gpus` (command "probe all-gpus") adds wall_s, notes (what reading CUDA_VISIBLE_DEVICES noticed)
and `gpus`, one object per visible GPU in CUDA's order: index (nvidia-smi's), uuid (null when unknown), name,
compute_capability ("9.0" or "?"), memory_mib, then that GPU's verdicts with exactly the fields of a `probe`
document (fingerprint, wall_s, ran, cached, results, dispatch). Its findings cover every GPU (`probe.gpu`,
`probe.gpu-slow`: subject is the GPU's index).

A package plan (`check --fix`, `install`) adds the same fields wherever it appears:

    plan        object  Plan.to_dict(): status (verified / unverified / failed / nothing-to-do), verified_against,
                        reason, targets, changes (name, before, after, kind, index_url, reason), keeps,
                        constraints, actions, verification (fixed, remaining, new, accepted, tried, resolver
                        runs and seconds, doctor seconds), unfixable, notes, restart; plus python (the target)
                        and runs (the pip command lines as run)
    dry_run     bool
    applied     array   per pip run: action, command, status (applied / failed / not run / dry run), detail, note
    steps       array   the findings' other fix steps run (check --fix): action, ok
    state_file  str     where the versions before the plan were saved (`doctor check --undo` reads it), or null
    after       array   the re-check's findings (null when nothing was applied)
    defect      object  null, or still_there / new / drift: the re-check contradicts the verified plan (exit 6)

`check --fix --json` is ONE document: the check before (findings, facts, ...), the plan fields above, and
exit_code/status of the whole command. `check --undo --json`: the re-check (null in a dry run) and `undo`
(the record undone, changes, the pip runs as applied).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Sequence

from doctor._version import __version__
from doctor.exits import status_of
from doctor.report.summary import counts, facts_summary

if TYPE_CHECKING:
    from doctor.findings import Finding
    from doctor.fix import Applied, Outcome, PipRun
    from doctor.resolve.undo import UndoPlan
    from doctor.probes.all_gpus import AllGpuRun
    from doctor.probes.session import ProbeRun
    from doctor.report.cache import CacheOutcome
    from doctor.report_data import ReportData as Report

# 2: fixes are typed actions (kind + their own fields, no "args"); every document has the envelope above.
JSON_SCHEMA_VERSION = 2


def envelope(command: str, exit_code: int, findings: Iterable["Finding"]) -> Dict[str, Any]:
    """The fields every document starts with."""
    fs = list(findings)
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "doctor_version": __version__,
        "command": command,
        "exit_code": int(exit_code),
        "status": status_of(exit_code),
        "summary": counts(fs),
        "findings": [f.to_dict() for f in fs],
    }


def dumps(doc: Dict[str, Any]) -> str:
    """The document as printed: indented, UTF-8 kept readable."""
    return json.dumps(doc, indent=2, ensure_ascii=False)


def check_document(report: "Report") -> Dict[str, Any]:
    """`doctor check --json` (and Report.to_json())."""
    return {
        **envelope("check", report.exit_code, report.findings),
        "matrix_version": report.matrix_version,
        "facts": facts_summary(report),
        "rules_run": list(report.rules_run),
        "probes": [r.to_dict() for r in report.probes],  # type: ignore[attr-defined]
        "dispatch": [{"op": c.op, "backend": c.backend, "reason": c.reason} for c in report.dispatch],  # type: ignore[attr-defined]
        "probe_note": report.probe_note,
    }


def to_json(report: "Report") -> str:
    """The whole check report as JSON text."""
    return dumps(check_document(report))


def probe_document(run: "ProbeRun", choices: Iterable[Any], findings: Iterable["Finding"], exit_code: int) -> Dict[str, Any]:
    """`doctor probe --json`: verdicts, the dispatch table with every candidate, the findings."""
    return {**envelope("probe", exit_code, findings), **probe_run_fields(run, choices)}


def all_gpus_document(run: "AllGpuRun", choices: Sequence[Iterable[Any]], findings: Iterable["Finding"],
                      exit_code: int) -> Dict[str, Any]:
    """`doctor probe --all-gpus --json`: findings over every GPU, then per GPU its identity and its verdicts
    (the fields of a `probe` document); `choices`: each GPU's dispatch table, in the order of run.runs."""
    return {
        **envelope("probe all-gpus", exit_code, findings),
        "wall_s": round(run.wall_s, 3),
        "notes": list(run.notes),
        "gpus": [{"index": gr.gpu.index, "uuid": gr.gpu.uuid, "name": gr.gpu.name, "compute_capability": gr.gpu.cc,
                  "memory_mib": gr.gpu.memory_mib, **probe_run_fields(gr.run, c)} for gr, c in zip(run.runs, choices)],
    }


def probe_run_fields(run: "ProbeRun", choices: Iterable[Any]) -> Dict[str, Any]:
    """One probe run's fields: fingerprint, timings, what ran or was cached, verdicts, dispatch with candidates."""
    return {
        "fingerprint": run.fingerprint,
        "wall_s": round(run.wall_s, 3),
        "ran": list(run.ran),
        "cached": list(run.cached),
        "results": [r.to_dict() for r in run.results],
        "dispatch": [{"op": c.op, "backend": c.backend, "reason": c.reason,
                      "candidates": [{"backend": b, "status": s, "time_ms": t} for b, s, t in c.candidates]}
                     for c in choices],
    }


def root_document(s: Any) -> Dict[str, Any]:
    """One cache root as scanned (doctor.cache.scan.RootScan)."""
    pr = s.write_check  # doctor.cache.location.WriteCheck, None when not tested
    return {
        "kind": s.root.kind, "role": s.root.role, "path": s.root.path, "real_path": s.real_path or None,
        "source": s.root.source, "relative": s.root.relative, "env_var": s.root.env_var,
        "status": s.status, "exists": None if s.status == "unresponsive" else s.status in ("ok", "not-a-directory"),
        "writable": None if pr is None else pr.writable, "writable_detail": None if pr is None else (pr.detail or pr.status),
        "fs_type": s.mount.fs_type if s.mount else None, "mount_point": s.mount.mount_point if s.mount else None,
        "network_fs": bool(s.mount and s.mount.network),
        "entries": s.entries, "files": s.files, "bytes": s.bytes, "complete": s.complete,
        "live_locks": s.live_locks, "quarantine": s.quarantine or None,
        "detail": s.detail or None, "elapsed_s": round(s.elapsed, 4),
    }


def cache_document(out: "CacheOutcome") -> Dict[str, Any]:
    """`doctor cache ACTION --json`: roots, findings, and for repair/clear the plan and what was done."""
    doc: Dict[str, Any] = {**envelope(out.command, out.exit_code, out.findings), "which": list(out.which)}
    if out.command != "cache clear":
        doc.update(roots=[root_document(s) for s in out.scans], verify_note=out.verify_note, limits=dict(out.limits))
    if out.plan is not None:
        doc.update(plan=[a.to_dict() for a in out.plan], dry_run=out.dry_run)
    if out.after is not None:
        doc["after"] = [f.to_dict() for f in out.after]
    doc["applied"] = applied_documents(out)
    if out.command != "cache clear":
        doc["persist"] = list(out.persist)
    return doc


def applied_documents(out: "CacheOutcome") -> List[Dict[str, Any]]:
    """Each change tried: the action, whether it was done (or would be, in a dry run), and what happened."""
    return [{"action": x.action.to_dict(), "ok": x.ok, "result": x.result} for x in out.applied]


def plan_fields(out: "Outcome") -> Dict[str, Any]:
    """The fields a package plan adds to a document (see the module's docstring)."""
    applied = out.applied
    plan = dict(out.plan.to_dict())
    plan.update(python=out.plan.python, runs=[r.command for r in out.runs])
    return {
        "plan": plan,
        "dry_run": out.dry_run,
        "applied": [s.to_dict() for s in applied.steps] if applied is not None else [],
        "steps": [{"action": s.action.to_dict(), "finding": s.finding_id, "ok": ok} for s, ok in out.steps],
        "state_file": applied.state_file if applied is not None else None,
        "after": [f.to_dict() for f in out.after.findings] if out.after is not None else None,
        "defect": out.defect.to_dict() if out.defect is not None else None,
    }


def fix_document(report: "Report", out: "Outcome") -> Dict[str, Any]:
    """`doctor check --fix --json`: the check, its plan, what was applied and the re-check, as one document."""
    doc = check_document(report)
    doc.update(exit_code=int(out.exit_code), status=status_of(out.exit_code), **plan_fields(out))
    return doc


def install_document(requested: List[str], report: "Report", out: "Outcome") -> Dict[str, Any]:
    """`doctor install --json`: findings of the re-check (of the check before when nothing was applied)."""
    findings = out.after.findings if out.after is not None else report.findings
    return {**envelope("install", out.exit_code, findings), "requested": requested,
            "facts": facts_summary(out.after if out.after is not None else report), **plan_fields(out)}


def undo_document(undo: "UndoPlan", runs: Iterable["PipRun"], applied: "Applied | None", after: "Report | None",
                  exit_code: int) -> Dict[str, Any]:
    """`doctor check --undo --json`: the re-check (when one ran) and the undo: record, changes, pip runs."""
    doc = check_document(after) if after is not None else envelope("check --undo", exit_code, ())
    rec = undo.record
    doc.update(command="check --undo", exit_code=int(exit_code), status=status_of(exit_code))
    doc["undo"] = {
        "record": {"id": rec.id, "command": rec.command, "status": rec.status, "progress": rec.progress},
        "changes": [{"name": c.name, "before": c.before, "after": c.after, "kind": c.kind, "index_url": c.index_url}
                    for c in undo.changes],
        "unchanged": list(undo.unchanged),
        "notes": list(undo.notes),
        "runs": [r.command for r in runs],
        "applied": [s.to_dict() for s in applied.steps] if applied is not None else [],
    }
    return doc
