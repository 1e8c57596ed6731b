"""The pre-install hook: pins in force for every later `pip install` (and, through variables, `uv pip install`).

How pip finds it (pip's configuration.py and cli/parser.py, checked on pip 23.2 and 26.3):
- pip reads, in this order, the global files (/etc/xdg/pip/pip.conf, /etc/pip.conf), the user files
  (~/.pip/pip.conf, ~/.config/pip/pip.conf; skipped when PIP_CONFIG_FILE names a file that exists), the
  site file `<sys.prefix>/pip.conf`, then the file PIP_CONFIG_FILE names. A later file's value REPLACES an
  earlier one for the same section and key (nothing merges); then [global] values, then the command's
  section ([install]), then PIP_<KEY> variables are applied, each replacing the one before. So the
  site file's `[install] constraint` wins over every user or global `constraint`, and PIP_CONSTRAINT
  in the environment wins over it. PIP_CONFIG_FILE=os.devnull means no config file at all.
- A list-valued setting (constraint, build-constraint) is split on whitespace: a path with a space is
  written as a file:// URL (%20), which pip opens as a file.
- From pip 26.2 constraints no longer reach the isolated build environment; `build-constraint` does,
  and pip refuses it together with --no-build-isolation.

The hook writes `[install] constraint = FILE` (and `build-constraint` for pip >= 26.2 in the TARGET
environment) into the target's site pip.conf, after saving that file byte for byte; FILE holds the pins
and `-c` lines for any constraint the user or the machine had set before (the hook's setting replaces
theirs, so it includes them). `remove_hook` puts pip.conf back byte for byte (or removes it when there
was none). Nothing here stops `pip uninstall torch`: constraints only limit what gets installed.
uv never reads pip.conf: it takes UV_CONSTRAINT / UV_BUILD_CONSTRAINT (printed, or written into the
venv's bin/activate with shell=True, reversibly).

Every file is written atomically (temp file in the same directory + os.replace); a hook that cannot
write everything changes nothing.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import stat
import sys
import tempfile
import time
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from doctor.envvars import (HOME, PIP_BUILD_CONSTRAINT, PIP_CONFIG_FILE, PIP_CONSTRAINT, UV_BUILD_CONSTRAINT,
                            UV_CONSTRAINT)
from doctor.errors import DoctorError
from doctor.resolve.pins import PinSet, constraint_lines

STATE_SCHEMA = 1
CONFIG_BASENAME = "pip.ini" if sys.platform == "win32" else "pip.conf"
STATE_DIR = os.path.join("etc", "tune-doctor")  # under the target's sys.prefix
CONSTRAINTS = "constraints.txt"
BUILD_CONSTRAINTS = "build-constraints.txt"  # only when the user had a build constraint of their own
STATE = "hook.json"
PIP_CONF_BACKUP = "pip.conf.orig"
ACTIVATE_BACKUP = "activate.orig"
BUILD_CONSTRAINT_SINCE = (26, 2)  # pip releases from which constraints no longer reach build isolation

_XDG_CONFIG_HOME = "XDG_CONFIG_HOME"
_XDG_CONFIG_DIRS = "XDG_CONFIG_DIRS"
_MARK = "# tune-doctor pins: `doctor pin --unhook` restores this file as it was"
_ACTIVATE_BEGIN = "# >>> tune-doctor pins (`doctor pin --unhook` removes this block) >>>"
_ACTIVATE_END = "# <<< tune-doctor pins <<<"
_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_KEYS = ("constraint", "build-constraint")

# What the hook says every time: constraints limit installs, never removals.
NO_UNINSTALL_GUARD = ("the hook does not stop `pip uninstall torch` (or uv's): constraints only limit what pip "
                      "installs")
NO_BUILD_ISOLATION = ("pip >= 26.2 refuses --no-build-isolation while build-constraint is set (flash-attn's usual "
                      "install): `doctor install flash-attn` handles that case")


class Setting(NamedTuple):
    """A constraint setting as pip would apply it."""

    key: str  # "constraint" or "build-constraint"
    value: str  # as pip reads it: whitespace-separated paths or URLs
    origin: str  # "PIP_CONSTRAINT" or "<file> [install]"
    kind: str  # env / global / user / site / config-file (PIP_CONFIG_FILE)

    @property
    def items(self) -> List[str]:
        """The files or URLs, split on whitespace as pip splits them."""
        return self.value.split()


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


class Refusal(NamedTuple):
    """What pip's output says was refused, and which pins did it."""

    refused: bool  # pip refused the install (a resolver conflict, or an option clash with the hook)
    kind: str  # "conflict", "no-build-isolation", "no-version", "" (nothing refused)
    requested: Tuple[str, ...]  # what was asked for ("torch==9.9")
    blocking: Tuple[str, ...]  # the constraint lines that stood in the way ("torch===2.13.0+cpu")
    explanation: str  # one paragraph
    advice: Tuple[str, ...] = ()


