"""pip's configuration: which files pip reads, how it layers them, and pip.conf text parsed and edited.

How pip finds a setting (pip's configuration.py and cli/parser.py, checked on pip 23.2 and 26.3):
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

Reading never changes a file; editing works on text and leaves everything but the [install] section's
constraint keys byte for byte.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
import sys
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from doctor.compat_matrix.versions import parse_version
from doctor import envvars
from doctor.envvars import HOME, PIP_CONFIG_FILE
from doctor.errors import DoctorError

CONFIG_BASENAME = "pip.ini" if sys.platform == "win32" else "pip.conf"
BUILD_CONSTRAINT_SINCE = (26, 2)  # pip releases from which constraints no longer reach build isolation
CONSTRAINT_KEYS = ("constraint", "build-constraint")

# The comment edit_conf puts above the settings it writes (and drops when it edits the file again).
MARK = "# tune-doctor pins: `doctor pin --unhook` restores this file as it was"
_SECTION = re.compile(r"^\s*\[([^\]]+)\]")


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


# -- where pip looks ----------------------------------------------------------------------------------------


def site_config(prefix: str) -> str:
    """The site pip.conf of an environment: `<sys.prefix>/pip.conf` (pip.ini on Windows)."""
    return os.path.join(prefix, CONFIG_BASENAME)


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
        dirs = (environ.get(envvars.XDG_CONFIG_DIRS) or "/etc/xdg").split(os.pathsep)
        files += [("global", os.path.join(d, "pip", CONFIG_BASENAME)) for d in dirs if d]
        files.append(("global", os.path.join("/etc", CONFIG_BASENAME)))
    if not (env_file and os.path.exists(env_file)):  # pip skips the user files when PIP_CONFIG_FILE names a file
        files.append(("user", os.path.join(home, ".pip", CONFIG_BASENAME)))
        if sys.platform == "darwin" and os.path.isdir(os.path.join(home, "Library/Application Support/pip")):
            files.append(("user", os.path.join(home, "Library/Application Support/pip", CONFIG_BASENAME)))
        else:
            base = environ.get(envvars.XDG_CONFIG_HOME) or os.path.join(home, ".config")
            files.append(("user", os.path.join(base, "pip", CONFIG_BASENAME)))
    files.append(("site", site_config(prefix)))
    if env_file:
        files.append(("config-file", env_file))
    return files


def needs_build_constraint(pip_version: Optional[str]) -> bool:
    """Whether this pip keeps constraints out of build isolation (>= 26.2), so the hook must also set build-constraint."""
    v = parse_version(pip_version)
    return v is not None and v.release[:2] >= BUILD_CONSTRAINT_SINCE


# -- reading ---------------------------------------------------------------------------------------------------


def _norm(key: str) -> str:
    """pip's spelling of a config key: lower case, '-' for '_', no leading '--'."""
    key = key.strip().lower().replace("_", "-")
    return key[2:] if key.startswith("--") else key


def parse_conf(text: str, path: str) -> Dict[str, Dict[str, str]]:
    """section -> {key: value} as pip's RawConfigParser reads it; DoctorError naming the file when pip could not."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        first = " ".join(str(exc).split())[:200]
        raise DoctorError(f"{path}: pip cannot parse it ({first}); fix it first") from None
    return {s: {_norm(k): v for k, v in parser.items(s)} for s in parser.sections()}


def read_conf(path: str) -> Tuple[Optional[bytes], Dict[str, Dict[str, str]]]:
    """(raw bytes or None when absent, parsed sections); DoctorError when it exists but cannot be read or parsed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, {}
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DoctorError(f"{path}: not a regular file")
    try:  # the whole file, with no size cap: these bytes are the backup restored byte for byte
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return data, parse_conf(decode(data), path)


def decode(data: bytes) -> str:
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
                sections = read_conf(path)[1]
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


# -- how a setting names a file --------------------------------------------------------------------------------


def location(path: str) -> str:
    """How pip.conf and PIP_* variables name a file: the path, or a file:// URL when it has whitespace (pip splits on it)."""
    if not re.search(r"\s", path):
        return path
    from pathlib import Path

    return Path(path).as_uri()


def as_path(item: str) -> Optional[str]:
    """A local file path for a constraint item (file:// URLs decoded); None for http(s) URLs."""
    parts = urlsplit(item)
    if parts.scheme == "file":
        return unquote(parts.path)
    if parts.scheme in ("http", "https"):
        return None
    return item


def names(setting: Setting, *paths: str) -> bool:
    """Whether a setting's items include one of these files (as a path or a file:// URL)."""
    want = {os.path.realpath(p) for p in paths}
    return any((p := as_path(i)) is not None and os.path.realpath(p) in want for i in setting.items)


# -- editing ---------------------------------------------------------------------------------------------------


def edit_conf(text: str, settings: Sequence[Tuple[str, str]]) -> str:
    """pip.conf text with `settings` in its [install] section, that section's constraint keys replaced.

    Everything else stays byte for byte (comments, other sections, line endings); a new [install] section is
    appended when there is none (configparser refuses a second one).
    """
    nl = "\r\n" if "\r\n" in text else "\n"
    block = [MARK + nl] + [f"{k} = {v}{nl}" for k, v in settings]
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
                and _norm(re.split(r"[=:]", stripped, maxsplit=1)[0]) in CONSTRAINT_KEYS):
            skipping = True
            continue
        if line.rstrip("\r\n") == MARK:
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


def check_edit(data: bytes, conf: str, settings: Sequence[Tuple[str, str]]) -> None:
    """The edited pip.conf must parse and carry exactly these settings (a guard against an editing slip)."""
    sections = parse_conf(decode(data), conf)
    for key, value in settings:
        if sections.get("install", {}).get(key) != value:
            raise DoctorError(f"{conf}: could not place {key} in its [install] section; edit it by hand")
