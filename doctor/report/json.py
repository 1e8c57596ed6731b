"""The one JSON schema of `doctor check`, `doctor probe` and `doctor cache` output.

Every document starts with the same envelope, so one reader handles all three:

    schema_version  int     bumped when a field is removed or changes meaning (additions keep it)
    doctor_version  str
    command         str     "check", "probe", "cache status", "cache verify", "cache repair", "cache clear"
    exit_code       int     the process's exit code (doctor.exits)
    status          str     its word: healthy / warnings / errors / a change failed
    summary         object  findings per severity: {"ok": n, "info": n, "warn": n, "error": n}
    findings        array   Finding.to_dict(): id, severity, category, title, subject, evidence, explanation, fix

then the command's own fields (check: facts, rules_run, probes, dispatch; probe: fingerprint, results,
dispatch with candidates; cache: roots, plan, applied, ...).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Iterable, List

from doctor._version import __version__
from doctor.exits import status_of
from doctor.report.summary import counts, facts_summary

if TYPE_CHECKING:
    from doctor.findings import Finding
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
    return {
        **envelope("probe", exit_code, findings),
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
