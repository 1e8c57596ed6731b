"""The typed public face: a lazy package root, doctor.check() / doctor.check_imports() returning a Report
that renders as text, HTML and the CLI's JSON, and py.typed in the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

import doctor
from doctor.actions import PipInstall
from doctor.findings import Category, Severity, finding
from tests.conftest import REPO, Env, run_doctor

# Heavy parts a training process must not pay for when it imports a light corner of the package.
HEAVY = ("rich", "doctor.rules", "doctor.inventory", "doctor.compat_matrix", "doctor.report", "doctor.checkup", "packaging")


def child(code: str, env: Dict[str, str] = {}) -> str:  # noqa: B006 (read only)
    """stdout of `python -c code` in a fresh interpreter (the repository first on sys.path)."""
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                         cwd=str(REPO), env=e)
    assert res.returncode == 0, res.stderr
    return res.stdout


# ----------------------------------------------------------------------------- the lazy root


def test_import_doctor_loads_only_its_version() -> None:
    """`import doctor` imports the version and nothing else of the package, and nothing heavy."""
    out = child("""
        import sys, doctor
        print(sorted(m for m in sys.modules if m == "doctor" or m.startswith(("doctor.", "rich", "packaging"))))
    """)
    assert out.strip() == "['doctor', 'doctor._version']"


@pytest.mark.parametrize("module", ["doctor.backends.attention", "doctor.kernels", "doctor.runtime"])
def test_training_process_imports_stay_light(module: str) -> None:
    """What a training process imports (attention backends, kernels, the runtime) loads no rich, rules or inventory."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    out = child(f"""
        import sys, doctor, {module}
        print([m for m in sys.modules if m.startswith({HEAVY!r})])
    """)
    assert out.strip() == "[]"


def test_dir_lists_the_public_names_and_unknown_names_fail() -> None:
    """dir(doctor) shows the public face before anything is loaded; a typo is an AttributeError / ImportError."""
    out = child("""
        import doctor
        print(sorted(n for n in dir(doctor) if not n.startswith("_")))
        try:
            doctor.chek
        except AttributeError as e:
            print("AttributeError:", e)
        try:
            from doctor import chek
        except ImportError as e:
            print("ImportError")
    """).splitlines()
    assert out[0] == str(sorted(["Category", "DoctorError", "Finding", "PinResult", "Report", "Severity", "check", "check_imports",
                                 "pin"]))
    assert out[1] == "AttributeError: module 'doctor' has no attribute 'chek'"
    assert out[2] == "ImportError"
    assert set(doctor.__all__) >= {"__version__", "check", "check_imports", "Report", "Finding"}


def test_check_stays_the_function_after_the_module_is_imported() -> None:
    """doctor.check is the function on every access, whatever imported the orchestration module first."""
    out = child("""
        import doctor.checkup, doctor
        from doctor.checkup import run_check
        print(doctor.check is doctor.checkup.check, callable(doctor.check), doctor.Report is doctor.checkup.Report)
    """)
    assert out.split() == ["True", "True", "True"]


def test_version_comes_from_version_module() -> None:
    """__version__ is _version's (no import of the package's parts needed to read it)."""
    from doctor._version import __version__

    assert doctor.__version__ == __version__


# ----------------------------------------------------------------------------- the Report's faces


BAD_ORDER = dict.fromkeys(["os", "transformers", "unsloth.fsdp2_launch", "unsloth"])


def test_check_imports_returns_a_report_of_the_imports_section() -> None:
    """A Report (not a list of findings): exit code, findings, only the Imports section checked."""
    r = doctor.check_imports(BAD_ORDER)
    assert isinstance(r, doctor.Report)
    assert [f.id for f in r.findings] == ["imports.patch-order"] and r.exit_code == 2
    assert r.sections == (Category.IMPORTS,) and r.rules_run == ("process-imports",)
    assert r.facts.python.executable == sys.executable  # the header names the environment it ran in


def test_check_imports_of_this_process_by_default() -> None:
    """No argument: this process's sys.modules (no unsloth here)."""
    r = doctor.check_imports()
    assert [f.id for f in r.findings] == ["imports.order"] and r.exit_code == 0


