"""mypy over doctor/ with the settings in pyproject.toml ([tool.mypy]): zero errors, in CI like every test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.typecheck
@pytest.mark.timeout(300)
def test_mypy_reports_no_error(tmp_path: Path) -> None:
    """`python -m mypy` from the repository root (files, target Python and strictness come from pyproject)."""
    res = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
                         cwd=REPO, capture_output=True, text=True, timeout=280)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    # The package itself was checked, not an empty file list.
    checked = re.search(r"no issues found in (\d+) source files", out)
    assert checked and int(checked.group(1)) >= 50, out[-2000:]


def test_the_settings_check_the_package() -> None:
    """The [tool.mypy] table: the package, typed defs, no blanket ignore_errors, and no python_version pin (a 3.9
    target cannot parse the newest packaging/filelock, which use `match`: a fresh CI install gets them)."""
    text = (REPO / "pyproject.toml").read_text()
    table = text.split("[tool.mypy]", 1)[1].split("\n[tool.pytest", 1)[0]
    assert "python_version" not in table.replace("No python_version", "") and 'files = ["doctor"]' in table
    assert "disallow_untyped_defs = true" in table
    assert "ignore_errors" not in table
    assert (REPO / "doctor" / "py.typed").is_file()