# -- where pip looks ----------------------------------------------------------------------------------------


def site_config(prefix: str) -> str:
    """The site pip.conf of an environment: `<sys.prefix>/pip.conf` (pip.ini on Windows)."""
    return os.path.join(prefix, CONFIG_BASENAME)


def state_dir(prefix: str) -> str:
    """Where the hook keeps its constraints, backups and state for one environment."""
    return os.path.join(prefix, STATE_DIR)


def config_files(prefix: str, environ: Mapping[str, str]) -> List[Tuple[str, str]]:
    """(kind, path) of every file pip reads, in pip's order (later replaces earlier); empty under PIP_CONFIG_FILE=devnull."""
    env_file = environ.get(PIP_CONFIG_FILE)
    if env_file == os.devnull:
        return []
    home = environ.get(HOME) or os.path.expanduser("~")
    files: List[Tuple[str, str]] = []
    if sys.platform == "darwin":
        files.append(("global", os.path.join("/Library/Application Support/pip", CONFIG_BASENAME)))
    elif sys.platform != "win32":
        dirs = (environ.get(_XDG_CONFIG_DIRS) or "/etc/xdg").split(os.pathsep)
        files += [("global", os.path.join(d, "pip", CONFIG_BASENAME)) for d in dirs if d]
        files.append(("global", os.path.join("/etc", CONFIG_BASENAME)))
    if not (env_file and os.path.exists(env_file)):  # pip skips the user files when PIP_CONFIG_FILE names a file
        files.append(("user", os.path.join(home, ".pip", CONFIG_BASENAME)))
        if sys.platform == "darwin" and os.path.isdir(os.path.join(home, "Library/Application Support/pip")):
            files.append(("user", os.path.join(home, "Library/Application Support/pip", CONFIG_BASENAME)))
        else:
            base = environ.get(_XDG_CONFIG_HOME) or os.path.join(home, ".config")
            files.append(("user", os.path.join(base, "pip", CONFIG_BASENAME)))
    files.append(("site", site_config(prefix)))
    if env_file:
        files.append(("config-file", env_file))
    return files


def _norm(key: str) -> str:
    """pip's spelling of a config key: lower case, '-' for '_', no leading '--'."""
    key = key.strip().lower().replace("_", "-")
    return key[2:] if key.startswith("--") else key


def _parse_conf(text: str, path: str) -> Dict[str, Dict[str, str]]:
    """section -> {key: value} as pip's RawConfigParser reads it; DoctorError naming the file when pip could not."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        first = " ".join(str(exc).split())[:200]
        raise DoctorError(f"{path}: pip cannot parse it ({first}); fix it first") from None
    return {s: {_norm(k): v for k, v in parser.items(s)} for s in parser.sections()}


def _read_conf(path: str) -> Tuple[Optional[bytes], Dict[str, Dict[str, str]]]:
    """(raw bytes or None when absent, parsed sections); DoctorError when it exists but cannot be read or parsed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, {}
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DoctorError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return data, _parse_conf(_decode(data), path)


