"""Matrix rules over real installed packages (pip --no-deps into a folder) and simulated hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctor.actions import Manual, PipInstall
from doctor.findings import Severity
from tests.conftest import Env, ids, one

H100 = "NVIDIA H100 80GB HBM3@9.0@81559"
T4 = "Tesla T4@7.5@15360"
V100 = "Tesla V100-SXM2-16GB@7.0@16384"
RTX5090 = "NVIDIA GeForce RTX 5090@12.0@32607"


def ev(f) -> dict:  # type: ignore[no-untyped-def]
    """Evidence as a dict."""
    return dict(f.evidence)


def commands(f) -> list:  # type: ignore[no-untyped-def]
    """Pasteable commands of a finding's fix."""
    return [a.command() or a.description for a in f.fix]


# --- xformers -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_xformers_035_metadata_ok_but_binary_built_for_other_torch(env: Env, real_wheels, torch_cpu_site: Path) -> None:
    """The observed H100 case: pip is satisfied (torch>=2.10) yet the extension is built for 2.10.0+cu128."""
    env.install([real_wheels["xformers==0.0.35"]])
    report = env.check(gpus=H100, driver="580.159.04", paths=[torch_cpu_site])
    meta = one(report, "xformers.torch-metadata")
    assert meta.severity is Severity.OK and ev(meta)["xformers requires torch"] == ">=2.10"
    b = one(report, "xformers.binary-mismatch")
    assert b.severity is Severity.ERROR
    e = ev(b)
    assert e["built for torch"] == "2.10.0+cu128" and e["built with CUDA"] == "12.8" and e["installed torch"] == "2.13.0+cpu"
    assert "built for torch 2.10.0, torch 2.13.0 is installed" in b.title
    # no xformers is built for torch 2.13: the only fix is to drop it, never to reinstall 0.0.35
    assert commands(b) == ["pip uninstall -y xformers"]
    assert one(report, "torch.cpu-build-on-gpu").severity is Severity.ERROR
    assert report.exit_code == 2


def test_xformers_metadata_pin_mismatch_suggests_matching_pair(env: Env) -> None:
    """xformers 0.0.27 pins torch==2.3.1; with torch 2.4.0 the fix is the known-good 2.4 pair, --no-deps."""
    env.torch("2.4.0+cu121", "12.1").wheel("xformers", "0.0.27", ["torch==2.3.1", "numpy"])
    report = env.check(gpus=H100, driver="580.159.04")
    f = one(report, "xformers.torch-mismatch")
    assert f.severity is Severity.ERROR
    assert ev(f)["xformers requires torch"] == "==2.3.1" and ev(f)["from"] == "xformers METADATA Requires-Dist"
    cmds = commands(f)
    assert cmds[0] == "pip install xformers==0.0.27.post2 --no-deps"
    assert cmds[-1] == "pip uninstall -y xformers"


def test_xformers_without_requires_falls_back_to_matrix(env: Env) -> None:
    """A conda-style install with no Requires-Dist: the matrix supplies the pin. The fix is 0.0.29.post1 from the
    cu124 PyTorch index: the default index's 0.0.29.post1 is built with CUDA 12.1 (its cpp_lib.json), torch is cu124."""
    env.torch("2.5.1+cu124", "12.4").wheel("xformers", "0.0.28.post1")
    f = one(env.check(gpus=H100, driver="580.159.04"), "xformers.torch-mismatch")
    assert ev(f)["xformers requires torch"] == "==2.4.1" and ev(f)["from"].startswith("compat matrix")
    assert commands(f)[0] == "pip install xformers==0.0.29.post1 --index-url https://download.pytorch.org/whl/cu124 --no-deps"


def test_xformers_dtype_layout_known_issue(env: Env) -> None:
    """torch 2.3.1 + xformers 0.0.27: metadata fine, but the aten.to.dtype_layout bug is known."""
    env.torch("2.3.1+cu121", "12.1").wheel("xformers", "0.0.27", ["torch==2.3.1"])
    report = env.check(gpus=H100, driver="580.159.04")
    assert one(report, "xformers.torch-metadata").severity is Severity.OK
    f = one(report, "xformers.dtype-layout")
    assert f.severity is Severity.ERROR
    assert any("0.0.26.post1" in c or "0.0.27.post2" in c for c in commands(f))


