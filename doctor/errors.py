"""The one exception type that means "the doctor itself could not run" (exit code 3)."""

from __future__ import annotations


class DoctorError(Exception):
    """Bad input or bad data: shown as one line, exit code 3, no traceback unless --debug."""
