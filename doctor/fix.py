"""`doctor check --fix` / `doctor install`: a plan -> shown -> confirmed -> saved -> applied -> re-checked.

Package changes come as one resolver-verified Plan (doctor.resolve.planner); this module applies it:
its actions in order (an uninstall, then one install per index) with the doctor's own pip aimed at the
target (`pip --python TARGET`), each run under a deadline and killed as a process group, the plan's
constraints written atomically to a file passed as -c. Before the first pip run, the exact versions and
builds of everything the plan touches are saved (doctor.resolve.undo), and each step's outcome is
recorded as it ends: pip is not atomic, so a plan that stops halfway says what was and was not applied,
and `doctor check --undo` still works. After it, the caller re-checks; a finding the verified plan said
would be gone that is still there is a Defect (its own exit code), never the start of another fix.

Steps that are not package changes (cache actions, a cache location, manual steps) still come from each
finding's own fixes (`plan()` below): each finding's first automatable action is its preferred fix; later
actions are alternatives or steps only a person can take, shown but not run. Nothing runs without being
printed first; destructive steps need confirmation (a terminal prompt or --yes), and a plan not verified
against the index needs --allow-unverified on top of --yes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from doctor.actions import Action, MoveToQuarantine, PipInstall, PipUninstall, RemoveStaleLock, SetEnv, TightenMode
from doctor.envvars import (PIP_BUILD_CONSTRAINT, PIP_DISABLE_PIP_VERSION_CHECK, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS,
                            PIP_NO_INDEX)
from doctor.errors import DoctorError
from doctor.findings import Finding, Severity

if TYPE_CHECKING:
    from doctor.facts import Facts
    from doctor.resolve.options import IndexConfig
    from doctor.resolve.plan import Plan
    from doctor.report_data import ReportData
    from doctor.resolve.undo import Store, UndoPlan

PIP_TIMEOUT = 1800.0  # a CUDA torch download is GBs
# Cache steps, applied by doctor.cache (it checks every path against the cache roots first).
CACHE_ACTIONS = (MoveToQuarantine, RemoveStaleLock, TightenMode)
_PROSE = ("description", "no_deps_why", "force_reinstall_why")  # fields that explain an action, not what it does


class Step(NamedTuple):
    """One planned action and the finding it fixes."""

    action: Action
    finding_id: str
    automatic: bool  # run by --fix (else shown for a person to do)
    note: str = ""  # why it is skipped, or that it is an alternative


def plan(findings: Iterable[Finding]) -> List[Step]:
    """The ordered plan for every finding at warn or worse (worst first)."""
    steps: List[Step] = []
    seen: Dict[Action, str] = {}  # effect of an action -> the finding it was planned for
    claimed: Dict[str, Tuple[Action, str]] = {}  # package -> (action, finding id) that decides it
    for f in sorted((f for f in findings if f.severity >= Severity.WARN), key=lambda f: -f.severity):
        chosen = False
        for a in f.fix:
            auto = a.automatic
            if auto and chosen:
                steps.append(Step(a, f.id, False, "alternative"))
                continue
            if _effect(a) in seen:
                chosen = chosen or auto
                continue  # the same step already planned for another finding
            clash = next(((p, claimed[p]) for p in a.packages() if p in claimed), None)
            if auto and clash:
                other, other_id = clash[1]
                steps.append(Step(a, f.id, False, f"conflicts with `{other.command() or other.description}` (for {other_id}); not run"))
                continue
            steps.append(Step(a, f.id, auto))
            seen[_effect(a)] = f.id
            if auto:
                chosen = True
                for p in a.packages():
                    claimed[p] = (a, f.id)
    return steps


def _effect(action: Action) -> Action:
    """The action without its prose (description, the why of a flag): two findings offering one step in other
    words plan it once. Actions are frozen dataclasses, so the rest compares as data."""
    prose = {f.name: "" for f in dataclasses.fields(action) if f.name in _PROSE}  # type: ignore[arg-type]
    return dataclasses.replace(action, **prose) if prose else action  # type: ignore[type-var]


def pip_command(action: Union[PipInstall, PipUninstall], python: Optional[str] = None) -> List[str]:
    """pip for the environment being checked: this interpreter's, or with `python` (--python) this doctor's pip
    aimed at that interpreter (`pip --python`, pip >= 22.3), as uv's pip does; uv's pip where there is no pip."""
    import importlib.util

    verb = "uninstall" if isinstance(action, PipUninstall) else "install"
    args = list(action.argv())
    target = python or sys.executable
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", *(["--python", target] if python else []), verb, *args]
    uv = shutil.which("uv")
    if uv:
        if isinstance(action, PipUninstall):
            args = [a for a in args if a != "-y"]  # uv pip uninstall does not ask, and has no -y
        return [uv, "pip", verb, "--python", target, *args]
    raise DoctorError("neither pip nor uv is available for this interpreter: install one, or run the commands by hand")


def apply_step(step: Step, dry_run: bool = False, echo: Callable[[str], None] = print, python: Optional[str] = None) -> bool:
    """Run one automatic step; True when it succeeded (or would, in a dry run)."""
    a = step.action
    if isinstance(a, (PipInstall, PipUninstall)):
        cmd = pip_command(a, python)
        echo("$ " + " ".join(cmd))
        if dry_run:
            return True
        try:
            # pip's output goes to stderr: stdout may be carrying the JSON report
            proc = subprocess.run(cmd, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
        except subprocess.TimeoutExpired:
            echo(f"  timed out after {PIP_TIMEOUT:g} s")
            return False
        return proc.returncode == 0
    if isinstance(a, CACHE_ACTIONS) or (isinstance(a, SetEnv) and a.directory):
        from doctor.cache import apply_cache_action  # lazy: the cache package is only needed when a cache step runs

        echo(apply_cache_action(a, dry_run=dry_run))
        return True
    return False


def confirm(prompt: str) -> bool:
    """Ask on the terminal; False when there is none (CI, pipes)."""
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


# -- applying a verified package plan --------------------------------------------------------------------------

# Built against the installed torch when built from source: pip must not build them in an isolated environment
# (which would pull another torch), so their source installs run with --no-build-isolation.
BUILD_AGAINST_TORCH = ("flash-attn",)
# A run aimed at one index (a PyTorch CUDA family) must not have another mixed in (dependency confusion).
_OTHER_INDEXES = (PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX)
STDERR_TAIL = 4000  # characters of pip's stderr kept for a failed step
DRY_RUN = "dry run"
_BLANK = " "  # PIP_BUILD_CONSTRAINT=" ": set (it replaces pip.conf's value), naming no file


class PipRun(NamedTuple):
    """One pip invocation as it will run: the action, the argv, the environment changes, and why they differ."""

    action: Action
    argv: Tuple[str, ...]
    env: Tuple[Tuple[str, Optional[str]], ...] = ()  # variables set (a value) or removed (None) for this run
    note: str = ""  # what this run does beyond the action's own command (and why)

    @property
    def command(self) -> str:
        """The command line as shown (variables it sets first)."""
        import shlex

        sets = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env if v is not None and k != PIP_DISABLE_PIP_VERSION_CHECK)
        return (sets + " " if sets else "") + " ".join(shlex.quote(a) for a in self.argv)


class StepResult(NamedTuple):
    """How one pip run of a plan ended."""

    run: PipRun
    status: str  # "applied" / "failed" / "not run" / "dry run" (doctor.resolve.undo's step words)
    detail: str = ""  # pip's reason when it failed
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        """JSON form: the action, the command that ran, how it ended."""
        return {"action": self.run.action.to_dict(), "command": self.run.command, "status": self.status,
                "detail": self.detail, "note": self.run.note, "seconds": round(self.seconds, 3)}


class Applied(NamedTuple):
    """What applying a plan (or an undo) did, step by step."""

    steps: Tuple[StepResult, ...]
    state_file: Optional[str] = None  # where "before" was saved (the undo reads it)
    constraints_file: Optional[str] = None
    record: Optional[str] = None  # the saved record's id

    @property
    def ok(self) -> bool:
        """Every step applied (or, in a dry run, would run)."""
        return all(s.status in ("applied", DRY_RUN) for s in self.steps)

    @property
    def failed(self) -> Optional[StepResult]:
        """The step that failed, if one did."""
        return next((s for s in self.steps if s.status == "failed"), None)


class Defect(NamedTuple):
    """A verified plan was applied, and the re-check contradicts its verification."""

    still: Tuple[Finding, ...]  # findings the verification said would be gone, still there at warn or worse
    new: Tuple[Finding, ...]  # warn/error findings the re-check has and the check before did not
    drift: Tuple[Tuple[str, Optional[str], Optional[str]], ...]  # (package, planned, installed now) that differ

    def to_dict(self) -> Dict[str, object]:
        """JSON form."""
        from doctor.resolve.plan import finding_key

        return {"still_there": [finding_key(f) for f in self.still], "new": [finding_key(f) for f in self.new],
                "drift": [{"name": n, "planned": p, "installed": i} for n, p, i in self.drift]}


class Outcome(NamedTuple):
    """How applying a plan (and the other fix steps) ended."""

    plan: "Plan"
    runs: Tuple["PipRun", ...]  # the pip runs as shown
    exit_code: int
    dry_run: bool = False
    applied: Optional["Applied"] = None  # None: nothing was run
    steps: Tuple[Tuple["Step", bool], ...] = ()  # other fix steps run, and whether each succeeded
    after: Optional["ReportData"] = None  # the re-check
    defect: Optional["Defect"] = None
    message: str = ""  # why nothing was applied


def refusal(plan: "Plan", yes: bool, allow_unverified: bool) -> Optional[str]:
    """Why this plan must not be applied as asked (None: it may be, after confirmation)."""
    from doctor.resolve.plan import FAILED, UNVERIFIED

    v = plan.verification
    if v.status == FAILED:
        return "no plan verified" + (f": {v.reason}" if v.reason else "")
    if v.status == UNVERIFIED and yes and not allow_unverified:
        return (f"the plan is not verified against the index ({v.reason or 'offline'}); --yes applies it only with "
                "--allow-unverified")
    return None


def pip_runs(actions: Sequence[Action], python: Optional[str], prefix: str, constraints_file: Optional[str] = None,
             environ: Optional[Mapping[str, str]] = None) -> List[PipRun]:
    """The pip invocations for a plan's actions: -c the plan's constraints file, build isolation as each needs.

    A source build of flash-attn needs --no-build-isolation (it compiles against the installed torch); pip
    (>= 26.2) refuses that together with a build-constraint (the pin hook writes one): that run gets
    PIP_BUILD_CONSTRAINT set to a blank and the same files as -c instead. A blank, not an empty value: pip drops
    empty settings (pip.conf's would then apply), while a blank one wins over pip.conf and splits into no file.
    """
    environ = os.environ if environ is None else environ
    out: List[PipRun] = []
    for a in actions:
        if not isinstance(a, (PipInstall, PipUninstall)):
            continue
        if isinstance(a, PipInstall) and constraints_file:
            a = dataclasses.replace(a, constraints=constraints_file)
        argv = list(pip_command(a, python))
        env: List[Tuple[str, Optional[str]]] = [(PIP_DISABLE_PIP_VERSION_CHECK, "1")]
        note = ""
        if isinstance(a, PipInstall):
            if a.index_url:
                env += [(k, None) for k in _OTHER_INDEXES]
            if not a.only_binary and set(a.packages()) & set(BUILD_AGAINST_TORCH):
                argv.append("--no-build-isolation")
                from doctor.resolve.pip_config import effective

                bc = effective("build-constraint", prefix, environ)
                if bc is not None:
                    env.append((PIP_BUILD_CONSTRAINT, _BLANK))
                    for item in bc.items:
                        argv += ["-c", item]
                    note = (f"{', '.join(sorted(set(a.packages()) & set(BUILD_AGAINST_TORCH)))} builds against the "
                            "installed torch (--no-build-isolation), which pip refuses while a build-constraint is set "
                            f"({bc.origin}): this install runs with PIP_BUILD_CONSTRAINT blank and the same file(s) "
                            "passed as -c, so the pins still hold")
        out.append(PipRun(a, tuple(argv), tuple(env), note))
    return out


def run_pip(run: PipRun, timeout: float = PIP_TIMEOUT, extra_env: Sequence[Tuple[str, str]] = (),
            echo: Callable[[str], None] = print) -> Tuple[bool, str]:
    """Run one pip invocation under a deadline (its process group killed then); (ok, pip's reason when not ok).

    pip's progress goes to this process's stderr (stdout may be carrying the JSON report); its stderr is kept
    in a temporary file and its ERROR lines become the reason.
    """
    env = dict(os.environ)
    for k, v in run.env:
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    env.update(dict(extra_env))
    try:
        out_fd: Union[int, None] = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr (pytest, a notebook) has no descriptor
        out_fd = None
    with tempfile.TemporaryFile(prefix="tune-doctor-pip-") as err:
        try:
            proc = subprocess.Popen(list(run.argv), stdin=subprocess.DEVNULL, stdout=out_fd if out_fd is not None else err,
                                    stderr=err, env=env, start_new_session=os.name == "posix")
        except OSError as exc:
            return False, f"pip could not start ({exc.strerror or exc})"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            from doctor._util.proc import kill_group

            kill_group(proc)
            return False, f"pip did not finish within {timeout:g} s; killed"
        except BaseException:  # Ctrl-C: pip leads its own group and would not get the SIGINT; stop it too
            from doctor._util.proc import kill_group

            kill_group(proc)
            raise
        err.seek(0)
        text = err.read().decode("utf-8", "replace")[-STDERR_TAIL:]
    if code == 0:
        return True, ""
    for line in text.strip().splitlines()[-20:]:
        echo("  | " + line)
    return False, _pip_reason(text, code)


def _pip_reason(stderr: str, code: int) -> str:
    """pip's reason in one line: its ERROR line(s), else its last line, else the exit status."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln[len("ERROR:"):].strip() for ln in lines if ln.startswith("ERROR:")]
    text = "; ".join(errors) if errors else (lines[-1] if lines else f"pip exited with code {code}")
    return " ".join(text.split())[:400]


def write_constraints(path: str, lines: Sequence[str]) -> None:
    """The plan's constraints file, written atomically; DoctorError (one line) when it cannot be."""
    from doctor.resolve.undo import write_atomic

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, "".join(line + "\n" for line in lines))
    except OSError as exc:
        raise DoctorError(f"cannot write the constraints file {path} ({exc.strerror or type(exc).__name__}); "
                          "nothing was changed") from None


def apply_plan(plan: "Plan", facts: "Facts", store: "Store", command: str, indexes: Optional["IndexConfig"] = None,
               python: Optional[str] = None, echo: Callable[[str], None] = print, dry_run: bool = False,
               timeout: float = PIP_TIMEOUT) -> Applied:
    """Save "before", then run the plan's pip steps in order, recording each; stop at the first that fails.

    `python`: the target interpreter when it is not this one (pip --python). `facts`: the environment as it
    is now (what is saved). Raises DoctorError before any change when the constraints file or the state
    cannot be written.
    """
    from doctor.resolve import undo

    cfile = store.constraints_path if plan.constraints else None
    runs = pip_runs(plan.actions, python, facts.python.prefix, cfile)
    if dry_run:
        for r in runs:
            echo("$ " + r.command)
        return Applied(tuple(StepResult(r, DRY_RUN) for r in runs), None, cfile)
    if cfile:
        write_constraints(cfile, plan.constraints)
    try:
        rid = undo.begin(store, facts, plan, command, [(r.action.description, r.command, r.action.packages()) for r in runs])
    except DoctorError as exc:
        raise DoctorError(f"{exc}; nothing was changed") from None
    results = _run_all(runs, store, rid, indexes, echo, timeout)
    installed = [(c.name, c.after, c.index_url) for c in plan.changes if c.after is not None
                 and any(r.status == "applied" and c.name in r.run.action.packages() for r in results)]
    undo.finish(store, rid, undo.DONE if all(r.status == "applied" for r in results) else undo.PARTIAL,
                [(n, v, i) for n, v, i in installed if v is not None])
    return Applied(tuple(results), store.path, cfile, rid)


def apply_undo(u: "UndoPlan", store: "Store", indexes: Optional["IndexConfig"] = None, python: Optional[str] = None,
               prefix: str = "", echo: Callable[[str], None] = print, dry_run: bool = False,
               timeout: float = PIP_TIMEOUT) -> Applied:
    """Run an undo plan; when every step applied, the record is marked undone (a failed undo can be run again)."""
    from doctor.resolve import undo

    runs = pip_runs(u.actions, python, prefix)
    if dry_run:
        for r in runs:
            echo("$ " + r.command)
        return Applied(tuple(StepResult(r, DRY_RUN) for r in runs), store.path, None, u.record.id)
    results = _run_all(runs, None, u.record.id, indexes, echo, timeout)
    if all(r.status == "applied" for r in results):
        restored = [(c.name, c.after, c.index_url) for c in u.changes if c.after is not None]
        undo.finish(store, u.record.id, undo.UNDONE, [(n, v, i) for n, v, i in restored if v is not None])
    return Applied(tuple(results), store.path, None, u.record.id)


def _run_all(runs: Sequence[PipRun], store: Optional["Store"], rid: str, indexes: Optional["IndexConfig"],
             echo: Callable[[str], None], timeout: float) -> List[StepResult]:
    """Each run in order, its outcome recorded in `store` (when given); the rest is not run after a failure."""
    from doctor.resolve import undo

    extra = tuple(indexes.pip_env) if indexes is not None else ()
    results: List[StepResult] = []
    for i, r in enumerate(runs):
        if results and results[-1].status != "applied":
            results.append(StepResult(r, undo.PENDING))
            continue
        echo(f"[{i + 1}/{len(runs)}] $ {r.command}")
        if r.note:
            echo(f"  note: {r.note}")
        started = time.monotonic()
        try:
            ok, why = run_pip(r, timeout, extra, echo)
        except KeyboardInterrupt:
            if store is not None:
                undo.mark_step(store, rid, i, undo.FAILED, "interrupted")
                undo.finish(store, rid, undo.PARTIAL)
            raise
        results.append(StepResult(r, undo.APPLIED if ok else undo.FAILED, why, time.monotonic() - started))
        if store is not None:
            undo.mark_step(store, rid, i, results[-1].status, why)
        if not ok:
            echo(f"  failed: {why}")
    return results


def find_defect(plan: "Plan", before: Iterable[Finding], after: Iterable[Finding], after_facts: "Facts") -> Optional[Defect]:
    """The defect, when a VERIFIED plan's re-check still shows a finding it said would be gone (else None)."""
    from doctor.resolve.plan import finding_key

    if not plan.verification.ok:
        return None  # only a verified plan promised anything
    gone = set(plan.expected_gone())
    after = list(after)
    still = tuple(f for f in after if f.severity >= Severity.WARN and finding_key(f) in gone)
    if not still:
        return None
    had = {finding_key(f) for f in before if f.severity >= Severity.WARN}
    new = tuple(f for f in after if f.severity >= Severity.WARN and finding_key(f) not in had)
    drift = tuple((c.name, c.after, after_facts.version_of(c.name)) for c in plan.changes
                  if after_facts.version_of(c.name) != c.after)
    return Defect(still, new, drift)
