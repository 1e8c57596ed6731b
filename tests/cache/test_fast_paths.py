"""The cheap answers on `doctor check`'s path equal what the libraries they stand in for answer.

Each case runs in a fresh interpreter: the fast paths only apply where tempfile / platformdirs are not loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

_PROBE = """
import json, sys
from doctor.cache import roots, own
fast_tmp = roots.gettempdir()
fast_root = str(own.default_root())
loaded = {m: m in sys.modules for m in ("tempfile", "platformdirs")}
import tempfile, platformdirs
print(json.dumps({"fast_tmp": fast_tmp, "tmp": tempfile.gettempdir(), "fast_root": fast_root,
                  "root": platformdirs.user_cache_dir("tune-doctor", appauthor=False), "loaded": loaded}))
"""


def _probe(env: Dict[str, Optional[str]], cwd: Path) -> Dict[str, object]:
    """Run the probe with these variables set (None: removed)."""
    full = dict(os.environ)
    full.pop("DOCTOR_CACHE_DIR", None)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, cwd=str(cwd), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(os.name != "posix", reason="the fast paths are POSIX/Linux only")
@pytest.mark.parametrize("case", ["plain", "tmpdir", "relative-tmpdir", "unwritable-tmpdir", "missing-tmpdir",
                                  "xdg", "relative-xdg", "empty-xdg", "no-home", "relative-home"])
def test_fast_answers_match_the_libraries(case: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    (tmp_path / "rel").mkdir()
    env: Dict[str, Optional[str]] = {"HOME": str(home), "XDG_CACHE_HOME": None, "TMPDIR": None, "TEMP": None,
                                     "TMP": None}
    env.update({
        "plain": {},
        "tmpdir": {"TMPDIR": str(tmp_path)},
        "relative-tmpdir": {"TMPDIR": "rel"},
        "unwritable-tmpdir": {"TMPDIR": str(ro)},
        "missing-tmpdir": {"TMPDIR": str(tmp_path / "nope")},
        "xdg": {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
        "relative-xdg": {"XDG_CACHE_HOME": "xdg"},
        "empty-xdg": {"XDG_CACHE_HOME": ""},
        "no-home": {"HOME": None},
        "relative-home": {"HOME": "home"},
    }[case])
    try:
        got = _probe(env, tmp_path)
    finally:
        ro.chmod(0o700)
    assert got["fast_tmp"] == got["tmp"]
    assert got["fast_root"] == got["root"]
    if case == "plain" and sys.platform.startswith("linux"):
        # the point of the fast paths: neither library is imported to answer
        assert got["loaded"] == {"tempfile": False, "platformdirs": False}
        assert got["fast_root"] == str(home / ".cache" / "tune-doctor")
