"""pip's own resolver as the candidate source: `pip --python TARGET install --dry-run --report`.

pip answers "what would be installed" for the CHECKED environment (its markers, wheel tags and installed
distributions) as JSON with every candidate's full metadata (Requires-Dist included): exactly what the
verification needs, without a resolver of our own. Kept packages (the constraints pin them ===) are
absent from the report; removals are implicit (a new version replaces the old).

Contract: every run has a timeout and is killed as a process group; the machine's pip settings that would
change what pip sees (a constraint the pin hook set, PIP_* overrides) are neutralised where the plan must
decide them; a report pip cannot produce, or one that is not the documented JSON, is a ResolveFailed with
one line of why, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor._util.proc import run as run_process
from doctor._util.timeouts import TimedOut
from doctor.envvars import (PIP_BUILD_CONSTRAINT, PIP_CONSTRAINT, PIP_DISABLE_PIP_VERSION_CHECK, PIP_EXTRA_INDEX_URL,
                            PIP_FIND_LINKS, PIP_NO_INDEX)
from doctor.errors import DoctorError
from doctor.resolve.options import RESOLVER_TIMEOUT

# A report on disk answers the same question again for this long: `check --fix --dry-run` then `--fix` asks
# pip once; after that the index may have moved on.
DISK_TTL = 3600.0
# pip >= 25.3 resolves from PEP 658 metadata alone; older ones download every candidate wheel.
MIN_PIP = (25, 3)
# The plan decides the constraints itself (the keep-set); a hook's constraint would silently change its answer.
_NEUTRALISED = (PIP_CONSTRAINT, PIP_BUILD_CONSTRAINT)
# A run aimed at one index (a PyTorch CUDA family) must not have another mixed in (dependency confusion).
_OTHER_INDEXES = (PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX)


class ResolveFailed(DoctorError):
    """pip could not produce a report for these requirements (a conflict, nothing matching, a broken index)."""


class Resolved(NamedTuple):
    """One distribution pip would install."""

    name: str  # canonical name
    version: str  # exact version string, local label included ("2.4.0+cu121")
    requires: Tuple[str, ...]  # Requires-Dist lines from the candidate's metadata
    url: str = ""  # where the wheel would come from
    requested: bool = False  # named on the command line (else pulled in as a dependency)
    requires_python: str = ""


class Report(NamedTuple):
    """What pip would do for one resolver run."""

    install: Tuple[Resolved, ...]
    index_url: Optional[str]  # the index it ran against (None: pip's configuration)
    seconds: float = 0.0  # wall time of the pip run (0 when served from the cache)
    cached: bool = False

    def get(self, name: str) -> Optional[Resolved]:
        """The resolved distribution called `name` (canonical), if pip would install it."""
        return next((r for r in self.install if r.name == name), None)


class ResolverRun(NamedTuple):
    """The inputs of one resolver run: what identifies it in the cache."""

    requirements: Tuple[str, ...]
    constraints: Tuple[str, ...]
    index_url: Optional[str]
    force_reinstall: bool = False  # same version, other build: pip must not call the installed one satisfied
    no_deps: bool = False  # only with force_reinstall: the rebuild of one package, its dependencies as they are


def parse_report(text: str, index_url: Optional[str] = None, seconds: float = 0.0) -> Report:
    """pip's installation report (JSON, version 1) -> Report; ResolveFailed when it is not one."""
    from packaging.utils import canonicalize_name

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ResolveFailed(f"pip's report is not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("install"), list):
        raise ResolveFailed("pip's report has no 'install' list")
    out: List[Resolved] = []
    for item in doc["install"]:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(meta.get("version"), str):
            raise ResolveFailed("pip's report lists an install without a name and version")
        reqs = meta.get("requires_dist") or []
        if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
            raise ResolveFailed(f"pip's report has unreadable requirements for {meta['name']}")
        info = item.get("download_info")
        url = info.get("url", "") if isinstance(info, dict) else ""
        out.append(Resolved(canonicalize_name(meta["name"]), meta["version"], tuple(reqs), str(url),
                            bool(item.get("requested")), str(meta.get("requires_python") or "")))
    return Report(tuple(out), index_url, seconds)


def pip_version() -> Tuple[int, ...]:
    """Version of the pip this doctor runs (the one that plans), as integers; () when there is none."""
    try:
        from importlib.metadata import version

        return tuple(int(p) for p in version("pip").split(".")[:2] if p.isdigit())
    except Exception:  # no pip, or an unreadable version: the caller says what is needed
        return ()


def pip_argv(run: ResolverRun, python: Optional[str], report_path: str, constraints_path: str) -> List[str]:
    """The command line of one dry run (the doctor's own pip, aimed at the checked interpreter)."""
    cmd = [sys.executable, "-m", "pip"]
    if python:  # never compared by realpath: every venv's python resolves to the same base interpreter
        cmd += ["--python", python]
    cmd += ["install", "--dry-run", "--quiet", "--report", report_path, "--only-binary", ":all:",
            "--disable-pip-version-check", "--no-input"]
    if run.index_url:
        cmd += ["--index-url", run.index_url]
    if run.constraints:
        cmd += ["-c", constraints_path]
    if run.force_reinstall:
        cmd.append("--force-reinstall")
    if run.no_deps:
        cmd.append("--no-deps")
    cmd += list(run.requirements)
    return cmd


class Resolver:
    """Runs pip's resolver for one planning run: cached by inputs, capped in count, timed."""

    def __init__(self, python: Optional[str], pip_env: Sequence[Tuple[str, str]] = (), max_runs: int = 24,
                 timeout: float = RESOLVER_TIMEOUT, environment_key: str = "", disk_cache: bool = True) -> None:
        self.python = python
        self.pip_env = tuple(pip_env)
        self.max_runs = max_runs
        self.timeout = timeout
        self.environment_key = environment_key  # installed distributions: a report is only valid for them
        self.disk_cache = disk_cache
        self.runs = 0
        self.seconds = 0.0
        self._cache: Dict[str, Report] = {}

    def _env(self, index_url: Optional[str]) -> Dict[str, str]:
        drop = _NEUTRALISED + (_OTHER_INDEXES if index_url else ())
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env[PIP_DISABLE_PIP_VERSION_CHECK] = "1"
        env.update(dict(self.pip_env))
        return env

    def key(self, run: ResolverRun) -> str:
        """Cache key: the run's inputs, the target and its installed distributions."""
        raw = json.dumps([run, self.python, self.environment_key, self.pip_env], sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()

    def resolve(self, run: ResolverRun) -> Report:
        """What pip would install for `run`; ResolveFailed with pip's reason when it cannot."""
        k = self.key(run)
        if k in self._cache:
            return self._cache[k]._replace(seconds=0.0, cached=True)
        stored = self._read_disk(k, run.index_url)
        if stored is not None:
            self._cache[k] = stored
            return stored
        if self.runs >= self.max_runs:
            raise ResolveFailed(f"resolver budget spent ({self.max_runs} runs for one plan)")
        if pip_version() < MIN_PIP:
            raise DoctorError("planning needs pip >= 25.3 in the doctor's environment (older pip downloads every "
                              "candidate wheel): python -m pip install -U 'pip>=25.3'")
        self.runs += 1
        try:
            return self._run(run, k)
        except OSError as exc:  # no writable temp directory for the report and the constraints
            raise ResolveFailed(f"cannot write pip's constraints/report files: {exc.strerror or exc}") from None

    def _run(self, run: ResolverRun, k: str) -> Report:
        with tempfile.TemporaryDirectory(prefix="doctor-resolve-") as tmp:
            report_path = os.path.join(tmp, "report.json")
            constraints_path = os.path.join(tmp, "constraints.txt")
            with open(constraints_path, "w", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in run.constraints))
            cmd = pip_argv(run, self.python, report_path, constraints_path)
            started = time.monotonic()
            try:
                res = run_process(cmd, timeout=self.timeout, env=self._env(run.index_url))
            except TimedOut:
                raise ResolveFailed(f"pip's resolver did not finish in {self.timeout:g} s") from None
            except OSError as exc:
                raise ResolveFailed(f"pip could not start ({exc.strerror or exc})") from None
            finally:
                self.seconds += time.monotonic() - started
            elapsed = time.monotonic() - started
            if res.returncode != 0:
                raise ResolveFailed(_why(res.stderr or res.stdout or ""))
            try:
                with open(report_path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise ResolveFailed(f"pip wrote no report ({exc.strerror})") from None
        report = parse_report(text, run.index_url, elapsed)
        self._cache[k] = report
        self._write_disk(k, text)
        return report

    def _read_disk(self, k: str, index_url: Optional[str]) -> Optional[Report]:
        """A report this machine asked pip for recently (same inputs, same installed set), or None."""
        if not self.disk_cache:
            return None
        from doctor.cache.own import DoctorCache  # lazy: platformdirs and filelock only when planning

        data = DoctorCache().read_json("resolve", k)
        if not data or not isinstance(data.get("report"), str) or not isinstance(data.get("at"), (int, float)):
            return None
        if not 0 <= time.time() - data["at"] < DISK_TTL:
            return None
        try:
            return parse_report(data["report"], index_url)._replace(cached=True)
        except ResolveFailed:
            return None

    def _write_disk(self, k: str, text: str) -> None:
        """Keep the report for the next planning run; a cache that cannot be written is no error."""
        if not self.disk_cache:
            return
        from doctor.cache.own import DoctorCache

        try:
            DoctorCache().write_json("resolve", k, {"at": time.time(), "report": text})
        except Exception:  # an unwritable or locked cache costs a resolver run next time, nothing else
            pass


def _why(stderr: str) -> str:
    """pip's reason in one line: the ERROR line(s), else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln[len("ERROR:"):].strip() for ln in lines if ln.startswith("ERROR:")]
    text = "; ".join(errors) if errors else (lines[-1] if lines else "pip failed without a message")
    return " ".join(text.split())[:400]


def environment_key(distributions: Mapping[str, object]) -> str:
    """A short hash of the installed distributions (name + version), so cached reports follow installs."""
    items = sorted((n, getattr(d, "version", "")) for n, d in distributions.items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]
