"""The CLI builds only the invoked subcommand's parser, and freezes the heap only when run as a program."""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from typing import List

import pytest

from doctor import cli
from doctor.commands import COMMANDS


def _choices(p: argparse.ArgumentParser) -> List[str]:
    """The subcommands a parser was built with."""
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


@pytest.mark.parametrize("argv, built", [
    (["check", "--json"], ["check"]),
    (["--debug", "check"], ["check"]),
    (["cache", "status"], ["cache"]),
    ([], list(COMMANDS)),
    (["--help"], list(COMMANDS)),
    (["-h", "check"], list(COMMANDS)),
    (["frob"], list(COMMANDS)),
    (["--", "check"], list(COMMANDS)),
])
def test_only_the_invoked_parser_is_built(argv: List[str], built: List[str]) -> None:
    assert _choices(cli.build_parser(argv)) == built


def test_no_argv_builds_every_parser() -> None:
    assert _choices(cli.build_parser()) == list(COMMANDS)


def test_unknown_command_still_lists_every_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["frob"])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert all(f"'{name}'" in err for name in COMMANDS)


def test_main_with_argv_leaves_the_collector_alone(capsys: pytest.CaptureFixture[str]) -> None:
    before, threshold = gc.get_freeze_count(), gc.get_threshold()
    assert cli.main(["check", "--json", "--no-probes"]) in (0, 1, 2)
    assert gc.get_freeze_count() == before and gc.get_threshold() == threshold


def test_program_run_tunes_the_collector() -> None:
    code = ("import gc, sys\nsys.argv = ['doctor', '--version']\nfrom doctor.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(gc.get_threshold()[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "50000"


def test_program_run_exits_with_the_report() -> None:
    out = subprocess.run([sys.executable, "-m", "doctor", "check", "--json", "--no-probes"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1, 2), out.stderr
    assert '"schema_version"' in out.stdout
