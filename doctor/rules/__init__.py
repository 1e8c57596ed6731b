"""Rules: small functions over Facts (and the matrix) returning Findings.

Each rule is independent; the runner (doctor.check) isolates them so one that breaks on odd input
reports itself instead of taking the check down.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Sequence, Tuple

from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity, finding

Rule = Callable[[Facts, Matrix], List[Finding]]


def all_rules(scripts: Sequence[str] = ()) -> Tuple[Tuple[str, Rule], ...]:
    """(name, rule) for every matrix rule, in report order; `scripts` (--script paths) reach the rules that read them."""
    from doctor.rules.bitsandbytes import check_bitsandbytes
    from doctor.rules.driver import check_driver, check_gpus
    from doctor.rules.environment import check_active_environment
    from doctor.rules.flash_attn import check_flash_attn
    from doctor.rules.gpu_arch import check_gpu_arch
    from doctor.rules.known_issues import check_known_issues
    from doctor.rules.requirements import check_requirements
    from doctor.rules.torch_build import check_torch_build
    from doctor.rules.triton import check_triton
    from doctor.rules.xformers import check_xformers

    return (
        ("environment", check_active_environment),
        ("gpus", check_gpus),
        ("driver", check_driver),
        ("gpu_arch", check_gpu_arch),
        ("torch_build", check_torch_build),
        ("xformers", check_xformers),
        ("triton", check_triton),
        ("bitsandbytes", check_bitsandbytes),
        ("flash_attn", check_flash_attn),
        ("known_issues", check_known_issues),
        ("requirements", check_requirements),
        ("cache_location", lambda facts, matrix: _unsloth_cache_location(facts, matrix, scripts)),
        ("caches", _caches),
    )


def run_rules(facts: Facts, matrix: Matrix, debug: bool = False, scripts: Sequence[str] = (),
              skip: Iterable[str] = ()) -> Tuple[List[Finding], List[str]]:
    """Run every rule (but `skip`); one that raises becomes a WARN finding about the doctor, unless debugging."""
    skipped = set(skip)
    findings: List[Finding] = []
    names: List[str] = []
    for name, rule in all_rules(scripts):
        if name in skipped:
            continue
        names.append(name)
        try:
            findings.extend(rule(facts, matrix))
        except Exception as exc:  # a bug or an input we did not foresee must not end the check
            if debug:
                raise
            findings.append(finding(
                "doctor.rule-failed", Severity.WARN, Category.DOCTOR, f"rule '{name}' could not run: {type(exc).__name__}: {exc}",
                {"rule": name, "error": f"{type(exc).__name__}: {exc}"},
                "This is a tune-doctor bug; rerun with --debug for the traceback and report it.", subject=name))
    return findings, names


def _caches(facts: Facts, matrix: Matrix) -> List[Finding]:
    """Cheap compiled-cache findings (doctor.cache; deep import checks are `doctor cache verify`)."""
    from doctor.cache.diagnose import check_caches

    return check_caches(facts)


def _unsloth_cache_location(facts: Facts, matrix: Matrix, scripts: Sequence[str] = ()) -> List[Finding]:
    """unsloth's compiled-cache location (graded by unsloth_zoo's fallback in the matrix; `scripts`: --script paths)."""
    if facts.dist("unsloth") is None and facts.dist("unsloth-zoo") is None:
        return []
    from doctor.cache.location import check_unsloth_cache_location  # lazy: only when unsloth is there

    return check_unsloth_cache_location(facts, matrix, scripts)