def test_xformers_cpp_lib_cuda_major_and_arch(env: Env) -> None:
    """Build info with the right torch but another CUDA major is an error; a GPU outside its arch list is flagged."""
    cpp = ('{"version": {"cuda": 1208, "hip": null, "torch": "2.11.0+cu128", "python": "3.12.3"},'
           ' "env": {"TORCH_CUDA_ARCH_LIST": "8.0 9.0a"}}')
    env.torch("2.11.0+cu130", "13.0").wheel("xformers", "0.0.36", ["torch>=2.11"], {"xformers/cpp_lib.json": cpp})
    report = env.check(gpus=f"{H100},{T4}", driver="580.159.04")
    b = one(report, "xformers.binary-mismatch")
    assert b.severity is Severity.ERROR and "another major version" in b.title
    arch = one(report, "xformers.arch")
    assert arch.subject == "1" and arch.severity is Severity.ERROR


# --- driver and CUDA ---------------------------------------------------------------------------------

def test_driver_fully_supports(env: Env) -> None:
    """The H100 image: torch 2.11.0+cu130 on driver 580.159.04."""
    f = one(env.torch("2.11.0+cu130", "13.0").check(gpus=H100, driver="580.159.04"), "driver.cuda-support")
    assert f.severity is Severity.OK


def test_driver_too_old_offers_older_cuda_build(env: Env) -> None:
    """Driver 560.35 is below CUDA 13.0's floor (580); torch 2.11 also comes as cu126, which it runs."""
    f = one(env.torch("2.11.0+cu130", "13.0").check(gpus=H100, driver="560.35.03"), "driver.too-old")
    assert f.severity is Severity.ERROR
    cmd = commands(f)[0]
    assert cmd.startswith("pip install torch==2.11.0+cu126 --index-url ") and cmd.endswith("/cu126")
    assert any("upgrade the NVIDIA driver to >= 580.65.06" in c for c in commands(f))


def test_driver_minor_version_compat_only_warns(env: Env) -> None:
    """CUDA 12.8 on driver 550: runs by minor-version compatibility, PTX JIT excluded."""
    f = one(env.torch("2.8.0+cu128", "12.8").check(gpus=H100, driver="550.54.14"), "driver.minor-compat")
    assert f.severity is Severity.WARN
    assert ev(f)["needs (full support)"] == "570.26"


def test_cpu_torch_on_gpu_machine(env: Env, torch_cpu_site: Path) -> None:
    """A real CPU wheel of torch with a GPU present."""
    f = one(env.check(gpus=T4, driver="580.159.04", paths=[torch_cpu_site]), "torch.cpu-build-on-gpu")
    assert f.severity is Severity.ERROR
    assert commands(f)[0].startswith("pip install torch==2.13.0+cu130 --index-url ") and commands(f)[0].endswith("/cu130")


def test_cuda_torch_without_gpu_warns(env: Env) -> None:
    """CUDA build, no GPU and no driver (Colab CPU runtime)."""
    f = one(env.torch("2.11.0+cu130", "13.0").check(gpus="none"), "gpu.none")
    assert f.severity is Severity.WARN


# --- GPU arch -------------------------------------------------------------------------------------------

def test_arch_t4_supported_but_no_bf16(env: Env) -> None:
    """cc 7.5 on torch 2.11 cu128: compiled in; bf16 is not available: info (a fact of the GPU) saying to use fp16."""
    report = env.torch("2.11.0+cu128", "12.8").check(gpus=T4, driver="580.159.04")
    assert one(report, "gpu.arch").severity is Severity.OK
    f = one(report, "gpu.no-bf16")
    assert f.severity is Severity.INFO and "fp16" in f.title
    assert ev(f)["bf16 needs"].startswith("cc >= 8.0") and any("fp16=True" in c for c in commands(f))


def test_arch_v100_dropped_from_211_cu128(env: Env) -> None:
    """sm_70 left the cu128 build in 2.11; cu126 still has it."""
    f = one(env.torch("2.11.0+cu128", "12.8").check(gpus=V100, driver="580.159.04"), "gpu.arch-unsupported")
    assert f.severity is Severity.ERROR
    assert commands(f)[0].endswith("/cu126")


def test_arch_blackwell_on_cu124_unsupported(env: Env) -> None:
    """cc 12.0 on torch 2.6 cu124: no sm_120 cubin and no PTX that covers it."""
    f = one(env.torch("2.6.0+cu124", "12.4").check(gpus=RTX5090, driver="580.159.04"), "gpu.arch-unsupported")
    assert "sm_120" in f.title


