"""Mechanisms shared by the parts of the doctor: timeouts, child processes, bounded file reads."""
