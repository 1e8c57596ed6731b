"""The one exception type that means "the doctor could not run on this input" (ExitCode.BAD_INPUT, 3).

Any other exception escaping a command is a bug in the doctor: the CLI reports it as ExitCode.INTERNAL (4),
so CI can tell a typo or a bad data file from a broken doctor (doctor.exits names every code).
"""

from __future__ import annotations


class DoctorError(Exception):
    """Bad input or bad data: shown as one line, exit code 3, no traceback unless --debug."""
