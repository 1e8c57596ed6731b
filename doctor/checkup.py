"""A checkup (flutter's Doctor): gather Facts, run every rule isolated, the imports, the probes -> Report.

`check()` and `check_imports()` are the library's face (re-exported as doctor.check / doctor.check_imports);
`run_check()` is what `doctor check` calls with the CLI's options. Their Report renders itself: the text
report as str(), rich HTML in Jupyter, the `doctor check --json` document from to_json().

The module is not called `check` on purpose: a submodule doctor.check would be set as the package's
`check` attribute the first time anything imported it, hiding the function doctor.check().
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from doctor.compat_matrix.model import Matrix
from doctor.errors import DoctorError
from doctor.exits import status_of
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding
from doctor.report_data import ReportData
from doctor.verdicts import ProbeResult

if TYPE_CHECKING:
    from rich.console import Console

    from doctor.dispatch import Choice

__all__ = ["Report", "check", "check_imports", "run_check", "run_rules"]

# Text faces are never hard-wrapped: a fix command broken over two lines pastes as a partial command.
# A string or a notebook has no width of its own, so lines are as long as their content (the browser
# soft-wraps the HTML).
_UNWRAPPED = 10_000
_HTML = ('<pre style="white-space:pre-wrap;overflow-x:auto;line-height:normal;'
         "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>")

PathArg = Union[str, "os.PathLike[str]"]  # a script path as str or pathlib.Path


class Report(ReportData):
    """What doctor.check() / doctor.check_imports() found: `.findings`, `.exit_code`, and three faces.

    print(report) / str(report): the text report without colour; in Jupyter the report displays as rich
    HTML; report.to_json(): the same document as `doctor check --json`.
    """

    __slots__ = ()

    def to_json(self) -> str:
        """The report as `doctor check --json` prints it (with schema_version)."""
        from doctor.report.json import to_json  # renderers load on first use, never with `import doctor`

        return to_json(self)

    def __str__(self) -> str:
        """The text report without colour or trailing spaces."""
        return _plain(_recorded(self).export_text(clear=False, styles=False))

    def __repr__(self) -> str:
        """One line; the report itself is str() / print()."""
        code = self.exit_code
        return f"<doctor.Report: exit {code} ({status_of(code)}), {len(self.findings)} findings; print() it for the report>"

    def _repr_html_(self) -> str:
        """Jupyter: the text report as coloured HTML."""
        return _recorded(self).export_html(inline_styles=True, code_format=_HTML)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Dict[str, str]:
        """Jupyter/IPython: HTML and plain text from one rendering."""
        con = _recorded(self)
        text = _plain(con.export_text(clear=False, styles=False))
        return {"text/plain": text, "text/html": con.export_html(inline_styles=True, code_format=_HTML)}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's text/plain (a terminal IPython, a notebook's plain view): the text report, not the repr.

        IPython's own printer for tuples would otherwise win over the bundle's text/plain (a Report is a tuple).
        """
        printer.text(str(self).rstrip("\n"))


def _recorded(report: ReportData) -> "Console":
    """A rich Console that recorded the text report (printed to a string, never to the terminal)."""
    import io

    # lazy: rich and the text renderer load only when a report is shown as text or HTML
    from rich.console import Console

    from doctor.report.text import render_text

    con = Console(file=io.StringIO(), record=True, width=_UNWRAPPED, force_terminal=False, force_jupyter=False,
                  highlight=False)
    render_text(report, con)
    return con


def _plain(text: str) -> str:
    """Text without trailing spaces on any line."""
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def run_rules(facts: Facts, matrix: Matrix, debug: bool = False,
              scripts: Sequence[str] = ()) -> Tuple[List[Finding], List[str]]:
    """Run every matrix rule; a rule that raises becomes a WARN finding about the doctor, unless debugging."""
    from doctor import rules  # lazy: check_imports() (a notebook cell) never loads the rules

    return rules.run_rules(facts, matrix, debug=debug, scripts=scripts)


