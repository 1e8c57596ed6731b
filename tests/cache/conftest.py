"""Shared helpers for the cache tests: real directories under tmp_path, an environment pointing every cache there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, NamedTuple, Optional, Sequence

import pytest

from doctor.facts import GPU, Distribution, Facts, Hardware, PlatformInfo, PythonInfo

HEADER = '"""\n{zoo}\n{unsloth}\n{transformers}\n{trl}\n__UNSLOTH_VERSIONING__\n"""\n'
INSTALLED = {"unsloth-zoo": "2026.10.9", "unsloth": "2026.10.9", "transformers": "5.17.0", "trl": "1.15.0"}


class Caches(NamedTuple):
    """The four cache roots of one test, and the working directory (unsloth's default is relative to it)."""

    cwd: Path
    unsloth: Path
    triton: Path
    inductor: Path
    doctor: Path

    def env(self) -> Dict[str, str]:
        """Variables pointing every cache here (unsloth by default location, relative to cwd)."""
        return {"TRITON_CACHE_DIR": str(self.triton), "TORCHINDUCTOR_CACHE_DIR": str(self.inductor),
                "DOCTOR_CACHE_DIR": str(self.doctor)}


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Caches:
    """Cache roots under tmp_path, made this process's roots (env + cwd), so repair may touch them."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    c = Caches(cwd, cwd / "unsloth_compiled_cache", tmp_path / "triton", tmp_path / "inductor", tmp_path / "doctor")
    for k, v in c.env().items():
        monkeypatch.setenv(k, v)
    for k in ("UNSLOTH_COMPILE_LOCATION", "TRITON_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(cwd)
    return c


def make_facts(cwd: Path, env: Optional[Dict[str, str]] = None, dists: Optional[Dict[str, str]] = None,
               gpus: Sequence[GPU] = ()) -> Facts:
    """Facts with what the cache code reads: versions, GPUs, relevant env (this process's, plus `env`), cwd."""
    from doctor.inventory.environment import relevant_env

    dists = INSTALLED if dists is None else dists
    env = {**relevant_env(os.environ), **(env or {})}
    return Facts(
        python=PythonInfo("3.11.7", "CPython", sys.executable, sys.prefix, sys.base_prefix),
        platform=PlatformInfo("Linux", "x86_64", "6.0"),
        distributions={n: Distribution(n, v) for n, v in dists.items()},
        hardware=Hardware(gpus=tuple(gpus), source="override"),
        env=env,
        cwd=str(cwd),
    )


def header(**over: str) -> str:
    """unsloth's version docstring, current versions unless overridden (zoo=, unsloth=, transformers=, trl=)."""
    v = {"zoo": INSTALLED["unsloth-zoo"], "unsloth": INSTALLED["unsloth"], "transformers": INSTALLED["transformers"],
         "trl": INSTALLED["trl"]}
    v.update(over)
    return HEADER.format(**v)


def module(name: str, body: str = "", **over: str) -> str:
    """A compiled-module text that imports with the stdlib only and defines the class named like the file."""
    return header(**over) + f"import os\n{body}\nclass {name}:\n    pass\n"


def triton_kernel(root: Path, key: str, name: str = "kernel", arch: int = 90, triton_version: Optional[str] = None,
                  missing: Sequence[str] = (), group_text: Optional[str] = None) -> Path:
    """A Triton cache entry <root>/<key>/ laid out as FileCacheManager writes it."""
    kd = root / key
    kd.mkdir(parents=True)
    meta: Dict[str, object] = {"hash": key, "target": {"backend": "cuda", "arch": arch, "warp_size": 32},
                               "name": name, "num_warps": 4}
    if triton_version:
        meta["triton_version"] = triton_version
    files = {f"{name}.json": json.dumps(meta), f"{name}.ttir": "module {}", f"{name}.ptx": "// ptx", f"{name}.cubin": "\x7fELF"}
    children = {}
    for fn, text in files.items():
        if fn not in missing:
            (kd / fn).write_text(text)
        children[fn] = str(kd / fn)
    (kd / f"__grp__{name}.json").write_text(group_text if group_text is not None else json.dumps({"child_paths": children}))
    return kd


def old(path: Path, seconds: float = 7200) -> None:
    """Backdate a file's mtime."""
    t = time.time() - seconds
    os.utime(path, (t, t))


class LockHolder:
    """A real child process holding a filelock on `path` until stopped."""

    def __init__(self, path: Path) -> None:
        code = ("import sys, time\nfrom filelock import FileLock\n"
                f"l = FileLock({str(path)!r})\nl.acquire()\nprint('held', flush=True)\nsys.stdin.readline()\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "held", line

    def stop(self) -> None:
        """Release (the child exits)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def lock_holder() -> Iterator:
    """Start LockHolders; all are stopped at teardown."""
    holders = []

    def start(path: Path) -> LockHolder:
        h = LockHolder(path)
        holders.append(h)
        return h

    yield start
    for h in holders:
        if h.proc.poll() is None:
            h.stop()


def ids(findings) -> list:  # type: ignore[no-untyped-def]
    """Finding ids."""
    return [f.id for f in findings]


def by_id(findings, fid: str):  # type: ignore[no-untyped-def]
    """The findings with one id."""
    return [f for f in findings if f.id == fid]


def tree(root: Path) -> Dict[str, bytes]:
    """Every file under root with its content (for 'nothing changed' assertions)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out