def _decode(data: bytes) -> str:
    """pip reads config in the locale's encoding; UTF-8 (then Latin-1, which never fails) is what files hold."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def effective(key: str, prefix: str, environ: Mapping[str, str],
              site_sections: Optional[Dict[str, Dict[str, str]]] = None) -> Optional[Setting]:
    """The value pip applies for `key` in `pip install` (pip's override order), or None.

    `site_sections` stands in for the site file (the hook asks what was in force before it).
    Unreadable files other than the site one are skipped: pip would stop on them, and says so itself.
    """
    env_name = "PIP_" + key.upper().replace("-", "_")
    if environ.get(env_name):
        return Setting(key, environ[env_name], env_name, "env")
    last: Dict[str, Tuple[str, str, str]] = {}  # section -> (value, origin, kind); later files replace earlier
    for kind, path in config_files(prefix, environ):
        if kind == "site" and site_sections is not None:
            sections = site_sections
        else:
            try:
                sections = _read_conf(path)[1]
            except DoctorError:
                continue
        for section in ("global", "install"):
            if key in sections.get(section, {}):
                last[section] = (sections[section][key], f"{path} [{section}]", kind)
    for section in ("install", "global"):  # [install] is applied after [global]; empty values are dropped
        if section in last and last[section][0].strip():
            value, origin, kind = last[section]
            return Setting(key, " ".join(value.split()), origin, kind)
    return None


# -- pip.conf with the hook's settings ------------------------------------------------------------------------


def _location(path: str) -> str:
    """How pip.conf and PIP_* variables name a file: the path, or a file:// URL when it has whitespace (pip splits on it)."""
    if not re.search(r"\s", path):
        return path
    from pathlib import Path

    return Path(path).as_uri()


def _as_path(item: str) -> Optional[str]:
    """A local file path for a constraint item (file:// URLs decoded); None for http(s) URLs."""
    parts = urlsplit(item)
    if parts.scheme == "file":
        return unquote(parts.path)
    if parts.scheme in ("http", "https"):
        return None
    return item


def edit_conf(text: str, settings: Sequence[Tuple[str, str]]) -> str:
    """pip.conf text with `settings` in its [install] section, that section's constraint keys replaced.

    Everything else stays byte for byte (comments, other sections, line endings); a new [install] section is
    appended when there is none (configparser refuses a second one).
    """
    nl = "\r\n" if "\r\n" in text else "\n"
    block = [_MARK + nl] + [f"{k} = {v}{nl}" for k, v in settings]
    out: List[str] = []
    section: Optional[str] = None
    skipping = inserted = False
    for line in text.splitlines(keepends=True):
        m = _SECTION.match(line)
        if m:
            section, skipping = m.group(1).strip(), False
            out.append(line)
            if section == "install" and not inserted:
                out.extend(block)
                inserted = True
            continue
        stripped = line.strip()
        if skipping and stripped and line[:1] in (" ", "\t"):  # a continuation line of a replaced key
            continue
        skipping = False
        if (section == "install" and stripped and line[:1] not in (" ", "\t") and not stripped.startswith(("#", ";"))
                and _norm(re.split(r"[=:]", stripped, maxsplit=1)[0]) in _KEYS):
            skipping = True
            continue
        if line.rstrip("\r\n") == _MARK:
            continue
        out.append(line)
    if not inserted:
        if out and not out[-1].endswith(("\n", "\r")):
            out.append(nl)
        if out:
            out.append(nl)
        out.append("[install]" + nl)
        out.extend(block)
    return "".join(out)


# -- install / remove -------------------------------------------------------------------------------------


def needs_build_constraint(pip_version: Optional[str]) -> bool:
    """Whether this pip keeps constraints out of build isolation (>= 26.2), so the hook must also set build-constraint."""
    if not pip_version:
        return False
    m = re.match(r"^(\d+)\.(\d+)", pip_version.strip())
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= BUILD_CONSTRAINT_SINCE  # type: ignore[union-attr]


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
    conf, sdir = site_config(prefix), state_dir(prefix)
    cfile = os.path.join(sdir, CONSTRAINTS)
    state = _load_state(sdir)
    current_bytes, _ = _read_conf(conf)
    if state is not None:  # already hooked: the file as it was before the first hook is the original
        original: Optional[bytes] = _read_backup(sdir, PIP_CONF_BACKUP) if state.get("had_pip_conf") else None
    else:
        original = current_bytes
    original_sections = _parse_conf(_decode(original), conf) if original is not None else {}
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
    settings = [("constraint", _location(cfile))] + ([("build-constraint", _location(bfile))] if build else [])
    new_conf = edit_conf(_decode(original) if original is not None else "", settings).encode()
    _check_conf(new_conf, conf, settings)

    variables = {PIP_CONSTRAINT: _location(cfile)}
    if build:
        variables[PIP_BUILD_CONSTRAINT] = _location(bfile)
    uv_ok = not re.search(r"\s", cfile)
    if uv_ok:
        variables[UV_CONSTRAINT] = cfile
        variables[UV_BUILD_CONSTRAINT] = bfile

    activate = _activate_path(prefix) if shell else None
    if shell and activate is None:
        messages.append(f"no bin/activate under {prefix} (not a venv): nothing written for uv; set the variables below")
    if activate is not None and not uv_ok:
        messages.append("uv splits UV_CONSTRAINT on whitespace and this path has a space: bin/activate is left alone")
        activate = None

    new_state: Dict[str, Any] = {
        "schema": STATE_SCHEMA, "prefix": prefix, "pip_conf": conf, "constraints": cfile,
        "had_pip_conf": original is not None,
        "pip_conf_mode": (state or {}).get("pip_conf_mode") if state is not None else _mode(conf),
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
        files[act] = _activate_text(_decode(backup), cfile, bfile).encode()

    created = _make_dirs(sdir)
    try:
        if created:
            new_state["created_dirs"] = created
        files[os.path.join(sdir, STATE)] = (json.dumps(new_state, indent=2, sort_keys=True) + "\n").encode()
        files[conf] = new_conf  # last: pip sees the hook only when its file is in place
        _write_all(files, modes={conf: new_state["pip_conf_mode"]})
    except BaseException:
        _remove_dirs(created)
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
    conf, sdir = site_config(prefix), state_dir(prefix)
    cfile = os.path.join(sdir, CONSTRAINTS)
    state = _load_state(sdir)
    if state is None:
        return HookResult("not-hooked", prefix, conf, cfile, False, pip_version,
                          messages=("no hook in this environment: nothing changed",), in_force=False)
    messages: List[str] = []
    files: Dict[str, Optional[bytes]] = {}
    current, _ = _read_conf(conf)
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
    _write_all(files, modes={conf: state.get("pip_conf_mode")})
    _remove_dirs(list(state.get("created_dirs") or []))
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
    conf, sdir = site_config(prefix), state_dir(prefix)
    cfile = os.path.join(sdir, CONSTRAINTS)
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
    in_force = bool(constraint and _names(constraint, cfile))
    pinned = _pinned_torch(cfile) if hooked else None
    if environ.get(PIP_CONFIG_FILE) == os.devnull:
        (problems if hooked else notes).append(f"{PIP_CONFIG_FILE}={os.devnull}: pip reads no config file, pip.conf included")
    if hooked:
        if not os.path.isfile(cfile):
            problems.append(f"the hook's constraints file is missing ({cfile}): every pip install fails; run "
                            "`doctor pin --hook` again or `doctor pin --unhook`")
        if constraint is not None and not in_force:
            problems.append(f"{constraint.origin} sets constraint = {constraint.value} and replaces the hook's: "
                            + (f"export {constraint.origin}={_location(cfile)} or unset it" if constraint.kind == "env"
                               else "remove that setting"))
        elif constraint is None:
            problems.append(f"pip applies no constraint here: {conf} lacks the hook's setting")
        if build_needed and not (build and _names(build, cfile, os.path.join(sdir, BUILD_CONSTRAINTS))):
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
    act = _activate_path(prefix)
    block = bool(act and _ACTIVATE_BEGIN in _read_text(act))
    if hooked and not (uv and cfile in uv.split()) and not block:
        notes.append(f"uv never reads pip.conf: `uv pip install` applies the pins only with {UV_CONSTRAINT}={cfile}")
    return HookStatus(prefix, conf, hooked, in_force and hooked, constraint, build, pip_version, build_needed,
                      cfile if hooked else None, pinned, uv, block, tuple(problems), tuple(notes))


# -- what pip refused -------------------------------------------------------------------------------------


def explain_refusal(pip_output: object, pins: Optional[PinSet] = None) -> Refusal:
    """Read pip's output (a string, or the lines of `out = !pip install ...`) for what was refused and why.

    `%pip install` does not fail a notebook cell when pip refuses, so the notebook asks here.
    """
    if isinstance(pip_output, bytes):
        text = pip_output.decode("utf-8", "replace")
    elif isinstance(pip_output, str):
        text = pip_output
    elif isinstance(pip_output, Iterable):  # IPython's SList from `out = !pip ...` is a list of lines
        text = "\n".join(str(x) for x in pip_output)
    else:
        text = str(pip_output or "")
    if "--build-constraint cannot be used with --no-build-isolation" in text:
        return Refusal(True, "no-build-isolation", (), (), NO_BUILD_ISOLATION,
                       ("`doctor install PKG` (it installs without build isolation and keeps the pins)",
                        "or, for that one command: PIP_BUILD_CONSTRAINT=' ' (a space: it replaces pip.conf's value and "
                        "names no file; an empty value is dropped by pip, so pip.conf's would stand) and -c <the hook's "
                        "constraints file>, so the runtime pins still hold"))
    requested: List[str] = []
    blocking: List[str] = []
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^The user requested \(constraint\) (.+)$", s)
        if m:
            blocking.append(m.group(1).strip())
            continue
        m = re.match(r"^The user requested (.+)$", s)
        if m:
            requested.append(m.group(1).strip())
            continue
        m = re.match(r"^(\S+ \S+) depends on (.+)$", s)
        if m:
            requested.append(f"{m.group(1)} (which depends on {m.group(2).strip()})")
    conflict = "ResolutionImpossible" in text or "conflicting dependencies" in text
    if conflict:
        why = _pin_reasons(blocking, pins)
        expl = ("pip refused the install: " + ", ".join(requested or ["what was asked for"]) + " conflicts with the pins "
                + (", ".join(blocking) if blocking else "in force") + ". Nothing was installed." + why)
        return Refusal(True, "conflict", tuple(requested), tuple(blocking), expl,
                       ("install a release that fits the pins: `doctor pin --for PKG` names it",
                        "change torch on purpose: `doctor pin --hook --torch VER --cuda VER`, then install",
                        "or lift the hook: `doctor pin --unhook`"))
    m = re.search(r"Could not find a version that satisfies the requirement (\S+)", text)
    if m:
        return Refusal(True, "no-version", (m.group(1),), (), f"pip found no release of {m.group(1)} that satisfies it and "
                       "the pins in force; nothing was installed", ("`doctor pin --for PKG` says which release fits",))
    return Refusal(False, "", (), (), "pip refused nothing in this output", ())


def _pin_reasons(blocking: Sequence[str], pins: Optional[PinSet]) -> str:
    """' torch===X: <reason>.' for each blocking constraint the pins explain."""
    if pins is None:
        return ""
    out = []
    for line in blocking:
        name = re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0]
        p = pins.pin_for(name)
        if p is not None:
            out.append(f" {p.requirement}: {p.reason}.")
    return "".join(out)


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
        path = _as_path(item)
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


def _check_conf(data: bytes, conf: str, settings: Sequence[Tuple[str, str]]) -> None:
    """The new pip.conf must parse and carry exactly the hook's settings (a guard against an editing slip)."""
    sections = _parse_conf(_decode(data), conf)
    for key, value in settings:
        if sections.get("install", {}).get(key) != value:
            raise DoctorError(f"{conf}: could not place {key} in its [install] section; edit it by hand")


def _names(setting: Setting, *paths: str) -> bool:
    """Whether a setting's items include one of these files (as a path or a file:// URL)."""
    want = {os.path.realpath(p) for p in paths}
    return any((p := _as_path(i)) is not None and os.path.realpath(p) in want for i in setting.items)


def _in_force(prefix: str, environ: Mapping[str, str], cfile: str) -> bool:
    """Whether pip with these variables applies the hook's constraints file."""
    try:
        s = effective("constraint", prefix, environ)
    except DoctorError:
        return False
    return s is not None and _names(s, cfile)


def _normal(version: str) -> str:
    """A version as pip prints it (what === compares), or the text itself when it is no PEP 440 version."""
    from packaging.version import InvalidVersion, Version

    try:
        return str(Version(version))
    except InvalidVersion:
        return version.strip()


def _pinned_torch(cfile: str) -> Optional[str]:
    """The torch version a constraints file keeps with ===, or None."""
    for line in _read_text(cfile).splitlines():
        m = re.match(r"^torch===(\S+)", line.strip())
        if m:
            return m.group(1)
    return None


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return _decode(fh.read(1024 * 1024))
    except OSError:
        return ""


def _mode(path: str) -> Optional[int]:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _load_state(sdir: str) -> Optional[Dict[str, Any]]:
    """The hook's state for an environment, None when not hooked; DoctorError for a state file that is not the hook's."""
    path = os.path.join(sdir, STATE)
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(1024 * 1024))
    except (FileNotFoundError, NotADirectoryError):  # no state directory (or a file in its place): not hooked
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise DoctorError(f"{path}: unreadable hook state ({type(exc).__name__}); remove {sdir} by hand after "
                          "checking pip.conf") from None
    if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
        raise DoctorError(f"{path}: not a tune-doctor hook state of schema {STATE_SCHEMA}")
    return doc


