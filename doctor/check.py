"""`doctor check` as a library call: gather Facts, load the matrix, run every rule isolated."""

from __future__ import annotations

import sys
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding, worst

# Exit codes (documented in README and `doctor --help`).
EXIT_OK, EXIT_WARN, EXIT_ERROR, EXIT_DOCTOR = 0, 1, 2, 3


class Report(NamedTuple):
    """Everything one check produced: the facts it saw, the matrix version and the findings."""

    facts: Facts
    matrix_version: str
    findings: Tuple[Finding, ...]
    rules_run: Tuple[str, ...]
    probes: Tuple[object, ...] = ()  # ProbeResult verdicts when probes ran (or were reused)
    dispatch: Tuple[object, ...] = ()  # dispatch Choices derived from them
    probe_note: str = ""  # why probes did not run, or how they ran (cached / fresh)

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings, 2 errors."""
        return exit_code_for(self.findings)


def exit_code_for(findings: Iterable[Finding]) -> int:
    """Map the worst severity to the documented exit code."""
    w = worst(findings)
    if w >= Severity.ERROR:
        return EXIT_ERROR
    if w >= Severity.WARN:
        return EXIT_WARN
    return EXIT_OK


def run_rules(facts: Facts, matrix: Matrix, debug: bool = False) -> Tuple[List[Finding], List[str]]:
    """Run every matrix rule; a rule that raises becomes a WARN finding about the doctor, unless debugging."""
    from doctor.rules import all_rules

    findings: List[Finding] = []
    names: List[str] = []
    for name, rule in all_rules():
        names.append(name)
        try:
            findings.extend(rule(facts, matrix))
        except Exception as exc:  # a bug or an input we did not foresee must not end the check
            if debug:
                raise
            findings.append(finding(
                "doctor.rule-failed", Severity.WARN, Category.DOCTOR, f"rule '{name}' could not run: {type(exc).__name__}: {exc}",
                {"rule": name, "error": f"{type(exc).__name__}: {exc}"},
                "This is a tune-doctor bug; rerun with --debug for the traceback and report it.", subject=name))
    return findings, names


def run_check(
    facts: Optional[Facts] = None,
    matrix: Optional[Matrix] = None,
    scripts: Sequence[str] = (),
    include_process_imports: bool = False,
    debug: bool = False,
    gpu_timeout: float = 3.0,
    probes: bool = False,
    probe_options: Optional[dict] = None,
) -> Report:
    """Gather facts (unless given), run all rules, and check scripts' import order."""
    from doctor.compat_matrix.loader import load_matrix

    if matrix is None:
        matrix = load_matrix()
    if facts is None:
        from doctor.inventory import gather

        facts = gather(gpu_timeout=gpu_timeout)
    findings, names = run_rules(facts, matrix, debug)
    if scripts or include_process_imports:
        from doctor.rules.imports import check_imports, check_script

        for path in scripts:
            findings.extend(check_script(path))  # DoctorError on an unreadable script: exit 3
            names.append(f"script:{path}")
        if include_process_imports:
            findings.extend(check_imports(sys.modules))
            names.append("process-imports")
    for note in facts.notes:
        findings.append(finding("inventory.note", Severity.INFO, Category.DOCTOR, note))
    probe_results: Tuple[object, ...] = ()
    choices: Tuple[object, ...] = ()
    note = "probes off (--no-probes)" if not probes else ""
    if probes:
        from doctor.probes.session import probes_apply

        if not probes_apply(facts):
            note = ("probes skipped: simulated hardware (DOCTOR_GPUS / DOCTOR_DRIVER_VERSION)" if facts.hardware.source == "override"
                    else "probes skipped: they need a CUDA build of torch and an NVIDIA GPU")
        else:
            from doctor import dispatch
            from doctor.probes.session import run_probes
            from doctor.probes.findings import probe_findings

            pr = run_probes(facts, **(probe_options or {}))
            probe_results = pr.results
            choices = tuple(dispatch.table(pr.results))
            findings.extend(probe_findings(pr.results, facts, matrix, choices))
            names.append("probes")
            note = f"probes: ran {len(pr.ran)}, reused {len(pr.cached)} cached verdicts ({pr.wall_s:.1f} s)"
    return Report(facts, matrix.data_version, tuple(findings), tuple(names), probe_results, choices, note)
