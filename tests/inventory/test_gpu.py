"""GPU detection: overrides, a fake NVML library, fake sysfs/procfs trees and fake nvidia-smi scripts."""

from __future__ import annotations

import shutil
import subprocess
import time
import types
from pathlib import Path

import pytest

from doctor.errors import DoctorError
from doctor.inventory.gpu.detect import combine, detect_hardware
from doctor.inventory.gpu.detection import Detection
from doctor.inventory.gpu.nvidia_smi import query_nvidia_smi
from doctor.inventory.gpu.nvml import detect_nvml, format_cuda_version, nvml_via_pynvml
from doctor.inventory.gpu.override import hardware_from_override
from doctor.inventory.gpu.procfs import read_procfs
from doctor.inventory.gpu.sysfs import read_sysfs
from doctor.facts import GPU
from tests.inventory.builders import write_executable

HERE = Path(__file__).parent
PROC_VERSION = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Oct 30 11:21:56 UTC 2025\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
PROC_VERSION_OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16-I3-B03-4-3)\n"
)
SMI_GOOD = """\
    echo "$@" > "$(dirname "$0")/args"
    echo "1, NVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.04, GPU-bbbb"
    echo "0, NVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.04, GPU-aaaa"
"""


def gpu_info(model: str, uuid: str, bus: str) -> str:
    return (
        f"Model: \t\t {model}\nIRQ:   \t\t 156\nGPU UUID: \t {uuid}\nVideo BIOS: \t 96.00.74.00.01\n"
        f"Bus Type: \t PCIe\nBus Location: \t {bus}\nDevice Minor: \t 0\nGPU Excluded:\t No\n"
    )


def make_proc(root: Path, version: str = PROC_VERSION, gpus=(("NVIDIA H100 80GB HBM3", "GPU-aaaa"), ("NVIDIA H100 80GB HBM3", "GPU-bbbb"))) -> Path:
    base = root / "driver" / "nvidia"
    base.mkdir(parents=True)
    (base / "version").write_text(version)
    for i, (model, uuid) in enumerate(gpus):
        bus = f"0000:{0x18 + i:02x}:00.0"
        (base / "gpus" / bus).mkdir(parents=True)
        (base / "gpus" / bus / "information").write_text(gpu_info(model, uuid, bus))
    return root


def make_sys(root: Path, version: str = "580.159.04\n") -> Path:
    (root / "module" / "nvidia").mkdir(parents=True)
    (root / "module" / "nvidia" / "version").write_text(version)
    return root


def detect(tmp_path: Path, **kwargs):
    """detect_hardware with no NVML and empty sysfs/procfs unless given."""
    kwargs.setdefault("environ", {})
    kwargs.setdefault("sys_root", str(tmp_path / "no-sys"))
    kwargs.setdefault("proc_root", str(tmp_path / "no-proc"))
    kwargs.setdefault("nvidia_smi", str(tmp_path / "no-nvidia-smi"))
    kwargs.setdefault("nvml_library", None)
    kwargs.setdefault("timeout", 3.0)
    return detect_hardware(**kwargs)


# --- overrides -------------------------------------------------------------------------------


def test_override_gpus_and_driver() -> None:
    env = {
        "DOCTOR_GPUS": "Tesla T4@7.5@15360, NVIDIA H100 80GB HBM3@9.0",
        "DOCTOR_DRIVER_VERSION": "535.104.05",
        "DOCTOR_CUDA_DRIVER_VERSION": "12.2",
    }
    hw = detect_hardware(env, nvml_library="/must/not/be/loaded.so", nvidia_smi="/must/not/run")
    assert hw.source == "override"
    assert hw.driver_version == "535.104.05" and hw.cuda_driver_version == "12.2"
    assert [(g.index, g.name, g.compute_capability, g.memory_mib) for g in hw.gpus] == [
        (0, "Tesla T4", (7, 5), 15360),
        (1, "NVIDIA H100 80GB HBM3", (9, 0), None),
    ]
    assert hw.gpus[1].cc == "9.0"
    assert all("must" not in n for n in hw.notes)


