"""The rules the planner's verification relies on match reality (issue 8): xformers binary vs torch, the
bitsandbytes library for torch's CUDA and its archs, and fixes that name a concrete torch build.

Worlds are real installs (pip --no-deps into a folder) of stand-in wheels that carry real metadata and real
build files: xformers' cpp_lib.json read out of the real wheels, bitsandbytes' real library file names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from doctor.actions import Manual, PipInstall, PipUninstall
from doctor.compat_matrix.loader import load_matrix
from doctor.findings import Severity
from doctor.rules.bitsandbytes import check_bitsandbytes
from tests.conftest import Env, ids, one
from tests.rules.bnb_files import bnb_files

H100 = "NVIDIA H100 80GB HBM3@9.0@81559"
T4 = "Tesla T4@7.5@15360"
V100 = "Tesla V100-SXM2-16GB@7.0@16384"
B200 = "NVIDIA B200@10.0@183359"
DRIVER = "580.159.04"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}"
RECORDED = Path(__file__).resolve().parents[1] / "compat_matrix" / "recorded" / "xformers_cpp_lib.json"


def real_cpp_lib(version: str) -> str:
    """The real cpp_lib.json of xformers `version` (cp311 wheel), its Python set to this interpreter's.

    Before 0.0.31 the wheels are per Python tag and pip installs the one of the running Python, so the
    build's Python always matches in a real install; the torch, CUDA and arch list stay as recorded.
    """
    doc = json.loads(RECORDED.read_text(encoding="utf-8"))["wheels"][version]["cpp_lib.json"]
    doc["version"]["python"] = PY
    return json.dumps(doc)


def xformers(env: Env, version: str, requires: List[str], cpp_lib: str) -> Env:
    """A stand-in xformers wheel with its real Requires-Dist and a cpp_lib.json."""
    return env.wheel("xformers", version, requires, {"xformers/__init__.py": "", "xformers/cpp_lib.json": cpp_lib})


def cpp(torch: str, cuda: int, arch: str = "6.0+PTX 7.0 7.5 8.0+PTX 9.0a", python: str = PY) -> str:
    """A cpp_lib.json in the shape of the real ones (0.0.28.post1's keys)."""
    return json.dumps({"version": {"cuda": cuda, "hip": None, "torch": torch, "python": python, "flash": "v2.6.3"},
                       "env": {"TORCH_CUDA_ARCH_LIST": arch, "PYTORCH_ROCM_ARCH": None, "XFORMERS_BUILD_TYPE": "Release"}})


def ev(f) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(f.evidence)


def commands(f) -> List[str]:  # type: ignore[no-untyped-def]
    return [a.command() or a.description for a in f.fix]


def xformers_findings(report) -> Dict[str, object]:  # type: ignore[no-untyped-def]
    return {f.id: f for f in report.findings if f.id.startswith("xformers.")}


# -- xformers: same torch minor, another patch -------------------------------------------------------------


def test_recorded_exception_026_post1_on_231_is_info_and_satisfied(env: Env) -> None:
    """The community's `xformers<0.0.27` on torch 2.3.1: the real 0.0.26.post1 (built for 2.3.0+cu121, pins
    torch==2.3.0) is a recorded known-good pair: its broken pin counts as satisfied, nothing warns."""
    env.torch("2.3.1+cu121", "12.1")
    xformers(env, "0.0.26.post1", ["numpy", "torch==2.3.0"], real_cpp_lib("0.0.26.post1"))
    found = xformers_findings(env.check(gpus=H100, driver=DRIVER))
    assert set(found) == {"xformers.torch-exception", "xformers.binary"}
    meta, binary = found["xformers.torch-exception"], found["xformers.binary"]
    assert meta.severity is Severity.INFO and binary.severity is Severity.INFO  # type: ignore[attr-defined]
    assert "unslothai/unsloth#1126" in ev(meta)["reports"] and "UNSLOTH-SRC" in ev(meta)["known good"]
    assert "pip check lists this requirement" in meta.explanation  # type: ignore[attr-defined]
    assert "2.3.0" in binary.title and "2.3.1" in binary.title and "known-good" in binary.title  # type: ignore[attr-defined]


def test_patch_mismatch_without_a_record_warns_and_breaks_the_pin(env: Env) -> None:
    """The real 0.0.28.post1 (built for 2.4.1+cu121, pins torch==2.4.1) on torch 2.4.0: the pin is broken (error,
    fix: the xformers built for 2.4.0), the binary may load (warning: the GPU probe decides)."""
    env.torch("2.4.0+cu121", "12.1")
    xformers(env, "0.0.28.post1", ["numpy", "torch==2.4.1"], real_cpp_lib("0.0.28.post1"))
    found = xformers_findings(env.check(gpus=H100, driver=DRIVER))
    meta, binary = found["xformers.torch-mismatch"], found["xformers.binary-mismatch"]
    assert meta.severity is Severity.ERROR  # type: ignore[attr-defined]
    assert commands(meta)[0] == "pip install xformers==0.0.27.post2 --no-deps"
    assert binary.severity is Severity.WARN  # type: ignore[attr-defined]
    assert "same minor" in binary.title and "GPU probe decides" in binary.title  # type: ignore[attr-defined]
    assert "doctor probe" in binary.explanation  # type: ignore[attr-defined]


def test_another_torch_minor_is_an_error(env: Env) -> None:
    env.torch("2.5.1+cu121", "12.1")
    xformers(env, "0.0.28.post1", ["numpy", "torch==2.4.1"], real_cpp_lib("0.0.28.post1"))
    binary = xformers_findings(env.check(gpus=H100, driver=DRIVER))["xformers.binary-mismatch"]
    assert binary.severity is Severity.ERROR and "built for torch 2.4.1, torch 2.5.1 is installed" in binary.title  # type: ignore[attr-defined]


def test_cpu_torch_is_an_error_even_for_the_same_release(env: Env) -> None:
    env.torch("2.4.1+cpu", None)
    xformers(env, "0.0.28.post1", ["numpy", "torch==2.4.1"], real_cpp_lib("0.0.28.post1"))
    binary = xformers_findings(env.check(gpus=H100, driver=DRIVER))["xformers.binary-mismatch"]
    assert binary.severity is Severity.ERROR and "torch is a CPU build" in binary.title  # type: ignore[attr-defined]


def test_no_state_on_231_loops(env: Env, tmp_path: Path) -> None:
    """Issue 8's loop: on torch 2.3.1 the pin-matching 0.0.27 has the dtype_layout bug, so its fix is
    0.0.26.post1; the state that fix produces is clean (no xformers warning or error), so it is not flagged again."""
    env.torch("2.3.1+cu121", "12.1")
    xformers(env, "0.0.27", ["numpy", "torch==2.3.1"], cpp("2.3.1+cu121", 1201))
    bug = one(env.check(gpus=H100, driver=DRIVER), "xformers.dtype-layout")
    assert any("xformers==0.0.26.post1" in c for c in commands(bug))
    after = Env(tmp_path / "after")
    after.torch("2.3.1+cu121", "12.1")
    xformers(after, "0.0.26.post1", ["numpy", "torch==2.3.0"], real_cpp_lib("0.0.26.post1"))
    loud = [f.id for f in after.check(gpus=H100, driver=DRIVER).findings if f.id.startswith("xformers.") and f.severity >= Severity.WARN]
    assert loud == []


def test_default_index_xformers_on_a_torch_of_another_cuda_is_rebuilt_from_that_family_index(env: Env) -> None:
    """Failure class 5: PyPI's torch 2.5.1 is cu124, PyPI's xformers 0.0.28.post3 is built with CUDA 12.1 (its real
    cpp_lib.json). The fix is the same version from the cu124 PyTorch index, forced; never the identical PyPI wheel."""
    env.torch("2.5.1+cu124", "12.4")
    xformers(env, "0.0.28.post3", ["numpy", "torch==2.5.1"], real_cpp_lib("0.0.28.post3"))
    binary = xformers_findings(env.check(gpus=H100, driver=DRIVER))["xformers.binary-mismatch"]
    assert binary.severity is Severity.WARN and "built with CUDA 12.1, torch uses CUDA 12.4" in binary.title  # type: ignore[attr-defined]
    install = binary.fix[0]  # type: ignore[attr-defined]
    assert isinstance(install, PipInstall) and install.requirements == ("xformers==0.0.28.post3",)
    assert install.index_url == "https://download.pytorch.org/whl/cu124" and install.force_reinstall and install.no_deps


# -- xformers: stable ABI (0.0.34+) and CUDA family ------------------------------------------------------------


def test_stable_abi_on_a_later_torch_same_cuda_major_warns(env: Env) -> None:
    """0.0.35's binary is built for 2.10.0+cu128; upstream says 0.0.34+ builds load on any later torch: on 2.11+cu128
    that is a warning the probe decides, not an error."""
    env.torch("2.11.0+cu128", "12.8")
    xformers(env, "0.0.35", ["numpy", "torch>=2.10"], cpp("2.10.0+cu128", 1208, "7.5 8.0+PTX 8.0 9.0a"))
    found = xformers_findings(env.check(gpus=H100, driver=DRIVER))
    assert found["xformers.torch-metadata"].severity is Severity.OK  # type: ignore[attr-defined]
    binary = found["xformers.binary-mismatch"]
    assert binary.severity is Severity.WARN and "stable ABI" in binary.title  # type: ignore[attr-defined]


def test_the_observed_h100_failure_stays_an_error(env: Env) -> None:
    """What was seen on the H100: 0.0.35 (2.10.0+cu128) on 2.11.0+cu130 does not load: another CUDA major."""
    env.torch("2.11.0+cu130", "13.0")
    xformers(env, "0.0.35", ["numpy", "torch>=2.10"], cpp("2.10.0+cu128", 1208, "7.5 8.0+PTX 8.0 9.0a"))
    binary = xformers_findings(env.check(gpus=H100, driver=DRIVER))["xformers.binary-mismatch"]
    assert binary.severity is Severity.ERROR and "another major version" in binary.title  # type: ignore[attr-defined]


def test_stable_abi_does_not_reach_an_older_torch(env: Env) -> None:
    env.torch("2.9.1+cu128", "12.8")
    xformers(env, "0.0.35", ["numpy", "torch>=2.10"], cpp("2.10.0+cu128", 1208))
    binary = xformers_findings(env.check(gpus=H100, driver=DRIVER))["xformers.binary-mismatch"]
    assert binary.severity is Severity.ERROR  # type: ignore[attr-defined]


# -- bitsandbytes: the library for torch's CUDA ---------------------------------------------------------------------


def bnb(env: Env, version: str, requires: List[str] = ()) -> Env:  # type: ignore[assignment]
    """A stand-in bitsandbytes with the real library file names of that release's wheel."""
    return env.wheel("bitsandbytes", version, list(requires), bnb_files(version))


def test_041_on_cu124_has_no_library_and_the_fix_names_a_release_that_ships_one(env: Env) -> None:
    """0.41.x ships CUDA libraries up to 12.2: on torch 2.4.0+cu124 it loads its CPU library and every GPU op fails."""
    env.torch("2.4.0+cu124", "12.4")
    bnb(env, "0.41.1")
    f = one(env.check(gpus=T4, driver=DRIVER), "bitsandbytes.no-cuda-library")
    assert f.severity is Severity.ERROR and "CUDA 12.4" in f.title
    e = ev(f)
    assert e["CUDA libraries shipped"].startswith("11.0, 11.0 (no cuBLASLt)") and "12.2" in e["CUDA libraries shipped"]
    assert e["from"].startswith("installed files (")
    install, drop = f.fix
    assert isinstance(install, PipInstall) and install.requirements == ("bitsandbytes==0.50.2",) and install.no_deps
    assert "libbitsandbytes_cuda124.so" in install.description
    assert isinstance(drop, PipUninstall)


@pytest.mark.parametrize("value,severity,words", [
    ("122", Severity.WARN, "loads libbitsandbytes_cuda122.so (CUDA 12.2), not the library for torch's CUDA 12.4"),
    ("124", Severity.INFO, "names the library for torch's own CUDA 12.4"),
    ("131", Severity.ERROR, "asks bitsandbytes 0.45.5 for libbitsandbytes_cuda131.so, which it does not ship"),
    ("12.2", Severity.ERROR, "is not a CUDA version as bitsandbytes reads it"),
    ("", Severity.ERROR, "is not a CUDA version as bitsandbytes reads it"),
])
def test_bnb_cuda_version_override_replaces_the_pick(env: Env, value: str, severity: Severity, words: str) -> None:
    """BNB_CUDA_VERSION=XY makes bitsandbytes load libbitsandbytes_cudaXY.so whatever torch's CUDA is: the rule says which
    file loads, and that one missing from the wheel (or a value that names no file) is an error with 'unset' as the fix."""
    env.torch("2.4.0+cu124", "12.4")
    bnb(env, "0.45.5")
    report = env.check(gpus=H100, driver=DRIVER, env={"BNB_CUDA_VERSION": value})
    f = one(report, "bitsandbytes.cuda-override")
    assert f.severity is severity and words in f.title, f.title
    assert ev(f)["BNB_CUDA_VERSION"] == value
    assert not [x for x in report.findings if x.id in ("bitsandbytes.cuda-library", "bitsandbytes.no-cuda-library")]
    if severity >= Severity.WARN:
        (unset,) = f.fix
        assert isinstance(unset, Manual) and unset.description.startswith("unset BNB_CUDA_VERSION")


def test_041_on_cu121_loads_its_library(env: Env) -> None:
    env.torch("2.3.1+cu121", "12.1")
    bnb(env, "0.41.1")
    f = one(env.check(gpus=T4, driver=DRIVER), "bitsandbytes.cuda-library")
    assert f.severity is Severity.OK and ev(f)["loads"] == "libbitsandbytes_cuda121.so"


def test_pre_045_picks_the_no_cublaslt_library_below_75(env: Env) -> None:
    env.torch("2.3.1+cu121", "12.1")
    bnb(env, "0.44.1")
    f = one(env.check(gpus=V100, driver=DRIVER), "bitsandbytes.cuda-library")
    assert ev(f)["loads"] == "libbitsandbytes_cuda121_nocublaslt.so"


def test_050_falls_back_within_the_cuda_major(env: Env) -> None:
    """0.50 dropped cu129 but loads the cu128 library for torch's CUDA 12.9 (same major): info, not a fault."""
    env.torch("2.8.0+cu129", "12.9")
    bnb(env, "0.50.2", ["torch<3,>=2.4"])
    report = env.check(gpus=H100, driver=DRIVER)
    f = one(report, "bitsandbytes.cuda-library")
    assert f.severity is Severity.INFO and ev(f)["loads"] == "libbitsandbytes_cuda128.so"
    assert "bitsandbytes.no-cuda-library" not in ids(report)


def test_047_has_nothing_for_cuda_13(env: Env) -> None:
    env.torch("2.9.0+cu130", "13.0")
    bnb(env, "0.47.0", ["torch<3,>=2.2"])
    f = one(env.check(gpus=H100, driver=DRIVER), "bitsandbytes.no-cuda-library")
    assert commands(f)[0] == "pip install bitsandbytes==0.50.2 --no-deps"


def test_planned_upgrade_without_files_falls_back_to_the_matrix(env: Env) -> None:
    """The planner's would-be Facts for a bitsandbytes it has not installed yet carry bitsandbytes=None."""
    env.torch("2.4.0+cu124", "12.4")
    bnb(env, "0.41.1")
    facts = env.facts(gpus=T4, driver=DRIVER)
    matrix = load_matrix()
    found = {f.id: f for f in check_bitsandbytes(facts._replace(bitsandbytes=None), matrix)}
    assert found["bitsandbytes.no-cuda-library"].severity is Severity.ERROR
    assert ev(found["bitsandbytes.no-cuda-library"])["from"].startswith("compat matrix (WHEEL-FILES)")
    dist = facts.distributions["bitsandbytes"]._replace(version="0.45.5")
    upgraded = facts._replace(bitsandbytes=None, distributions={**facts.distributions, "bitsandbytes": dist})
    found = {f.id: f for f in check_bitsandbytes(upgraded, matrix)}
    assert found["bitsandbytes.cuda-library"].severity is Severity.OK
    assert "bitsandbytes.no-cuda-library" not in found


def test_unknown_release_is_info_not_an_error(env: Env) -> None:
    env.torch("2.11.0+cu130", "13.0")
    facts = env.wheel("bitsandbytes", "0.51.0").facts(gpus=H100, driver=DRIVER)
    found = {f.id: f for f in check_bitsandbytes(facts._replace(bitsandbytes=None), load_matrix())}
    assert found["bitsandbytes.library-unknown"].severity is Severity.INFO


def test_cpu_torch_asks_nothing_of_the_libraries(env: Env) -> None:
    env.torch("2.4.0+cpu", None)
    bnb(env, "0.41.1")
    report = env.check(gpus="none")
    assert not {"bitsandbytes.no-cuda-library", "bitsandbytes.cuda-library"} & set(ids(report))


# -- bitsandbytes: the library's archs vs the GPU -----------------------------------------------------------------


def test_cuda13_library_has_no_volta_kernels(env: Env) -> None:
    """bnb 0.48+ builds its CUDA 13 libraries for sm_75+: a V100 gets 'no kernel image'."""
    env.torch("2.9.0+cu130", "13.0")
    bnb(env, "0.48.1", ["torch<3,>=2.3"])
    f = one(env.check(gpus=V100, driver=DRIVER), "bitsandbytes.arch")
    assert f.severity is Severity.ERROR and "CUDA 13.0 library" in f.title and "sm_70" in f.title
    assert isinstance(f.fix[0], Manual)  # no release ships a CUDA 13 library with sm_70


def test_blackwell_on_a_cuda_124_library_runs_only_by_ptx(env: Env) -> None:
    env.torch("2.6.0+cu124", "12.4")
    bnb(env, "0.45.5", ["torch<3,>=2.0"])
    report = env.check(gpus=B200, driver=DRIVER)
    f = one(report, "bitsandbytes.arch-ptx-jit")
    assert f.severity is Severity.WARN and "from sm_90" in f.title
    assert "bitsandbytes.arch" not in ids(report)


def test_maxwell_runs_0_46_cuda_121_library(env: Env) -> None:
    """0.46's cu121 library has sm_50 cubins: the old cc >= 6.0 floor (0.48+) does not apply to it."""
    env.torch("2.3.1+cu121", "12.1")
    bnb(env, "0.46.1", ["torch<3,>=2.2"])
    report = env.check(gpus="Tesla M60@5.2@8192", driver=DRIVER)
    assert "bitsandbytes.arch" not in ids(report)
    assert one(report, "bitsandbytes.no-int8").severity is Severity.INFO


def test_a_non_index_build_falls_back_to_the_cc_floor(env: Env) -> None:
    """A source/conda build whose libraries differ from the wheel's: its arch list is unknown, the floor applies."""
    env.torch("2.4.0+cu124", "12.4")
    env.wheel("bitsandbytes", "0.48.1", ["torch<3,>=2.3"], {"bitsandbytes/libbitsandbytes_cuda124.so": "", "bitsandbytes/__init__.py": ""})
    report = env.check(gpus="Tesla M60@5.2@8192", driver=DRIVER)
    assert one(report, "bitsandbytes.cuda-library").severity is Severity.OK
    f = one(report, "bitsandbytes.arch")
    assert "cc 5.2 < 6.0" in f.title


# -- every fix names a concrete torch build ---------------------------------------------------------------------------


def test_driver_too_old_for_every_build_of_this_release_names_another_release(env: Env) -> None:
    """Driver 520 (CUDA 11.8's) runs no 2.9 build, not even by minor-version compatibility (12.x needs 525.60.13):
    the fix is the nearest torch build it runs, exact, from its variant's index, and the floor for torch's CUDA."""
    report = env.torch("2.9.0+cu128", "12.8").check(gpus=H100, driver="520.61.05")
    f = one(report, "driver.too-old")
    install = f.fix[0]
    assert isinstance(install, PipInstall) and install.index_url is not None
    (req,) = install.requirements
    name, _, pinned = req.partition("==")
    tag = pinned.split("+")[1]
    assert name == "torch" and install.index_url.endswith("/" + tag) and tag in ("cu118", "cu121")
    assert any(isinstance(a, Manual) and "570.26" in a.description for a in f.fix)  # the floor for torch's CUDA 12.8


def test_minor_compat_never_moves_torch(env: Env) -> None:
    """Driver 550 runs CUDA 12.8 by minor-version compatibility: offer no other torch release, only the driver floor."""
    f = one(env.torch("2.8.0+cu128", "12.8").check(gpus=H100, driver="550.54.14"), "driver.minor-compat")
    assert not any(isinstance(a, PipInstall) for a in f.fix)
    assert "570.26" in f.fix[0].description


def test_fresh_install_hint_is_an_exact_build(env: Env) -> None:
    report = env.check(gpus=T4, driver=DRIVER)
    f = one(report, "torch.missing")
    (install,) = f.fix
    assert isinstance(install, PipInstall) and "+cu" in install.requirements[0] and install.index_url


def test_blackwell_on_an_old_torch_names_a_build_with_sm_120(env: Env) -> None:
    """RTX 5090 (sm_120) on torch 2.6.0+cu124: no 2.6 build has it; the nearest release that does (2.7 cu128)."""
    f = one(env.torch("2.6.0+cu124", "12.4").check(gpus="NVIDIA GeForce RTX 5090@12.0@32607", driver=DRIVER),
            "gpu.arch-unsupported")
    install = f.fix[0]
    assert isinstance(install, PipInstall)
    assert install.requirements == ("torch==2.7.1+cu128",) and install.index_url == "https://download.pytorch.org/whl/cu128"


@pytest.mark.parametrize("driver", ["580.159.04", None])
def test_arch_fix_same_release_when_it_has_the_arch(env: Env, driver: object) -> None:
    """V100 on 2.11 cu128: 2.11 cu126 has sm_70 and the driver (or an unknown one) runs it: stay on 2.11."""
    f = one(env.torch("2.11.0+cu128", "12.8").check(gpus=V100, driver=driver), "gpu.arch-unsupported")  # type: ignore[arg-type]
    assert f.fix[0].command() == "pip install torch==2.11.0+cu126 --index-url https://download.pytorch.org/whl/cu126"