def test_arch_blackwell_on_cu130_and_family_rule(env: Env) -> None:
    """cc 12.0 has a cubin in cu130; cc 12.1 (GB10) is served by the sm_120 cubin."""
    report = env.torch("2.11.0+cu130", "13.0").check(gpus=f"{RTX5090},NVIDIA GB10@12.1", driver="580.159.04")
    assert [f.severity for f in report.findings if f.id == "gpu.arch"] == [Severity.OK, Severity.OK]


def test_arch_from_gpu_name_when_cc_unknown(env: Env) -> None:
    """procfs gives only the name: the name table supplies cc 7.5 for a T4."""
    report = env.torch("2.11.0+cu128", "12.8").check(gpus="Tesla T4@?", driver="580.159.04")
    assert one(report, "gpu.no-bf16")


# --- triton, bitsandbytes, flash-attn ---------------------------------------------------------------------

LINUX = "platform_system == 'Linux' and platform_machine == 'x86_64'"


def test_triton_mismatch_against_torch_requires(env: Env) -> None:
    """torch 2.5.1 pins triton==3.1.0; 3.0.0 is installed."""
    env.torch("2.5.1+cu124", "12.4", [f"triton==3.1.0; {LINUX}"]).wheel("triton", "3.0.0")
    f = one(env.check(gpus=H100, driver="580.159.04"), "triton.torch-mismatch")
    assert f.severity is Severity.ERROR and commands(f) == ["pip install triton==3.1.0 --no-deps"]


def test_triton_ok_and_matrix_fallback(env: Env) -> None:
    """No Requires-Dist on triton: the matrix pin for torch 2.3.1 (==2.3.1) is used."""
    env.torch("2.3.1+cu121", "12.1").wheel("triton", "2.3.1")
    f = one(env.check(gpus=H100, driver="580.159.04"), "triton.torch")
    assert f.severity is Severity.OK and ev(f)["from"].startswith("compat matrix")


def test_triton_missing_for_cuda_torch(env: Env) -> None:
    """A CUDA torch whose triton was uninstalled."""
    env.torch("2.9.0+cu128", "12.8", [f"triton==3.5.0; {LINUX}"])
    assert one(env.check(gpus=H100, driver="580.159.04"), "triton.missing").severity is Severity.WARN


def test_bitsandbytes_torch_floor_and_old_gpu(env: Env) -> None:
    """bitsandbytes 0.48.1 wants torch>=2.3; the GPU is a P100 (no LLM.int8)."""
    env.torch("2.2.2+cu121", "12.1").wheel("bitsandbytes", "0.48.1", ["torch<3,>=2.3", "numpy>=1.17"])
    report = env.check(gpus="Tesla P100-PCIE-16GB@6.0", driver="580.159.04")
    assert one(report, "bitsandbytes.torch-mismatch").severity is Severity.ERROR
    assert one(report, "bitsandbytes.no-int8").severity is Severity.INFO


def test_flash_attn_built_for_other_torch_and_turing(env: Env) -> None:
    """A release wheel for torch 2.4 on torch 2.5, and a T4 (cc 7.5) that FA2 does not support."""
    env.torch("2.5.1+cu124", "12.4").wheel("flash-attn", "2.6.3+cu123torch2.4cxx11abiFALSE", ["torch", "einops"])
    report = env.check(gpus=T4, driver="580.159.04")
    m = one(report, "flash-attn.torch-mismatch")
    assert ev(m)["built for torch"] == "2.4" and m.severity is Severity.ERROR
    assert one(report, "flash-attn.arch").severity is Severity.ERROR


# --- requirements and pairs ----------------------------------------------------------------------------

@pytest.mark.slow
def test_unsloth_zoo_skew_real_releases(env: Env, real_wheels) -> None:
    """unsloth 2025.3.14 needs unsloth_zoo>=2025.3.11 (the grpo_compute_loss_slow incident); 2025.3.9 is installed."""
    env.install([real_wheels["unsloth==2025.3.14"], real_wheels["unsloth_zoo==2025.3.9"]])
    f = one(env.check(), "unsloth.zoo-skew")
    assert f.severity is Severity.ERROR
    assert ev(f)["requires"].replace("_", "-").startswith("unsloth-zoo>=2025.3.11")
    assert commands(f) == ["pip install unsloth_zoo==2025.3.11 --no-deps"]


