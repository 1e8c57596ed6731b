"""Real venvs holding a recorded world, and pip's resolver run against the local index, with this machine's
pip settings neutralised (no config files, no find-links, no PIP_* from the environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tests.resolve.index.server import DATA, LocalIndex, canonical

PIP_TIMEOUT = 300


def pip_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """os.environ without PIP_*/UV_* settings, reading no pip config file (PIP_CONFIG_FILE=/dev/null skips all of them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra or {})
    return env


def scenarios() -> Dict[str, Dict[str, Any]]:
    """data/scenarios.json: id -> {"about", "installed": ["[index:]name==version", ...], "unmet": [...]}."""
    return dict(json.loads((DATA / "scenarios.json").read_text()))


def split_pin(pin: str, default_index: str = "pypi") -> Tuple[str, str, str]:
    """`cu124:xformers==0.0.28.post3` -> ("cu124", "xformers", "0.0.28.post3"); the index defaults to pypi."""
    index, _, rest = pin.rpartition(":")
    name, sep, version = rest.partition("==")
    if not sep:
        raise ValueError(f"not a name==version pin: {pin!r}")
    return index or default_index, name, version


@dataclass(frozen=True)
class World:
    """A venv with a recorded world installed --no-deps from the rebuilt wheels."""

    root: Path  # the venv directory
    python: Path  # its interpreter (root/bin/python)
    installed: Tuple[str, ...]  # the pins installed, "[index:]name==version"

    def site_packages(self) -> Path:
        """The venv's purelib folder."""
        return next((self.root / "lib").glob("python3*/site-packages"))

    def versions(self) -> Dict[str, str]:
        """canonical name -> version, read from the dist-infos on disk now (after any change)."""
        out: Dict[str, str] = {}
        for info in self.site_packages().glob("*.dist-info"):
            meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
            fields = dict(line.split(": ", 1) for line in meta.split("\n\n")[0].splitlines() if ": " in line and not line[0].isspace())
            out[canonical(fields["Name"])] = fields["Version"]
        return out


def pip(*args: str, python: Optional[Path] = None, timeout: int = PIP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """This interpreter's pip (aimed at another one with --python), neutralised environment; raises with output on failure."""
    cmd = [sys.executable, "-m", "pip"]
    if python is not None:
        cmd += ["--python", str(python)]
    cmd += list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=pip_env())
    if res.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def make_world(root: Path, index: LocalIndex, pins: Sequence[str], with_pip: bool = False) -> World:
    """Create a venv at root and install the pins ("[index:]name==version") --no-deps from the rebuilt wheels."""
    venv.EnvBuilder(with_pip=with_pip, symlinks=True, clear=True).create(root)
    python = root / "bin" / "python"
    # A later pin of the same project replaces an earlier one (scenario + extra pins).
    by_name = {canonical(split_pin(p)[1]): p for p in pins}
    pins = list(by_name.values())
    wheels = [str(index.wheel(*split_pin(p))) for p in pins]
    if wheels:
        pip("install", "--no-deps", "--no-index", "--no-compile", "--quiet", *wheels, python=python)
    return World(root=root, python=python, installed=tuple(pins))


def make_scenario(root: Path, index: LocalIndex, scenario: str, extra: Sequence[str] = (), with_pip: bool = False) -> World:
    """A venv holding a recorded scenario's installed world (plus extra pins)."""
    return make_world(root, index, [*scenarios()[scenario]["installed"], *extra], with_pip=with_pip)


def resolve(
    python: Path,
    index_url: str,
    requirements: Sequence[str],
    constraints: Sequence[str] = (),
    args: Sequence[str] = (),
    workdir: Optional[Path] = None,
) -> Dict[str, Any]:
    """pip's resolver for the venv, exactly as the planner runs it: `pip --python PY install --dry-run --quiet
    --report FILE --only-binary :all: --index-url URL [-c constraints.txt] REQS`; returns the report."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        report = Path(tmp) / "report.json"
        cmd = ["install", "--dry-run", "--quiet", "--report", str(report), "--only-binary", ":all:", "--index-url", index_url]
        if constraints:
            cfile = Path(tmp) / "constraints.txt"
            cfile.write_text("".join(f"{c}\n" for c in constraints))
            cmd += ["-c", str(cfile)]
        pip(*cmd, *args, *requirements, python=python)
        return dict(json.loads(report.read_text()))


def report_pins(report: Dict[str, Any]) -> List[str]:
    """`name==version` for each package a pip report would install, sorted by canonical name."""
    return sorted(f"{canonical(i['metadata']['name'])}=={i['metadata']['version']}" for i in report.get("install", []))
