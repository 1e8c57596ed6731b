"""Resolution: keep-set constraints, candidates from pip's own resolver, verified plans, pins, the pip/uv hook.

Facts + Findings + the matrix come in; typed Plans go out. Nothing here applies a plan (doctor.fix does)
or renders one (doctor.report does).
"""