@pytest.mark.slow
def test_unsloth_zoo_in_step(env: Env, real_wheels) -> None:
    """The same unsloth with the zoo release it asks for: no skew."""
    env.install([real_wheels["unsloth==2025.3.14"], real_wheels["unsloth_zoo==2025.3.11"]])
    assert "unsloth.zoo-skew" not in ids(env.check())


def test_generic_unmet_and_missing_requirement(env: Env) -> None:
    """peft needs transformers>=4.40 (4.30 installed) and accelerate (absent); extras-only lines are ignored."""
    env.wheel("transformers", "4.30.0").wheel(
        "peft", "0.13.0", ["transformers>=4.40", "accelerate>=0.21", "pytest; extra == 'test'", "pywin32; sys_platform == 'win32'"])
    report = env.check()
    unmet = [f for f in report.findings if f.id == "requires.unmet"]
    assert len(unmet) == 1 and ev(unmet[0])["installed"] == "transformers 4.30.0"
    missing = [f for f in report.findings if f.id == "requires.missing"]
    assert [ev(f)["missing"] for f in missing] == ["accelerate>=0.21"]
    assert commands(missing[0]) == ["pip install 'accelerate>=0.21' --no-deps"]
    assert isinstance(unmet[0].fix[0], PipInstall)


def test_healthy_h100_stack_is_exit_0(env: Env) -> None:
    """The GPU image's stack, consistent: no warnings at all."""
    env.torch("2.11.0+cu130", "13.0", [f"triton==3.6.0; {LINUX}"]).wheel("triton", "3.6.0")
    env.wheel("transformers", "5.17.0").wheel("peft", "0.21.0", ["transformers>=4.0"])
    report = env.check(gpus=H100, driver="580.159.04")
    assert report.exit_code == 0, [(f.id, f.title) for f in report.findings if f.severity >= Severity.WARN]


def _dist_info(site: Path, name: str, version: str, requires: tuple = ()) -> None:  # type: ignore[type-arg]
    """Write a dist-info by hand: pip refuses to produce these broken installs, users still end up with them."""
    d = site / f"{name.replace('-', '_')}-{version.replace('/', '_')}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                + "".join(f"Requires-Dist: {r}\n" for r in requires) + "\n")


@pytest.mark.parametrize("garbage", ["abc", "2.3.1+cu121.post3", "", "1.0.0-rc1-broken", "9" * 40])
def test_garbage_versions_never_crash_a_rule(env: Env, garbage: str) -> None:
    """Every stack package with a garbage version, an unparseable torch/version.py: rules run (debug re-raises)."""
    for name in ("torch", "xformers", "triton", "bitsandbytes", "flash-attn", "unsloth", "unsloth-zoo", "transformers"):
        _dist_info(env.site, name, garbage or "0", ("torch>=2.0", "unsloth_zoo>=2025.1", f"xformers=={garbage or 'x'}"))
    (env.site / "torch").mkdir()
    (env.site / "torch" / "version.py").write_text("__version__ = (\n")
    (env.site / "xformers").mkdir()
    (env.site / "xformers" / "cpp_lib.json").write_text('{"version": {"torch": 12, "cuda": "x"}}')
    report = env.check(gpus=f"{H100},{T4}", driver="580.159.04")
    assert "doctor.rule-failed" not in ids(report)
    assert one(report, "torch.build-unreadable").severity is Severity.WARN


