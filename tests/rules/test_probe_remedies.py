"""Fixes offered for failed probe verdicts: the same typed remedies the stack rules offer, and steps a user can take today."""

from __future__ import annotations

from typing import List

from doctor.actions import Manual, PipInstall, PipUninstall
from doctor.compat_matrix.loader import load_matrix
from doctor.probes.findings import probe_findings
from doctor.verdicts import ProbeResult
from tests.conftest import Env

H100 = "NVIDIA H100 80GB HBM3@9.0@81559"


def _fix(env: Env, results: List[ProbeResult], probe_id: str, matrix=load_matrix()):  # type: ignore[no-untyped-def]
    """The fix of the finding for one failed probe."""
    facts = env.facts(gpus=H100, driver="580.159.04")
    [f] = [f for f in probe_findings(results, facts, matrix) if f.id == f"probe.{probe_id}"]
    return f.fix


def test_xformers_probe_failure_offers_the_build_for_this_torch(env: Env) -> None:
    """The same exact, --no-deps install the xformers rule offers (built for torch 2.8.0 / cu126), then dropping xformers."""
    env.torch("2.8.0+cu126", "12.6").wheel("xformers", "0.0.32.post2", ["torch==2.8.0"])
    fix = _fix(env, [ProbeResult("xformers.attention", "xformers", "crash"), ProbeResult("sdpa.math", "sdpa-math", "pass")],
               "xformers.attention")
    assert [type(a) for a in fix] == [PipInstall, PipUninstall]
    assert fix[0].command() == ("pip install xformers==0.0.32.post2 --index-url https://download.pytorch.org/whl/cu126 "
                                "--force-reinstall --no-deps")
    assert fix[1].names == ("xformers",) and "sdpa-math" in fix[1].description


def test_sdpa_probe_failure_names_what_a_user_can_do_today(env: Env) -> None:
    """Pin a backend that passed with torch's own API; never a command the doctor does not have (`doctor run`)."""
    env.torch("2.8.0+cu128", "12.8")
    fix = _fix(env, [ProbeResult("sdpa.flash", "sdpa-flash", "wrong-result"), ProbeResult("sdpa.efficient", "sdpa-efficient", "pass")],
               "sdpa.flash")
    assert [type(a) for a in fix] == [Manual]
    text = fix[0].description
    assert "doctor run" not in text
    assert "torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION)" in text
    none_passed = _fix(env, [ProbeResult("sdpa.flash", "sdpa-flash", "crash")], "sdpa.flash")
    assert "attn_implementation='eager'" in none_passed[0].description and "doctor run" not in none_passed[0].description


def test_flash_attn_probe_failure_rebuild_is_a_manual_step(env: Env) -> None:
    """Removing flash-attn runs; a source rebuild (nvcc, an hour) is shown for a person, with its command."""
    env.torch("2.8.0+cu128", "12.8").wheel("flash-attn", "2.8.3")
    fix = _fix(env, [ProbeResult("flash_attn.attention", "flash-attn", "error")], "flash_attn.attention")
    assert [type(a) for a in fix] == [PipUninstall, Manual]
    assert "pip install flash-attn --no-build-isolation" in fix[1].description and fix[1].command() is None


def test_bnb_probe_failure_reinstalls_exactly_even_without_a_matrix(env: Env) -> None:
    """An exact --force-reinstall --no-deps of the installed bitsandbytes, also when no matrix was loaded."""
    env.torch("2.8.0+cu128", "12.8").wheel("bitsandbytes", "0.47.0")
    fix = _fix(env, [ProbeResult("bnb.nf4", "bitsandbytes", "error")], "bnb.nf4", matrix=None)
    assert fix[0].command() == "pip install bitsandbytes==0.47.0 --force-reinstall --no-deps"
