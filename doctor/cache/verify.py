"""Import every unsloth compiled module in a child process, with a timeout, attributing hangs and crashes.

The modules import torch, transformers, trl and unsloth_zoo, so they are never imported in the doctor.
Before any child starts, every module is compiled (never run) here and its size, mtime and sha256 are
noted: `import unsloth` regenerates the compiled trainer modules it finds broken or stale (seen on
Unsloth 2026.10.9: a truncated UnslothGRPOTrainer.py silently rewritten during verify, which then
called every module clean), so what counts is the file as it was found, and a module whose content
changed while verify ran is reported as rewritten, with the verdict on the file as found.

One child then imports the modules in turn (the heavy imports are paid once); it announces each module
before importing it, so when the child hangs (no answer within the per-module timeout: killed) or dies
(a segfault, an abort), the module that was running is blamed and a fresh child continues with the
rest. When unsloth is installed it is imported first, as a training script does (unsloth_zoo refuses
to be imported without it), under its own, longer, timeout.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from doctor._util.files import read_bytes
from doctor._util.proc import EventChild, exit_reason
from doctor.compat_matrix.stack import TRAINING_STACK
from doctor.envvars import PYTHONDONTWRITEBYTECODE, PYTHONFAULTHANDLER, PYTHONSTARTUP

CHILD = Path(__file__).with_name("_verify_child.py")
MODULE_TIMEOUT = 60.0
PRELOAD_TIMEOUT = 300.0  # cold `import unsloth` was seen at 33-43 s; leave room for slow disks
STARTUP_TIMEOUT = 30.0
READ_LIMIT = 16 * 1024 * 1024  # the largest compiled trainer modules are well under 1 MiB
TAIL_BYTES = 8000
# Import names of the training stack: a module failing on one of these missing is unverified (install it),
# while one failing on a module that nothing installed provides is itself broken.
STACK_IMPORTS: Tuple[str, ...] = tuple(name.replace("-", "_") for name in TRAINING_STACK)
BROKEN = ("syntax-error", "import-error", "exec-error", "incomplete", "unreadable", "timeout", "crash")


class ModuleResult(NamedTuple):
    """The verdict on one module."""

    path: str
    status: str  # ok, syntax-error, import-error, exec-error, incomplete, unreadable, timeout, crash,
    #              missing-dependency, not-run (the preload failed or hung), rewritten (see `before`)
    error: str = ""
    where: str = ""  # file:line inside the module, when known
    dependency: str = ""  # for missing-dependency: the stack package (or a package's dependency) to install
    seconds: float = 0.0
    before: str = ""  # set when the file changed while verify ran (`import unsloth` regenerated it): the
    #                   verdict on the file as found, syntax-error / incomplete / ok (ok: it was stale)

    @property
    def broken(self) -> bool:
        """The module now on disk is at fault."""
        return self.status in BROKEN

    @property
    def rewritten(self) -> bool:
        """The file was replaced while verify ran; `before` says what the file as found was."""
        return bool(self.before)


class _Found(NamedTuple):
    """A module as found, before anything was imported."""

    size: int
    mtime_ns: int
    digest: str  # sha256 of the content
    verdict: Optional[ModuleResult]  # syntax-error or incomplete from compiling it; None when it compiles whole


def verify_modules(root: str, modules: Sequence[str], python: Optional[str] = None, cwd: Optional[str] = None,
                   timeout: float = MODULE_TIMEOUT, preload: Sequence[str] = (),
                   preload_timeout: float = PRELOAD_TIMEOUT,
                   stack: Optional[Sequence[str]] = None) -> Tuple[List[ModuleResult], str]:
    """Import-check modules (paths inside root); (results in input order, a note when some could not be checked)."""
    python = python or sys.executable
    found = [_found(p) for p in modules]  # before the preload: what it rewrites is judged as it was
    pending: List[Tuple[int, str]] = list(enumerate(modules))
    results: Dict[int, ModuleResult] = {}
    env = dict(os.environ)
    env[PYTHONDONTWRITEBYTECODE] = "1"  # never leave __pycache__ in someone's cache
    env[PYTHONFAULTHANDLER] = "1"  # a segfault prints the Python stack to stderr: evidence
    env.pop(PYTHONSTARTUP, None)
    cfg = {"root": root, "preload": list(preload), "stack": list(STACK_IMPORTS if stack is None else stack)}
    stop = ""
    while pending and not stop:
        stop = _one_child(python, cfg, cwd, env, pending, results, timeout, preload_timeout)
        left = [(idx, p) for idx, p in pending if idx not in results]
        if not stop and len(left) == len(pending):  # no progress at all: do not spin
            stop = "the checking process ended without checking anything"
        pending = left
    what = f"`import {', '.join(preload)}`" if preload else "verify"
    return [_settle(path, found[i], results.get(i), stop, what) for i, path in enumerate(modules)], stop


def _settle(path: str, found: Optional[_Found], result: Optional[ModuleResult], stop: str, what: str) -> ModuleResult:
    """The one verdict on a module: the import's, unless the file as found was broken or has been replaced."""
    if found is not None and _changed(path, found):
        before = found.verdict
        said = (f"{before.error} (before {what} rewrote it)" if before is not None else
                f"it compiled, but {what} regenerated it (stale: made for other package versions?)")
        if result is not None and result.broken:  # still broken after the rewrite: the import's verdict, noted
            return result._replace(before=before.status if before else "ok")
        return ModuleResult(path, "rewritten", said, before.where if before else "",
                            seconds=result.seconds if result else 0.0, before=before.status if before else "ok")
    if found is not None and found.verdict is not None and (result is None or result.status in ("not-run",
                                                                                                   "missing-dependency")):
        return found.verdict  # the import could not judge the file; the compile before any import did
    if result is None:
        # the import check could not run (unsloth itself failed to import, say); the compile above
        # found nothing wrong with the file itself
        return ModuleResult(path, "not-run", stop)
    return result