def run_check(
    facts: Optional[Facts] = None,
    matrix: Optional[Matrix] = None,
    scripts: Sequence[str] = (),
    include_process_imports: bool = False,
    debug: bool = False,
    gpu_timeout: float = 3.0,
    probes: bool = False,
    probe_options: Optional[Dict[str, Any]] = None,
    python: Optional[str] = None,
) -> Report:
    """Gather facts (unless given), run all rules, and check scripts' import order; `python`: check that
    interpreter's environment instead of this one (probes then run with it too)."""
    # Each part loads when this check needs it: `import doctor.checkup` stays cheap for check_imports().
    from doctor.compat_matrix.loader import load_matrix

    if matrix is None:
        matrix = load_matrix()
    if facts is None:
        from doctor.inventory import gather  # lazy: callers that bring their own Facts (tests, plans) skip it

        facts = gather(gpu_timeout=gpu_timeout, python=python)
    findings, names = run_rules(facts, matrix, debug, scripts)
    if scripts:
        from doctor.rules.import_order.script import check_script  # lazy: only with --script

        for path in scripts:
            findings.extend(check_script(path))  # DoctorError on an unreadable script: exit 3
            names.append(f"script:{path}")
    if include_process_imports:
        from doctor.rules.import_order.live import check_imports as live_imports  # lazy: library calls only

        findings.extend(live_imports(sys.modules))
        names.append("process-imports")
    for note in facts.notes:
        findings.append(finding("inventory.note", Severity.INFO, Category.DOCTOR, note))
    probe_results: Tuple[ProbeResult, ...] = ()
    choices: Tuple["Choice", ...] = ()
    note = "probes off (--no-probes)" if not probes else ""
    if probes:
        from doctor.probes.session import probes_apply  # lazy: the probe machinery loads only when probes run

        if not probes_apply(facts):
            note = ("probes skipped: simulated hardware (DOCTOR_GPUS / DOCTOR_DRIVER_VERSION)" if facts.hardware.source == "override"
                    else "probes skipped: they need a CUDA build of torch and an NVIDIA GPU")
        else:
            # lazy: runner, catalogue, dispatcher only when there is a GPU to probe
            from doctor import dispatch
            from doctor.probes.findings import probe_findings
            from doctor.probes.session import run_probes

            pr = run_probes(facts, **(probe_options or {}))
            probe_results = tuple(pr.results)
            choices = tuple(dispatch.table(pr.results))
            findings.extend(probe_findings(pr.results, facts, matrix, choices))
            names.append("probes")
            note = f"probes: ran {len(pr.ran)}, reused {len(pr.cached)} cached verdicts ({pr.wall_s:.1f} s)"
    return Report(facts, matrix.data_version, tuple(findings), tuple(names), probe_results, choices, note)


def _seconds(name: str, value: object) -> float:
    """A positive, finite number of seconds, or ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def check(
    *,
    scripts: Union[PathArg, Sequence[PathArg]] = (),
    process_imports: bool = True,
    probes: bool = False,
    refresh: bool = False,
    probe_timeout: Optional[float] = None,
    gpu_timeout: float = 3.0,
    debug: bool = False,
) -> Report:
    """`doctor check` as a library call: the environment of this interpreter, as a Report.

    scripts: training scripts or notebooks whose import order to check (parsed, never run), as `--script`.
    process_imports: also check the import order of THIS process (on by default: a library call runs in the
        user's notebook kernel or training process, unlike the CLI, which runs in a fresh one).
    probes: run the GPU probes (`doctor probe`) too. Off by default, unlike the CLI: a library call is often made
        from the process about to train, and a cold probe run takes tens of seconds of GPU time. Verdicts are
        cached per environment like the CLI's; refresh / probe_timeout are `--refresh` / `--probe-timeout`.
    gpu_timeout: limit for nvidia-smi, as `--gpu-timeout`. debug: a rule that raises propagates instead of
        becoming a finding. Bad arguments raise ValueError; bad input (an unreadable script, bad matrix data)
        raises doctor.DoctorError with a one-line message.
    """
    paths = [scripts] if isinstance(scripts, (str, os.PathLike)) else list(scripts)
    probe_limit = None if probe_timeout is None else _seconds("probe_timeout", probe_timeout)
    return run_check(scripts=[os.fspath(p) for p in paths], include_process_imports=process_imports, debug=debug,
                     gpu_timeout=_seconds("gpu_timeout", gpu_timeout), probes=probes,
                     probe_options={"refresh": refresh, "timeout": probe_limit})


def check_imports(modules: Optional[Mapping[str, object]] = None, *, gpu_timeout: float = 3.0) -> Report:
    """This process's import order (call it from a notebook cell), as a Report with only the Imports section.

    modules: a sys.modules-like mapping in import order (default: this process's sys.modules). The facts
    (GPU, driver, packages) are gathered for the report's header; no rule and no probe runs.
    """
    from doctor.inventory import gather  # the header's facts; the matrix rules never load here
    from doctor.rules.import_order.live import check_imports as live_imports

    findings = live_imports(sys.modules if modules is None else modules)  # before gather() imports anything
    facts = gather(gpu_timeout=_seconds("gpu_timeout", gpu_timeout))
    return Report(facts, _matrix_version(), tuple(findings), ("process-imports",), sections=(Category.IMPORTS,))


def _matrix_version() -> str:
    """The matrix data version for a report's header; check_imports reads no matrix fact, so a broken matrix
    (reported by `doctor check`) does not stop it."""
    from doctor.compat_matrix.loader import load_matrix  # TOML parsing: only when a check runs

    try:
        return load_matrix().data_version
    except DoctorError:
        return "unreadable"
