"""Files this user may not read (EACCES), made real even when the tests run as root.

Not root: chmod 000 is enough. Root reads through any mode (CAP_DAC_OVERRIDE), so there the file is also
given to an owner that no user namespace maps, and the check runs in a child under
`unshare --user --map-root-user`: inside, root keeps its capabilities for files of mapped owners (Python,
the repo) but not for that file, and the kernel answers EACCES as it would to a normal user. Where user
namespaces are not allowed, the test is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests.conftest import REPO

UNMAPPED_UID = 54321  # an owner no namespace here maps: root inside `unshare --map-root-user` has no override for it


def is_root() -> bool:
    """True when permission bits do not stop this process."""
    return not hasattr(os, "geteuid") or os.geteuid() == 0


def make_unreadable(path: Path) -> None:
    """chmod 000 (and, as root, an unmapped owner) so that opening or looking inside `path` is EACCES."""
    if is_root():
        os.chown(path, UNMAPPED_UID, UNMAPPED_UID)
    path.chmod(0)


def restore(path: Path) -> None:
    """Make `path` removable again (tmp_path cleanup)."""
    path.chmod(0o755 if path.is_dir() else 0o644)


# Runs every rule over one site folder, the way tests.conftest.Env.check does, and prints what the tests read.
_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.conftest import Env
e = Env(Path(sys.argv[2]))
report = e.check(gpus=sys.argv[3], driver=sys.argv[4] or None)
t = report.facts.torch
print(json.dumps({"findings": [f.to_dict() for f in report.findings],
                  "torch_build": None if t is None else {"version": t.version, "path": t.path, "error": t.error}}))
"""


def check_in_child(root: Path, gpus: str = "none", driver: Optional[str] = None) -> Dict[str, Any]:
    """Findings (as JSON dicts) and the torch build of `root/site`, checked in a child where EACCES is real."""
    prefix: List[str] = []
    if is_root():
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("running as root and `unshare` is not installed: cannot make a file unreadable to root")
        prefix = [unshare, "--user", "--map-root-user"]
    proc = subprocess.run([*prefix, sys.executable, "-c", _CHILD, str(REPO), str(root), gpus, driver or ""],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 and prefix and "unshare" in proc.stderr:
        pytest.skip(f"running as root and user namespaces are refused here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)
