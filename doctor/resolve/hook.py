"""The pre-install hook: pins in force for every later `pip install` (and, through variables, `uv pip install`).

The hook writes `[install] constraint = FILE` (and `build-constraint` for pip >= 26.2 in the TARGET
environment) into the target's site pip.conf, after saving that file byte for byte; FILE holds the pins
and `-c` lines for any constraint the user or the machine had set before (the hook's setting replaces
theirs, so it includes them: pip_config says how pip layers its settings). `remove_hook` puts pip.conf
back byte for byte (or removes it when there was none). Nothing here stops `pip uninstall torch`:
constraints only limit what gets installed. uv never reads pip.conf: it takes UV_CONSTRAINT /
UV_BUILD_CONSTRAINT (printed, set in a notebook kernel, or written into the venv's bin/activate with
shell=True, reversibly: activate).

Every file is written through atomic_files.write_all (temp file in the same directory + os.replace, all or
nothing); a hook that cannot write everything changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import time
from typing import Any, Dict, List, Mapping, MutableMapping, NamedTuple, Optional, Tuple

from doctor._util.files import read_bytes
from doctor.compat_matrix.versions import parse_version
from doctor.envvars import PIP_BUILD_CONSTRAINT, PIP_CONFIG_FILE, PIP_CONSTRAINT, UV_BUILD_CONSTRAINT, UV_CONSTRAINT
from doctor.errors import DoctorError
from doctor.resolve.activate import activate_path, exports_uv, with_uv_exports
from doctor.resolve.atomic_files import file_mode, make_dirs, remove_dirs, write_all
from doctor.resolve.pin_files import constraint_lines
from doctor.resolve.pins import PinSet
# effective and Setting stay importable from here: doctor/fix.py reads the build-constraint through this module.
from doctor.resolve.pip_config import (CONFIG_BASENAME, Setting, as_path, check_edit, decode, edit_conf, effective,
                                       location, names, needs_build_constraint, parse_conf, read_conf, site_config)
from doctor.resolve.refusal import NO_BUILD_ISOLATION

__all__ = ["ACTIVATE_BACKUP", "BUILD_CONSTRAINTS", "CONSTRAINTS", "HookResult", "HookStatus", "NO_BUILD_ISOLATION",
           "NO_UNINSTALL_GUARD", "PIP_CONF_BACKUP", "STATE", "STATE_DIR", "STATE_SCHEMA", "Setting", "effective",
           "hook_status", "install_hook", "remove_hook", "state_dir"]

STATE_SCHEMA = 1
STATE_DIR = os.path.join("etc", "tune-doctor")  # under the target's sys.prefix
CONSTRAINTS = "constraints.txt"
BUILD_CONSTRAINTS = "build-constraints.txt"  # only when the user had a build constraint of their own
STATE = "hook.json"
PIP_CONF_BACKUP = "pip.conf.orig"
ACTIVATE_BACKUP = "activate.orig"
_READ_LIMIT = 1024 * 1024  # the hook's own files are a few KiB: its state and its torch line are read from the first MiB

# What the hook says every time: constraints limit installs, never removals.
NO_UNINSTALL_GUARD = ("the hook does not stop `pip uninstall torch` (or uv's): constraints only limit what pip "
                      "installs")


class HookResult(NamedTuple):
    """What install_hook / remove_hook did."""

    action: str  # "hooked", "updated" (already hooked: pins rewritten), "unhooked", "not-hooked"
    prefix: str
    pip_conf: str
    constraints: str  # the hook's constraints file
    build_constraint: bool  # build-constraint written to pip.conf (pip >= 26.2 in the target)
    pip_version: Optional[str]
    composed: Tuple[str, ...] = ()  # constraints set before, included with -c
    environ: Mapping[str, str] = {}  # variables for shells and kernels (pip's and uv's)
    activate: Optional[str] = None  # the activate script written or restored
    messages: Tuple[str, ...] = ()  # what the user must know, one line each
    in_force: bool = True  # pip in this environment (with these variables) applies the hook
    pins: Optional[PinSet] = None


class HookStatus(NamedTuple):
    """What is in force for pip and uv in one environment (`doctor pin --status`)."""

    prefix: str
    pip_conf: str
    hooked: bool  # the hook's state file is there
    in_force: bool  # pip, with this environment's variables, applies the hook's constraints file
    constraint: Optional[Setting]  # the constraint pip applies (None: none)
    build_constraint: Optional[Setting]
    pip_version: Optional[str]
    build_needed: bool  # pip >= 26.2: constraints need build-constraint to reach build isolation
    constraints: Optional[str]  # the hook's file, when hooked
    pinned_torch: Optional[str]  # the torch the hook's file keeps (from its torch=== line)
    uv_constraint: Optional[str]  # UV_CONSTRAINT in this environment
    activate_block: bool  # bin/activate exports the uv variables
    problems: Tuple[str, ...] = ()  # why the hook is not (fully) in force, one line each
    notes: Tuple[str, ...] = ()


def state_dir(prefix: str) -> str:
    """Where the hook keeps its constraints, backups and state for one environment."""
    return os.path.join(prefix, STATE_DIR)


def _places(prefix: str) -> Tuple[str, str, str]:
    """(the site pip.conf, the hook's state directory, its constraints file) of one environment."""
    sdir = state_dir(prefix)
    return site_config(prefix), sdir, os.path.join(sdir, CONSTRAINTS)


# -- install / remove -------------------------------------------------------------------------------------


def install_hook(pins: PinSet, prefix: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                 shell: bool = False, kernel_env: Optional[MutableMapping[str, str]] = None) -> HookResult:
    """Put `pins` in force for pip in the environment at `prefix` (default: the pins' own); idempotent.

    `kernel_env` (a notebook kernel's os.environ): also set PIP_CONSTRAINT, PIP_BUILD_CONSTRAINT (pip >= 26.2)
    and UV_CONSTRAINT / UV_BUILD_CONSTRAINT there, so later `!pip` / `%pip` / `!uv pip` processes inherit them.
    `shell`: also export the uv variables from the venv's bin/activate. DoctorError (nothing changed) when a
    file cannot be read or written, or a constraint set before cannot be included.
    """
    prefix = os.path.abspath(prefix or pins.prefix or sys.prefix)
    environ = os.environ if environ is None else environ
    conf, sdir, cfile = _places(prefix)
    state = _load_state(sdir)
    current_bytes, _ = read_conf(conf)
    if state is not None:  # already hooked: the file as it was before the first hook is the original
        original: Optional[bytes] = _read_backup(sdir, PIP_CONF_BACKUP) if state.get("had_pip_conf") else None
    else:
        original = current_bytes
    original_sections = parse_conf(decode(original), conf) if original is not None else {}
    ours = {os.path.realpath(cfile), os.path.realpath(os.path.join(sdir, BUILD_CONSTRAINTS))}

    build = needs_build_constraint(pins.pip_version)
    messages: List[str] = []
    seen = _before_hook(environ, sdir, state)
    kernel = kernel_env is not None
    composed = _composed("constraint", prefix, seen, original_sections, ours, messages, kernel)
    build_composed = _composed("build-constraint", prefix, seen, original_sections, ours, messages, kernel) if build else []

    header = [f"tune-doctor pins for {pins.python or prefix}, written by `doctor pin --hook` "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
              "regenerate: doctor pin --hook    remove: doctor pin --unhook"]
    body = constraint_lines(pins, header)
    if composed:
        body.append("# constraints that were in force before the hook (its setting replaces theirs, so it includes them):")
        body += [f"-c {shlex.quote(c)}" for c in composed]
    files: Dict[str, bytes] = {cfile: ("\n".join(body) + "\n").encode()}
    bfile = cfile
    if build_composed:
        bfile = os.path.join(sdir, BUILD_CONSTRAINTS)
        lines = ["# tune-doctor build constraints: the hook's pins and the build constraints set before it",
                 f"-c {shlex.quote(cfile)}"] + [f"-c {shlex.quote(c)}" for c in build_composed]
        files[bfile] = ("\n".join(lines) + "\n").encode()
    settings = [("constraint", location(cfile))] + ([("build-constraint", location(bfile))] if build else [])
    new_conf = edit_conf(decode(original) if original is not None else "", settings).encode()
    check_edit(new_conf, conf, settings)

    variables = {PIP_CONSTRAINT: location(cfile)}
    if build:
        variables[PIP_BUILD_CONSTRAINT] = location(bfile)
    uv_ok = not re.search(r"\s", cfile)
    if uv_ok:
        variables[UV_CONSTRAINT] = cfile
        variables[UV_BUILD_CONSTRAINT] = bfile

    activate = activate_path(prefix) if shell else None
    if shell and activate is None:
        messages.append(f"no bin/activate under {prefix} (not a venv): nothing written for uv; set the variables below")
    if activate is not None and not uv_ok:
        messages.append("uv splits UV_CONSTRAINT on whitespace and this path has a space: bin/activate is left alone")
        activate = None

    new_state: Dict[str, Any] = {
        "schema": STATE_SCHEMA, "prefix": prefix, "pip_conf": conf, "constraints": cfile,
        "had_pip_conf": original is not None,
        "pip_conf_mode": (state or {}).get("pip_conf_mode") if state is not None else file_mode(conf),
        "pip_conf_written": hashlib.sha256(new_conf).hexdigest(),
        "build_constraint": build, "composed": composed, "build_composed": build_composed,
        "created_dirs": (state or {}).get("created_dirs", []),
        "environ_before": (state or {}).get("environ_before", {}),
        "activate": (state or {}).get("activate"),
        "torch": pins.torch,
    }
    if original is not None and state is None:
        files[os.path.join(sdir, PIP_CONF_BACKUP)] = original
    if activate is not None and not new_state["activate"]:
        files.update(_activate_files(activate, sdir, cfile, bfile))
        new_state["activate"] = activate
    elif new_state["activate"] and uv_ok:  # rewrite the block (same content unless the files moved)
        act = str(new_state["activate"])
        backup = _read_backup(sdir, ACTIVATE_BACKUP)
        files[act] = with_uv_exports(decode(backup), cfile, bfile).encode()

    created = make_dirs(sdir)
    try:
        if created:
            new_state["created_dirs"] = created
        files[os.path.join(sdir, STATE)] = (json.dumps(new_state, indent=2, sort_keys=True) + "\n").encode()
        files[conf] = new_conf  # last: pip sees the hook only when its file is in place
        write_all(files, modes={conf: new_state["pip_conf_mode"]})
    except BaseException:
        remove_dirs(created)
        raise

    if kernel_env is not None:
        _set_kernel_env(kernel_env, variables, sdir, new_state)
    in_force = _in_force(prefix, environ if kernel_env is None else kernel_env, cfile)
    messages += _messages(pins, prefix, environ, kernel_env, build, variables, uv_ok, activate or new_state["activate"])
    return HookResult("updated" if state is not None else "hooked", prefix, conf, cfile, build, pins.pip_version,
                      tuple(composed + [c for c in build_composed if c not in composed]), variables,
                      activate or new_state["activate"], tuple(messages), in_force, pins)


def remove_hook(prefix: str, environ: Optional[Mapping[str, str]] = None,
                kernel_env: Optional[MutableMapping[str, str]] = None, pip_version: Optional[str] = None) -> HookResult:
    """Undo install_hook: pip.conf (and bin/activate) back byte for byte, or removed when there was none; idempotent."""
    prefix = os.path.abspath(prefix)
    conf, sdir, cfile = _places(prefix)
    state = _load_state(sdir)
    if state is None:
        return HookResult("not-hooked", prefix, conf, cfile, False, pip_version,
                          messages=("no hook in this environment: nothing changed",), in_force=False)
    messages: List[str] = []
    files: Dict[str, Optional[bytes]] = {}
    current, _ = read_conf(conf)
    if current is not None and hashlib.sha256(current).hexdigest() != state.get("pip_conf_written"):
        keep = os.path.join(prefix, CONFIG_BASENAME + ".tune-doctor-edited")
        files[keep] = current
        messages.append(f"{conf} was edited after the hook: that version is kept as {keep}")
    files[conf] = _read_backup(sdir, PIP_CONF_BACKUP) if state.get("had_pip_conf") else None
    activate = state.get("activate")
    if activate:
        files[str(activate)] = _read_backup(sdir, ACTIVATE_BACKUP)
    for name in (CONSTRAINTS, BUILD_CONSTRAINTS, PIP_CONF_BACKUP, ACTIVATE_BACKUP, STATE):
        path = os.path.join(sdir, name)
        if os.path.lexists(path):
            files[path] = None
    write_all(files, modes={conf: state.get("pip_conf_mode")})
    remove_dirs(list(state.get("created_dirs") or []))
    if kernel_env is not None:
        _restore_kernel_env(kernel_env, state)
    messages.append(f"pip.conf {'restored' if state.get('had_pip_conf') else 'removed (there was none before)'}: {conf}")
    if activate:
        messages.append(f"bin/activate restored: {activate} (an active shell keeps the variables until it deactivates)")
    env = os.environ if environ is None else environ
    for var in (PIP_CONSTRAINT, PIP_BUILD_CONSTRAINT, UV_CONSTRAINT, UV_BUILD_CONSTRAINT):
        if kernel_env is None and sdir in env.get(var, "").replace("%20", " "):
            messages.append(f"{var} in this shell still names the hook's file, which is gone: unset {var}")
    return HookResult("unhooked", prefix, conf, cfile, bool(state.get("build_constraint")), pip_version,
                      tuple(state.get("composed") or ()), {}, activate, tuple(dict.fromkeys(messages)), False)


def hook_status(prefix: str, environ: Optional[Mapping[str, str]] = None, pip_version: Optional[str] = None,
                torch: Optional[str] = None) -> HookStatus:
    """What pip and uv apply in the environment at `prefix` with these variables, and whether that is the hook."""
    prefix = os.path.abspath(prefix)
    environ = os.environ if environ is None else environ
    conf, sdir, cfile = _places(prefix)
    state = _load_state(sdir)
    problems: List[str] = []
    notes: List[str] = []
    try:
        constraint = effective("constraint", prefix, environ)
        build = effective("build-constraint", prefix, environ)
    except DoctorError as exc:  # the site file itself is unreadable: pip stops on it too
        problems.append(str(exc))
        constraint = build = None
    build_needed = needs_build_constraint(pip_version)
    hooked = state is not None
    in_force = bool(constraint and names(constraint, cfile))
    pinned = _pinned_torch(cfile) if hooked else None
    if environ.get(PIP_CONFIG_FILE) == os.devnull:
        (problems if hooked else notes).append(f"{PIP_CONFIG_FILE}={os.devnull}: pip reads no config file, pip.conf included")
    if hooked:
        if not os.path.isfile(cfile):
            problems.append(f"the hook's constraints file is missing ({cfile}): every pip install fails; run "
                            "`doctor pin --hook` again or `doctor pin --unhook`")
        if constraint is not None and not in_force:
            problems.append(f"{constraint.origin} sets constraint = {constraint.value} and replaces the hook's: "
                            + (f"export {constraint.origin}={location(cfile)} or unset it" if constraint.kind == "env"
                               else "remove that setting"))
        elif constraint is None:
            problems.append(f"pip applies no constraint here: {conf} lacks the hook's setting")
        if build_needed and not (build and names(build, cfile, os.path.join(sdir, BUILD_CONSTRAINTS))):
            problems.append(f"pip {pip_version} keeps constraints out of build isolation and no build-constraint names "
                            "the hook's file: run `doctor pin --hook` again")
        if torch and pinned and _normal(torch) != _normal(pinned):
            problems.append(f"the hook keeps torch {pinned} but torch {torch} is installed: installs that touch torch "
                            "are refused; run `doctor pin --hook` again (or --unhook)")
    elif constraint is not None:
        notes.append(f"not hooked; pip applies constraint = {constraint.value} from {constraint.origin}")
    if build is not None and build_needed:
        notes.append(NO_BUILD_ISOLATION)
    uv = environ.get(UV_CONSTRAINT)
    act = activate_path(prefix)
    block = bool(act and exports_uv(act))
    if hooked and not (uv and cfile in uv.split()) and not block:
        notes.append(f"uv never reads pip.conf: `uv pip install` applies the pins only with {UV_CONSTRAINT}={cfile}")
    return HookStatus(prefix, conf, hooked, in_force and hooked, constraint, build, pip_version, build_needed,
                      cfile if hooked else None, pinned, uv, block, tuple(problems), tuple(notes))


# -- helpers ------------------------------------------------------------------------------------------------


def _composed(key: str, prefix: str, environ: Mapping[str, str], original_sections: Dict[str, Dict[str, str]],
              ours: set, messages: List[str], kernel: bool = False) -> List[str]:
    """The `key` files in force before the hook (config files, then the PIP_ variable), to include with -c.

    DoctorError (refusing the hook) for one that cannot be included as the same file: a relative path
    (pip reads it relative to wherever pip runs) or a file that does not exist.
    """
    found: List[Tuple[str, Setting]] = []
    files = effective(key, prefix, {k: v for k, v in environ.items() if not k.startswith("PIP_") or k == PIP_CONFIG_FILE},
                      original_sections)
    if files is not None:
        found += [(i, files) for i in files.items]
    env = effective(key, prefix, environ, original_sections)
    if env is not None and env.kind == "env":
        found += [(i, env) for i in env.items]
        messages.append(f"{env.origin} was set in this kernel: the hook's file includes it, and {env.origin} now names "
                        "the hook's file" if kernel else
                        f"{env.origin} is set in this environment and replaces pip.conf's {key}: the hook's file "
                        f"includes it; export {env.origin}=<the hook's file> (below) or unset it")
    out: List[str] = []
    for item, setting in found:
        path = as_path(item)
        if path is not None:
            if os.path.realpath(path) in ours:
                continue
            if not os.path.isabs(path):
                raise DoctorError(f"{setting.origin}: {key} {item!r} is a relative path (pip reads it relative to wherever "
                                  "it runs): make it absolute or remove it, then run `doctor pin --hook` again")
            if not os.path.isfile(path):
                raise DoctorError(f"{setting.origin}: {key} {item!r} does not exist (every pip install would fail on it): "
                                  "fix or remove it, then run `doctor pin --hook` again")
            item = path
        if item not in out:
            out.append(item)
    return out


def _before_hook(environ: Mapping[str, str], sdir: str, state: Optional[Mapping[str, Any]]) -> Mapping[str, str]:
    """The variables as they were before this hook set them in a kernel (a second hook composes the same ones)."""
    if state is None:
        return environ
    out = dict(environ)
    before = dict(state.get("environ_before") or {})
    for var in (PIP_CONSTRAINT, PIP_BUILD_CONSTRAINT):
        if sdir in out.get(var, "").replace("%20", " "):
            if before.get(var):
                out[var] = before[var]
            else:
                out.pop(var, None)
    return out


def _in_force(prefix: str, environ: Mapping[str, str], cfile: str) -> bool:
    """Whether pip with these variables applies the hook's constraints file."""
    try:
        s = effective("constraint", prefix, environ)
    except DoctorError:
        return False
    return s is not None and names(s, cfile)


def _normal(version: str) -> str:
    """A version as pip prints it (what === compares), or the text itself when it is no PEP 440 version."""
    v = parse_version(version)
    return str(v) if v is not None else version.strip()


def _pinned_torch(cfile: str) -> Optional[str]:
    """The torch version a constraints file keeps with ===, or None."""
    for line in _read_text(cfile).splitlines():
        m = re.match(r"^torch===(\S+)", line.strip())
        if m:
            return m.group(1)
    return None


def _read_text(path: str) -> str:
    """The first MiB of a file the hook wrote, as text; empty when it cannot be read."""
    try:
        return decode(read_bytes(path, _READ_LIMIT))
    except OSError:
        return ""


def _load_state(sdir: str) -> Optional[Dict[str, Any]]:
    """The hook's state for an environment, None when not hooked; DoctorError for a state file that is not the hook's."""
    path = os.path.join(sdir, STATE)
    try:
        doc = json.loads(read_bytes(path, _READ_LIMIT))
    except (FileNotFoundError, NotADirectoryError):  # no state directory (or a file in its place): not hooked
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise DoctorError(f"{path}: unreadable hook state ({type(exc).__name__}); remove {sdir} by hand after "
                          "checking pip.conf") from None
    if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
        raise DoctorError(f"{path}: not a tune-doctor hook state of schema {STATE_SCHEMA}")
    return doc


def _read_backup(sdir: str, name: str) -> bytes:
    return _read_whole(os.path.join(sdir, name), "the hook's backup is unreadable")


def _activate_files(activate: str, sdir: str, cfile: str, bfile: str) -> Dict[str, bytes]:
    """The activate script with the uv block, and its byte-for-byte backup."""
    data = _read_whole(activate, "cannot read it")
    return {os.path.join(sdir, ACTIVATE_BACKUP): data, activate: with_uv_exports(decode(data), cfile, bfile).encode()}


def _read_whole(path: str, what: str) -> bytes:
    """All of a file that is put back byte for byte (so no size cap); DoctorError `PATH: what (why); nothing changed`."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DoctorError(f"{path}: {what} ({exc.strerror or exc}); nothing changed") from None


# -- a notebook kernel's environment -----------------------------------------------------------------------


def _set_kernel_env(env: MutableMapping[str, str], variables: Mapping[str, str], sdir: str, state: Dict[str, Any]) -> None:
    """Set the variables in a kernel's os.environ, remembering what they were (the first time) for the unhook."""
    before = dict(state.get("environ_before") or {})
    changed = False
    for var, value in variables.items():
        if var not in before:
            before[var] = env.get(var)
            changed = True
        env[var] = value
    if changed:
        state["environ_before"] = before
        write_all({os.path.join(sdir, STATE): (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()})


def _restore_kernel_env(env: MutableMapping[str, str], state: Mapping[str, Any]) -> None:
    """Put back the variables the hook set in this kernel (only those that still hold the hook's values)."""
    sdir = os.path.dirname(str(state.get("constraints") or ""))
    for var, old in dict(state.get("environ_before") or {}).items():
        if sdir and sdir in env.get(var, "").replace("%20", " "):
            if old is None:
                env.pop(var, None)
            else:
                env[var] = old


def _messages(pins: PinSet, prefix: str, environ: Mapping[str, str], kernel_env: Optional[Mapping[str, str]],
              build: bool, variables: Mapping[str, str], uv_ok: bool, activate: object) -> List[str]:
    """What the user must know after a hook, one line each."""
    out: List[str] = []
    torch = f"torch {pins.torch}" if pins.torch else "the pinned packages"
    out.append(f"every `pip install` in {prefix} now keeps these pins: pip refuses an install that would replace {torch}")
    if build:
        out.append(f"pip {pins.pip_version}: build-constraint set too (from pip 26.2 constraints no longer reach build "
                   "isolation, so a source build of flash-attn or xformers could pull another torch)")
        out.append(NO_BUILD_ISOLATION)
    elif pins.pip_version:
        out.append(f"pip {pins.pip_version} passes constraints into build isolation itself: no build-constraint needed")
    else:
        out.append("no pip in this environment: only uv installs here, through the variables below")
    if kernel_env is None:
        cf = environ.get(PIP_CONFIG_FILE)
        if cf == os.devnull:
            out.append(f"{PIP_CONFIG_FILE}={os.devnull} in this shell: pip reads no config file here, so the hook is not in "
                       f"force in it: unset {PIP_CONFIG_FILE} or export {PIP_CONSTRAINT}={variables[PIP_CONSTRAINT]}")
        if uv_ok:
            where = f"exported by {activate}" if activate else "export them in the shells that run uv"
            out.append(f"uv never reads pip.conf ({where}): "
                       + " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items() if k.startswith("UV_")))
        else:
            out.append(f"uv never reads pip.conf and splits {UV_CONSTRAINT} on whitespace: pass "
                       f"--constraint {shlex.quote(str(variables[PIP_CONSTRAINT]))} to `uv pip install`")
    else:
        out.append("set in this kernel for later !pip / %pip / !uv pip cells: " + ", ".join(sorted(variables)))
    out.append(NO_UNINSTALL_GUARD)
    return out