def test_rule_crash_becomes_a_finding(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that raises is reported as a doctor finding and the other rules still run."""
    from doctor import checkup as check
    from doctor import rules

    real = rules.all_rules()

    def boom(facts, matrix):  # type: ignore[no-untyped-def]
        raise RuntimeError("planted")

    monkeypatch.setattr(rules, "all_rules", lambda scripts=(): (("boom", boom),) + real)
    report = check.run_check(facts=env.facts(gpus=H100, driver="580.159.04"))
    f = one(report, "doctor.rule-failed")
    assert "planted" in f.title and f.severity is Severity.WARN
    assert "gpu.present" in ids(report)


def test_unreadable_cuda_in_version_py_is_not_a_cpu_build(env: Env) -> None:
    """`cuda = get_cuda()` in version.py: the +cu128 label tells; without one the build is unknown, never 'CPU'."""
    vp = "__version__ = '2.8.0+cu128'\ncuda = get_cuda()\n"
    env.wheel("torch", "2.8.0+cu128", files={"torch/__init__.py": "", "torch/version.py": vp})
    report = env.check(gpus=H100, driver="580.159.04")
    assert "torch.cpu-build-on-gpu" not in ids(report)
    assert one(report, "driver.cuda-support").severity is Severity.OK


def test_unknown_cuda_without_label_is_a_warning_not_cpu(tmp_path: Path) -> None:
    """No literal cuda and no local label: the driver check says it cannot tell."""
    e = Env(tmp_path)
    e.wheel("torch", "2.8.0", files={"torch/__init__.py": "", "torch/version.py": "__version__ = '2.8.0'\ncuda = get_cuda()\n"})
    report = e.check(gpus=H100, driver="580.159.04")
    assert "torch.cpu-build-on-gpu" not in ids(report)
    assert one(report, "torch.cuda-unknown").severity is Severity.WARN


def test_xformers_for_non_default_cuda_comes_from_that_variant_index(env: Env) -> None:
    """torch 2.8.0+cu126 with the index's cu128 xformers 0.0.32.post2: same version, cu126 build, forced."""
    cpp = '{"version": {"cuda": 1208, "hip": null, "torch": "2.8.0+cu128", "python": "3.11.9"}, "env": {}}'
    env.torch("2.8.0+cu126", "12.6").wheel("xformers", "0.0.32.post2", ["torch==2.8.0"], {"xformers/cpp_lib.json": cpp})
    f = one(env.check(gpus=H100, driver="580.159.04"), "xformers.binary-mismatch")
    assert f.severity is Severity.WARN  # same CUDA major: may load, may not
    assert commands(f)[0] == ("pip install xformers==0.0.32.post2 --index-url https://download.pytorch.org/whl/cu126 "
                              "--force-reinstall --no-deps")


def test_bitsandbytes_fix_is_an_exact_range_for_this_torch(env: Env) -> None:
    """bitsandbytes 0.49.0 capped at torch<2.5 with torch 2.11: the fix names the newest range that supports 2.11."""
    env.torch("2.11.0+cu130", "13.0").wheel("bitsandbytes", "0.49.0", ["torch<2.5,>=2.3"])
    f = one(env.check(gpus=H100, driver="580.159.04"), "bitsandbytes.torch-mismatch")
    assert commands(f)[0] == "pip install 'bitsandbytes<=0.50.2,>=0.50.0' --no-deps"


@pytest.mark.parametrize("name,raw,expected", [
    ("torch", "2.8.0+cu128", "pip install torch==2.8.0+cu128 --index-url https://download.pytorch.org/whl/cu128 --force-reinstall --no-deps"),
    ("torch", "2.13.0+cpu", "pip install torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu --force-reinstall --no-deps"),
    ("xformers", "0.0.35", "pip install xformers==0.0.35 --force-reinstall --no-deps"),
    ("xformers", "abc", None),
])
def test_reinstall_is_exact_or_manual(name: str, raw: str, expected) -> None:  # type: ignore[no-untyped-def]
    """Reinstalls keep version and build; an unreadable version is never an unpinned (newest) install."""
    from doctor.remedies import reinstall

    a = reinstall(name, raw, "https://download.pytorch.org/whl")
    assert a.command() == expected


def test_arch_fix_never_offers_a_build_the_driver_cannot_run(env: Env) -> None:
    """V100 on 2.11 cu128 with driver 550: 2.11's cu126 has sm_70 but needs driver >= 560.28, so no 2.11 build is
    installed; the fix names the nearest torch build that has sm_70 AND runs on 550 (2.6.0+cu124, floor 550.54.14),
    and, as the alternative, the driver floor that would let 2.11.0+cu126 run (issue 8: every fix a concrete target)."""
    f = one(env.torch("2.11.0+cu128", "12.8").check(gpus=V100, driver="550.54.14"), "gpu.arch-unsupported")
    assert [type(a) for a in f.fix] == [PipInstall, Manual]
    install = f.fix[0]
    assert install.requirements == ("torch==2.6.0+cu124",) and install.index_url == "https://download.pytorch.org/whl/cu124"
    assert "another torch release" in install.description
    assert "560.28.03" in f.fix[1].description and "torch==2.11.0+cu126" in f.fix[1].description
    assert not any(isinstance(a, PipInstall) and a.index_url and a.index_url.endswith(("/cu126", "/cu128", "/cu129", "/cu130"))
                   for a in f.fix)  # none of the builds the driver cannot run