def test_override_unknown_compute_capability_and_memory() -> None:
    hw = hardware_from_override({"DOCTOR_GPUS": "Tesla T4@?,NVIDIA A100-SXM4-40GB@8.0@?"})
    assert hw is not None
    assert [(g.name, g.compute_capability, g.memory_mib, g.cc) for g in hw.gpus] == [
        ("Tesla T4", None, None, "?"),
        ("NVIDIA A100-SXM4-40GB", (8, 0), None, "8.0"),
    ]


@pytest.mark.parametrize("value", ["none", "NONE", " none "])
def test_override_none(value: str) -> None:
    hw = hardware_from_override({"DOCTOR_GPUS": value})
    assert hw is not None and hw.gpus == () and hw.source == "override" and hw.driver_version is None


def test_override_driver_only_and_unset() -> None:
    hw = hardware_from_override({"DOCTOR_DRIVER_VERSION": "570.26"})
    assert hw is not None and hw.gpus == () and hw.driver_version == "570.26"
    assert hardware_from_override({}) is None
    assert hardware_from_override({"DOCTOR_GPUS": "", "DOCTOR_DRIVER_VERSION": "  "}) is None


@pytest.mark.parametrize(
    "name, value",
    [
        ("DOCTOR_GPUS", "Tesla T4"),
        ("DOCTOR_GPUS", "Tesla T4@7"),
        ("DOCTOR_GPUS", "Tesla T4@??"),
        ("DOCTOR_GPUS", "Tesla T4@seven.five"),
        ("DOCTOR_GPUS", "@7.5"),
        ("DOCTOR_GPUS", "T4@7.5@-1"),
        ("DOCTOR_GPUS", "T4@7.5@15GB"),
        ("DOCTOR_GPUS", "T4@7.5@0"),
        ("DOCTOR_GPUS", "T4@7.5@1@2"),
        ("DOCTOR_GPUS", "T4@7.5,"),
        ("DOCTOR_GPUS", "T4@7.5\n@x"),
        ("DOCTOR_GPUS", "T4@7.5@\u0661\u0662"),
        ("DOCTOR_DRIVER_VERSION", "abc"),
        ("DOCTOR_DRIVER_VERSION", "535"),
        ("DOCTOR_DRIVER_VERSION", "535.104.05\nrm -rf"),
        ("DOCTOR_CUDA_DRIVER_VERSION", "12"),
        ("DOCTOR_CUDA_DRIVER_VERSION", "twelve.two"),
    ],
)
def test_malformed_override_is_a_one_line_doctor_error(name: str, value: str) -> None:
    with pytest.raises(DoctorError) as info:
        detect_hardware({name: value})
    message = str(info.value)
    assert name in message and "\n" not in message