def _read_backup(sdir: str, name: str) -> bytes:
    path = os.path.join(sdir, name)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DoctorError(f"{path}: the hook's backup is unreadable ({exc.strerror or exc}); nothing changed") from None


def _make_dirs(path: str) -> List[str]:
    """Create `path` and missing parents; the ones created (deepest last). DoctorError with nothing left behind."""
    missing: List[str] = []
    p = path
    while not os.path.isdir(p):
        if os.path.lexists(p):
            raise DoctorError(f"cannot create {path}: {p} is not a directory; nothing changed")
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    created: List[str] = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except OSError as exc:
            _remove_dirs(created)
            raise DoctorError(f"cannot create {d}: {exc.strerror or exc}; nothing changed") from None
        created.append(d)
    return created


def _remove_dirs(dirs: Sequence[str]) -> None:
    """Remove directories the hook created, deepest first, when they are empty."""
    for d in sorted(dirs, key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _write_all(files: Mapping[str, Optional[bytes]], modes: Optional[Mapping[str, object]] = None) -> None:
    """Write (bytes) or remove (None) every file, all or nothing: temp files first, then renames in order.

    A failure before the renames leaves every target as it was; a failure during them puts back the ones
    already replaced. DoctorError with one line naming the file.
    """
    modes = modes or {}
    staged: List[Tuple[str, Optional[str]]] = []  # (target, temp or None for a removal)
    try:
        for target, data in files.items():
            if data is None:
                staged.append((target, None))
                continue
            d = os.path.dirname(target) or "."
            if os.path.lexists(target) and not os.path.isfile(target):
                raise DoctorError(f"{target}: not a regular file; nothing changed")
            if os.path.exists(target) and not os.access(target, os.W_OK):
                raise DoctorError(f"{target}: not writable; nothing changed")
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=d)
            except OSError as exc:
                raise DoctorError(f"cannot write {target}: {exc.strerror or exc}; nothing changed") from None
            staged.append((target, tmp))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            mode = modes.get(target)
            os.chmod(tmp, int(mode) if isinstance(mode, int) else _mode(target) or 0o644)
    except BaseException:
        for _t, leftover in staged:
            if leftover:
                _unlink(leftover)
        raise
    done: List[Tuple[str, Optional[bytes]]] = []  # (target, its bytes before) for a rollback
    try:
        for target, temp in staged:
            before = _read_bytes_or_none(target)
            if temp is None:
                if os.path.lexists(target):
                    os.unlink(target)
            else:
                os.replace(temp, target)
            done.append((target, before))
    except OSError as exc:
        for _t, leftover in staged:
            if leftover:
                _unlink(leftover)
        for target, before in reversed(done):
            try:
                if before is None:
                    _unlink(target)
                else:
                    with open(target, "wb") as fh:
                        fh.write(before)
            except OSError:
                pass
        raise DoctorError(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; nothing changed") from None


def _read_bytes_or_none(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- bin/activate (uv) -------------------------------------------------------------------------------------


def _activate_path(prefix: str) -> Optional[str]:
    path = os.path.join(prefix, "bin", "activate")
    return path if os.path.isfile(path) else None


def _activate_files(activate: str, sdir: str, cfile: str, bfile: str) -> Dict[str, bytes]:
    """The activate script with the uv block, and its byte-for-byte backup."""
    try:
        with open(activate, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DoctorError(f"{activate}: cannot read it ({exc.strerror or exc}); nothing changed") from None
    return {os.path.join(sdir, ACTIVATE_BACKUP): data, activate: _activate_text(_decode(data), cfile, bfile).encode()}


def _activate_text(text: str, cfile: str, bfile: str) -> str:
    """activate with the uv variables exported at its end and unset by its deactivate()."""
    unset = f"    unset {UV_CONSTRAINT} {UV_BUILD_CONSTRAINT}  # tune-doctor pins\n"
    out = re.sub(r"^(deactivate \(\) \{\n)", lambda m: m.group(1) + unset, text, count=1, flags=re.M)
    block = (f"\n{_ACTIVATE_BEGIN}\n# uv never reads pip.conf: these keep `uv pip install` within the pins\n"
             f"export {UV_CONSTRAINT}={shlex.quote(cfile)}\nexport {UV_BUILD_CONSTRAINT}={shlex.quote(bfile)}\n"
             f"{_ACTIVATE_END}\n")
    return out + ("" if out.endswith("\n") else "\n") + block


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
        _write_all({os.path.join(sdir, STATE): (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()})


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