def _found(path: str) -> Optional[_Found]:
    """Size, mtime, hash and compile verdict of a module; None when it cannot be read (the child says why)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        source = read_bytes(path, READ_LIMIT, nofollow=True)
    except OSError:
        return None
    return _Found(st.st_size, st.st_mtime_ns, hashlib.sha256(source).hexdigest(), compiled_verdict(path, source))


def _changed(path: str, found: _Found) -> bool:
    """Whether the content differs from what was found (a rewrite with the same bytes does not count)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if (st.st_size, st.st_mtime_ns) == (found.size, found.mtime_ns):
            return False
        return hashlib.sha256(read_bytes(path, READ_LIMIT, nofollow=True)).hexdigest() != found.digest
    except OSError:  # gone, or replaced by something unreadable
        return True


def compiled_verdict(path: str, source: bytes) -> Optional[ModuleResult]:
    """syntax-error or incomplete from compiling (never running) a module's source; None when it is whole."""
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        tree = ast.parse(source, path)
        compile(tree, path, "exec", dont_inherit=True)  # what the parser lets through: `return` outside a def
    except SyntaxError as exc:
        return ModuleResult(path, "syntax-error", f"{type(exc).__name__}: {exc.msg}",
                            f"{os.path.basename(path)}:{exc.lineno}" if exc.lineno else "")
    except ValueError as exc:  # NUL bytes in the source
        return ModuleResult(path, "syntax-error", f"ValueError: {exc}")
    except (RecursionError, MemoryError):  # pathological nesting: the import in the child has the last word
        return None
    if _is_trainer(name) and not _binds(tree, name):
        return ModuleResult(path, "incomplete", f"does not define {name} (truncated?)")
    return None


def _is_trainer(name: str) -> bool:
    """unsloth's compiled trainer modules define a class named like the file (UnslothSFTTrainer.py)."""
    return name.startswith("Unsloth") and name.endswith("Trainer")