# --- NVML ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory):
    """Compile the fake NVML variants; skip when no C compiler is around."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a fake libnvidia-ml.so")
    out = tmp_path_factory.mktemp("fake-nvml")
    libs = {}
    for mode in ("OK", "FAIL", "HANG", "NOCC"):
        target = out / f"libnvidia-ml-{mode.lower()}.so.1"
        subprocess.run(
            [compiler, "-shared", "-fPIC", f"-DMODE_{mode}", "-o", str(target), str(HERE / "fake_nvml.c")],
            check=True,
            timeout=120,
            capture_output=True,
        )
        libs[mode] = str(target)
    return libs


def test_nvml_ctypes_reads_everything(tmp_path: Path, fake_nvml) -> None:
    hw = detect(tmp_path, nvml_library=fake_nvml["OK"], use_pynvml=False, nvidia_smi="/must/not/run")
    assert hw.source == "nvml"
    assert hw.driver_version == "580.159.04" and hw.cuda_driver_version == "13.0"
    assert [(g.name, g.compute_capability, g.memory_mib, g.uuid) for g in hw.gpus] == [
        ("NVIDIA H100 80GB HBM3", (9, 0), 81559, "GPU-h100"),
        ("Tesla T4", (7, 5), 15360, "GPU-t4"),
    ]
    assert hw.notes == ()


def test_nvml_init_failure_is_a_note(tmp_path: Path, fake_nvml) -> None:
    hw = detect(tmp_path, nvml_library=fake_nvml["FAIL"], use_pynvml=False)
    assert hw.source == "none" and hw.gpus == ()
    assert any("nvmlInit_v2 failed: Driver Not Loaded" in n for n in hw.notes)


def test_nvml_hang_is_abandoned_after_the_timeout(fake_nvml) -> None:
    start = time.monotonic()
    found = detect_nvml(1.0, library=fake_nvml["HANG"], use_pynvml=False)
    assert time.monotonic() - start < 2.0
    assert found.driver_version is None and "no answer within 1 s" in found.notes[0]


def test_incomplete_nvml_is_completed_by_nvidia_smi(tmp_path: Path, fake_nvml) -> None:
    smi = write_executable(
        tmp_path / "bin" / "nvidia-smi",
        """\
        echo "0, NVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.04, GPU-h100"
        echo "1, Tesla T4, 7.5, 15360, 580.159.04, GPU-t4"
        """,
    )
    hw = detect(tmp_path, nvml_library=fake_nvml["NOCC"], use_pynvml=False, nvidia_smi=str(smi))
    assert hw.source == "nvml"
    assert [g.compute_capability for g in hw.gpus] == [(9, 0), (7, 5)]


def test_nvml_missing_library_is_a_quick_note(tmp_path: Path) -> None:
    start = time.monotonic()
    hw = detect(tmp_path, nvml_library=str(tmp_path / "libnvidia-ml.so.1"), use_pynvml=False)
    assert time.monotonic() - start < 1.0
    assert any(n.startswith("nvml: cannot load") for n in hw.notes)


def test_nvml_via_a_pynvml_like_module() -> None:
    class NVMLError(Exception):
        pass

    def not_supported(handle):
        raise NVMLError("Not Supported")

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"535.104.05",
        nvmlSystemGetCudaDriverVersion_v2=lambda: 12020,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: object(),
        nvmlDeviceGetName=lambda h: "Tesla T4",
        nvmlDeviceGetCudaComputeCapability=lambda h: (7, 5),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=15360 << 20),
        nvmlDeviceGetUUID=not_supported,
    )
    found = nvml_via_pynvml(fake)
    assert found.driver_version == "535.104.05" and found.cuda_driver_version == "12.2"
    assert found.gpus == [GPU(index=0, name="Tesla T4", compute_capability=(7, 5), memory_mib=15360, uuid=None)]


@pytest.mark.parametrize("value, expected", [(12020, "12.2"), (13000, "13.0"), (11080, "11.8"), (12090, "12.9")])
def test_format_cuda_version(value: int, expected: str) -> None:
    assert format_cuda_version(value) == expected


# --- sysfs / procfs --------------------------------------------------------------------------


def test_sysfs_driver(tmp_path: Path) -> None:
    assert read_sysfs(str(make_sys(tmp_path / "sys"))).driver_version == "580.159.04"
    bad = read_sysfs(str(make_sys(tmp_path / "sys2", "garbage\x00\n")))
    assert bad.driver_version is None and "not a driver version" in bad.notes[0]


@pytest.mark.parametrize("text, version", [(PROC_VERSION, "580.159.04"), (PROC_VERSION_OPEN, "570.86.15")])
def test_procfs_driver_and_gpus(tmp_path: Path, text: str, version: str) -> None:
    found = read_procfs(str(make_proc(tmp_path / "proc", text)))
    assert found.driver_version == version
    assert [(g.index, g.name, g.uuid, g.compute_capability) for g in found.gpus] == [
        (0, "NVIDIA H100 80GB HBM3", "GPU-aaaa", None),
        (1, "NVIDIA H100 80GB HBM3", "GPU-bbbb", None),
    ]


def test_procfs_garbage(tmp_path: Path) -> None:
    root = make_proc(tmp_path / "proc", "\xff garbage without a version\n", gpus=())
    gpu_dir = root / "driver" / "nvidia" / "gpus" / "0000:01:00.0"
    gpu_dir.mkdir(parents=True)
    (gpu_dir / "information").mkdir()  # not a file
    found = read_procfs(str(root))
    assert found.driver_version is None
    assert any("no driver version" in n for n in found.notes)
    assert found.gpus == [GPU(index=0, name="unknown")]


def test_sysfs_source_wins_and_procfs_names_are_used(tmp_path: Path) -> None:
    hw = detect(tmp_path, sys_root=str(make_sys(tmp_path / "sys")), proc_root=str(make_proc(tmp_path / "proc")))
    assert hw.source == "sysfs" and hw.driver_version == "580.159.04"
    assert [g.name for g in hw.gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert any("nvidia-smi" in n and "not found" in n for n in hw.notes)


# --- nvidia-smi ------------------------------------------------------------------------------


def test_nvidia_smi_fills_procfs_gpus_by_uuid(tmp_path: Path) -> None:
    smi = write_executable(tmp_path / "bin" / "nvidia-smi", SMI_GOOD)
    hw = detect(tmp_path, proc_root=str(make_proc(tmp_path / "proc")), nvidia_smi=str(smi))
    assert hw.source == "procfs"
    assert [(g.index, g.uuid, g.compute_capability, g.memory_mib) for g in hw.gpus] == [
        (0, "GPU-aaaa", (9, 0), 81559),
        (1, "GPU-bbbb", (9, 0), 81559),
    ]
    args = (tmp_path / "bin" / "args").read_text().split()
    assert args == ["--query-gpu=index,name,compute_cap,memory.total,driver_version,uuid", "--format=csv,noheader,nounits"]


def test_nvidia_smi_alone(tmp_path: Path) -> None:
    write_executable(tmp_path / "bin" / "nvidia-smi", SMI_GOOD)
    # Found by name on the PATH of the environ we pass.
    hw = detect(tmp_path, nvidia_smi="nvidia-smi", environ={"PATH": str(tmp_path / "bin")})
    assert hw.source == "nvidia-smi" and hw.driver_version == "580.159.04"
    assert [g.index for g in hw.gpus] == [1, 0]


def test_nvidia_smi_garbage(tmp_path: Path) -> None:
    smi = write_executable(tmp_path / "nvidia-smi", 'echo "hello world"\necho "a, b, c, d, e, f"\nprintf "\\377\\376\\n"\n')
    hw = detect(tmp_path, nvidia_smi=str(smi))
    assert hw.gpus == () and hw.source == "none"
    assert any("unexpected output" in n for n in hw.notes)


def test_nvidia_smi_exit_status(tmp_path: Path) -> None:
    smi = write_executable(
        tmp_path / "nvidia-smi",
        """\
        echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
        exit 1
        """,
    )
    hw = detect(tmp_path, nvidia_smi=str(smi))
    assert hw.gpus == ()
    assert any("exited with status 1" in n and "couldn't communicate" in n for n in hw.notes)


def test_nvidia_smi_no_devices(tmp_path: Path) -> None:
    smi = write_executable(tmp_path / "nvidia-smi", 'echo "No devices were found"\nexit 6\n')
    hw = detect(tmp_path, nvidia_smi=str(smi))
    assert any("status 6" in n and "No devices were found" in n for n in hw.notes)


def test_nvidia_smi_old_driver_without_compute_cap(tmp_path: Path) -> None:
    smi = write_executable(
        tmp_path / "nvidia-smi",
        """\
        case "$*" in
          *compute_cap*) echo 'Field "compute_cap" is not a valid field to query.' >&2; exit 2;;
        esac
        echo "0, Tesla V100-SXM2-16GB, 16160, 470.82.01, GPU-v100"
        """,
    )
    hw = detect(tmp_path, nvidia_smi=str(smi))
    assert hw.driver_version == "470.82.01" and hw.source == "nvidia-smi"
    assert hw.gpus == (GPU(index=0, name="Tesla V100-SXM2-16GB", compute_capability=None, memory_mib=16160, uuid="GPU-v100"),)


def test_nvidia_smi_odd_cells(tmp_path: Path) -> None:
    smi = write_executable(
        tmp_path / "nvidia-smi",
        'echo "0, Weird, GPU, Name, 8.6, [N/A], 550.54.14, [N/A]"\n',
    )
    hw = detect(tmp_path, nvidia_smi=str(smi))
    assert hw.gpus == (GPU(index=0, name="Weird, GPU, Name", compute_capability=(8, 6), memory_mib=None, uuid=None),)


def test_nvidia_smi_missing(tmp_path: Path) -> None:
    hw = detect(tmp_path, nvidia_smi=str(tmp_path / "nvidia-smi"))
    assert hw.source == "none" and any("not found" in n for n in hw.notes)
    hw = detect(tmp_path, nvidia_smi="nvidia-smi", environ={"PATH": str(tmp_path)})
    assert any("not found on PATH" in n for n in hw.notes)


def test_nvidia_smi_not_executable_via_argv(tmp_path: Path) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho hi\n")  # no x bit; an argv list is run as given
    found = query_nvidia_smi([str(script)], timeout=2)
    assert found.gpus == [] and any("cannot run" in n for n in found.notes)


def test_nvidia_smi_hang_is_killed_in_time(tmp_path: Path) -> None:
    smi = write_executable(tmp_path / "nvidia-smi", "sleep 30\n")  # sh waits on a child that holds our pipes
    start = time.monotonic()
    hw = detect(tmp_path, nvidia_smi=str(smi), timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 3.0, elapsed
    assert any("no answer within 1.0 s" in n for n in hw.notes)


def test_nvidia_smi_grandchild_holding_the_pipe(tmp_path: Path) -> None:
    smi = write_executable(tmp_path / "nvidia-smi", "(sleep 30 &)\necho '0, Tesla T4, 7.5, 15360, 535.104.05, GPU-1'\n")
    start = time.monotonic()
    detect(tmp_path, nvidia_smi=str(smi), timeout=1.0)
    assert time.monotonic() - start < 3.0


def test_whole_detection_budget_with_everything_hanging(tmp_path: Path, fake_nvml) -> None:
    smi = write_executable(tmp_path / "nvidia-smi", "sleep 30\n")
    start = time.monotonic()
    hw = detect(tmp_path, nvml_library=fake_nvml["HANG"], use_pynvml=False, nvidia_smi=str(smi), timeout=1.0)
    assert time.monotonic() - start < 2.5
    assert hw.source == "none" and any("nvml: no answer" in n for n in hw.notes)


# --- combining -------------------------------------------------------------------------------


def test_cuda_visible_devices_is_only_a_note(tmp_path: Path) -> None:
    hw = detect(tmp_path, proc_root=str(make_proc(tmp_path / "proc")), environ={"CUDA_VISIBLE_DEVICES": "1"})
    assert len(hw.gpus) == 2
    assert any("CUDA_VISIBLE_DEVICES='1'" in n for n in hw.notes)


def test_disagreeing_drivers_are_noted() -> None:
    hw = combine([Detection("sysfs", driver_version="580.159.04"), Detection("nvidia-smi", driver_version="575.51.03")])
    assert hw.driver_version == "580.159.04" and hw.source == "sysfs"
    assert any("disagree" in n for n in hw.notes)


def test_nothing_found() -> None:
    hw = combine([])
    assert hw.source == "none" and hw.gpus == () and hw.driver_version is None


FAKE_PYNVML = '''
class NVMLError(Exception):
    pass

class _Memory:
    total = 24576 << 20

def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlSystemGetDriverVersion(): return "550.54.14"
def nvmlSystemGetCudaDriverVersion_v2(): return 12040
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetName(h): return "NVIDIA L4"
def nvmlDeviceGetCudaComputeCapability(h): return (8, 9)
def nvmlDeviceGetMemoryInfo(h): return _Memory()
def nvmlDeviceGetUUID(h): return "GPU-l4"
'''


def test_pynvml_is_the_fallback_when_the_library_cannot_be_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "pynvml.py").write_text(FAKE_PYNVML)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = detect_nvml(3.0, library=str(tmp_path / "libnvidia-ml.so.1"))
    finally:
        sys.modules.pop("pynvml", None)
    assert found.driver_version == "550.54.14" and found.cuda_driver_version == "12.4"
    assert found.gpus == [GPU(index=0, name="NVIDIA L4", compute_capability=(8, 9), memory_mib=24576, uuid="GPU-l4")]
    assert "used pynvml instead" in found.notes[0]


def test_ctypes_comes_first_even_when_pynvml_is_there(tmp_path: Path, fake_nvml, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "pynvml.py").write_text("raise SystemExit('pynvml must not be imported when ctypes works')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = detect_nvml(3.0, library=fake_nvml["OK"])
    assert found.driver_version == "580.159.04" and "pynvml" not in sys.modules
