"""The JSON output of check (schema_version lets consumers detect changes)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from doctor._version import __version__
from doctor.report.summary import EXIT_MEANING, counts, facts_summary

if TYPE_CHECKING:
    from doctor.check import Report

JSON_SCHEMA_VERSION = 1


def to_json(report: "Report") -> str:
    """The whole report as JSON (schema_version lets consumers detect changes)."""
    findings = list(report.findings)
    doc = {
        "schema_version": JSON_SCHEMA_VERSION,
        "doctor_version": __version__,
        "matrix_version": report.matrix_version,
        "exit_code": report.exit_code,
        "status": EXIT_MEANING.get(report.exit_code, "?"),
        "summary": counts(findings),
        "facts": facts_summary(report),
        "findings": [fd.to_dict() for fd in findings],
        "rules_run": list(report.rules_run),
        "probes": [r.to_dict() for r in report.probes],  # type: ignore[attr-defined]
        "dispatch": [{"op": c.op, "backend": c.backend, "reason": c.reason} for c in report.dispatch],  # type: ignore[attr-defined]
        "probe_note": report.probe_note,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)