def test_text_face_is_plain_unwrapped_and_has_no_trailing_spaces(env: Env) -> None:
    """str(report): the text report, no colour codes, a long fix command on ONE line, no trailing spaces."""
    long_fix = PipInstall(tuple(f"package-number-{i}==1.0.{i}" for i in range(20)), no_deps=True)
    fd = finding("demo.long-fix", Severity.ERROR, Category.PACKAGES, "a finding with a long fix", {"k": "v"}, "why", [long_fix])
    r = doctor.Report(env.facts(), "2026.1", (fd,), ("demo",))
    text = str(r)
    assert "\x1b[" not in text
    assert any(long_fix.command() in line for line in text.splitlines())  # never broken over two lines
    assert all(line == line.rstrip() for line in text.splitlines())
    assert "demo.long-fix" in text and "(exit 2: errors)" in text
    assert repr(r).startswith("<doctor.Report: exit 2 (errors), 1 findings")


def test_html_face_for_jupyter(env: Env) -> None:
    """_repr_html_ / _repr_mimebundle_: coloured HTML of the same report, plus the plain text."""
    r = doctor.Report(env.facts(), "2026.1", doctor.check_imports(BAD_ORDER).findings, ("process-imports",))
    html = r._repr_html_()
    assert html.startswith("<pre") and "imports.patch-order" in html and "<span style=" in html
    bundle = r._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"] == str(r) and "imports.patch-order" in bundle["text/html"]


def test_to_json_is_the_cli_document(tmp_path: Path) -> None:
    """report.to_json() of doctor.check() is what `doctor check --json --no-probes` prints, same environment."""
    env = {"DOCTOR_GPUS": "none", "DOCTOR_CACHE_DIR": str(tmp_path / "cache"), "NO_COLOR": "1"}
    cli = run_doctor("check", "--json", "--no-probes", env=env)
    assert cli.returncode in (0, 1, 2), cli.stderr
    lib = child("import doctor; print(doctor.check(process_imports=False).to_json())", env=env)
    a, b = json.loads(cli.stdout), json.loads(lib)
    assert a["schema_version"] == b["schema_version"] and b["exit_code"] == cli.returncode
    assert a == b


def test_check_takes_the_cli_options(tmp_path: Path) -> None:
    """scripts= (one path or several), probes off by default, this process's imports checked."""
    script = tmp_path / "train.py"
    script.write_text("import transformers\nimport unsloth\n")
    out = child(f"""
        import doctor
        r = doctor.check(scripts={str(script)!r})
        print(r.probe_note)
        print(sorted({{f.id for f in r.findings if f.id.startswith("imports.")}}))
        print(r.rules_run[-2:])
    """, env={"DOCTOR_GPUS": "none", "DOCTOR_CACHE_DIR": str(tmp_path / "cache")}).splitlines()
    assert out[0].startswith("probes off")
    assert out[1] == "['imports.order', 'imports.script-order']"
    assert out[2] == str((f"script:{script}", "process-imports"))


@pytest.mark.parametrize("kwargs", [{"gpu_timeout": -1}, {"gpu_timeout": float("nan")}, {"probe_timeout": 0},
                                    {"gpu_timeout": "3"}])
def test_check_refuses_bad_timeouts(kwargs: Dict[str, object]) -> None:
    """A negative, zero, NaN or non-number timeout: ValueError naming the argument, before any work."""
    with pytest.raises(ValueError, match=r"^(gpu|probe)_timeout must be a positive number of seconds"):
        doctor.check(**kwargs)  # type: ignore[arg-type]


def test_check_with_a_missing_script_is_a_doctor_error(tmp_path: Path) -> None:
    """An unreadable script: DoctorError with one line (what the CLI turns into exit 3)."""
    with pytest.raises(doctor.DoctorError, match=r"^cannot read script .*nope\.py"):
        doctor.check(scripts=[tmp_path / "nope.py"], process_imports=False)


# ----------------------------------------------------------------------------- typed package


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_ships_py_typed(tmp_path: Path) -> None:
    """py.typed is package data: type checkers of projects that install the doctor read its hints."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "doctor", src / "doctor", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    import zipfile

    [wheel] = list((tmp_path / "dist").glob("*.whl"))
    names: List[str] = zipfile.ZipFile(wheel).namelist()
    assert "doctor/py.typed" in names