def _binds(tree: ast.AST, name: str) -> bool:
    """Whether the module binds `name` anywhere (a class, an assignment, an import)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, ast.alias) and (node.asname or node.name) == name:
            return True
    return False


def syntax_only(path: str) -> Optional[ModuleResult]:
    """A syntax-error verdict from compiling (never running) the file, or None when it compiles."""
    try:
        compile(read_bytes(path, READ_LIMIT, nofollow=True), path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return ModuleResult(path, "syntax-error", f"{type(exc).__name__}: {exc.msg}",
                            f"{os.path.basename(path)}:{exc.lineno}" if exc.lineno else "")
    except (OSError, ValueError):  # unreadable, or NUL bytes: the child path reports these when it runs
        return None
    return None


def _one_line(tail: str, keep: int = 6, focus: str = "") -> str:
    """A child's output on one line: the fatal error and the frames in `focus` (a module path), else its last lines."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if focus:
        picked = [ln for ln in lines if ln.startswith("Fatal Python error") or focus in ln]
        if picked:
            return " | ".join(picked[:keep])[:600]
    return " | ".join(lines[-keep:])[:600]


def _one_child(python: str, cfg: dict, cwd: Optional[str], env: Dict[str, str], pending: List[Tuple[int, str]],
               results: Dict[int, ModuleResult], timeout: float, preload_timeout: float) -> str:
    """Run one child over `pending`, filling `results`; returns why nothing more can be checked, or ''."""
    job = {**cfg, "modules": [[Path(p).stem, p] for _, p in pending]}
    try:
        child = EventChild([python, str(CHILD), json.dumps(job)], env, cwd=cwd if cwd and os.path.isdir(cwd) else None)
    except OSError as exc:
        return f"cannot start {python}: {exc.strerror or exc}"
    preload = cfg["preload"]
    with child:
        current: Optional[int] = None  # position in `pending` of the module being imported
        phase, started = "startup", time.monotonic()
        deadline = started + STARTUP_TIMEOUT
        while True:
            kind, ev = child.next_event(deadline)
            if kind == "timeout":  # out of time in this phase: blame the module (or the preload) and stop this child
                child.kill()
                if phase == "module" and current is not None:
                    idx, path = pending[current]
                    results[idx] = ModuleResult(path, "timeout", f"import did not finish within {timeout:g} s",
                                                seconds=time.monotonic() - started)
                    return ""
                if phase == "preload":
                    return f"importing {', '.join(preload)} first did not finish within {preload_timeout:g} s"
                return f"the checking process stopped answering ({phase})"
            if kind == "eof":  # finished, or died
                code = child.exit_code()
                if phase == "module" and current is not None:
                    idx, path = pending[current]
                    tail = _one_line(child.tail(TAIL_BYTES), focus=path)
                    results[idx] = ModuleResult(path, "crash", f"the importing process died ({exit_reason(code)})"
                                                + (f": {tail}" if tail else ""), seconds=time.monotonic() - started)
                elif phase in ("startup", "preload"):
                    tail = _one_line(child.tail(TAIL_BYTES))
                    return f"the checking process ended early ({exit_reason(code)})" + (f": {tail}" if tail else "")
                return ""
            if kind == "garbage" or ev is None:  # the channel is ours alone: garbage there means the child is lost
                child.kill()
                return f"the checking process garbled its reports: {(ev or {}).get('line', '')!r}"
            name = ev.get("event")
            if name == "preload-start":
                phase, deadline = "preload", time.monotonic() + preload_timeout
            elif name == "preload-done":
                if not ev.get("ok"):
                    return f"importing {ev.get('name')} failed before any module: {ev.get('error', '')}"
                phase, deadline = "between", time.monotonic() + STARTUP_TIMEOUT
            elif name == "start":
                current = int(ev["i"])
                phase, started = "module", time.monotonic()
                deadline = started + timeout
            elif name == "done":
                idx, path = pending[int(ev["i"])]
                results[idx] = ModuleResult(path, str(ev.get("status", "?")), str(ev.get("error", "")),
                                            str(ev.get("where", "")), str(ev.get("dependency", "")),
                                            time.monotonic() - started)
                current = None
                phase, deadline = "between", time.monotonic() + STARTUP_TIMEOUT
