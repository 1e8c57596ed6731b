"""Probes: prove on the real GPU what the metadata claims, each in its own child process.

catalogue (what exists) · spec (the declaration) · session (run or reuse a selection for one
environment) · runner (groups of children with timeouts) · child (the process side) · fingerprint ·
store (cached verdicts) · findings (verdicts -> Findings) · bodies/ (the code that runs on the GPU).
Nothing is imported here: a probe child must not pay for the orchestrator.
"""
