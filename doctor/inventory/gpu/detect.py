"""GPUs and the NVIDIA driver, found without torch and without ever hanging.

Detection order (each step is one small function below):

1. Override from the environment; when any of these is set (non-empty) nothing is probed and
   the source is "override":

   - ``DOCTOR_GPUS``: comma-separated ``NAME@CC[@MEM_MIB]`` items, e.g.
     ``Tesla T4@7.5@15360,NVIDIA H100 80GB HBM3@9.0``; or ``none`` for a machine without GPU.
     CC is the compute capability ``MAJOR.MINOR``, or ``?`` when unknown (as procfs-only
     detection leaves it); MEM_MIB an integer number of MiB, or ``?``.
   - ``DOCTOR_DRIVER_VERSION``: the NVIDIA driver, e.g. ``535.104.05`` (or ``570.26``).
   - ``DOCTOR_CUDA_DRIVER_VERSION``: the highest CUDA the driver supports, e.g. ``12.2``.

   A malformed value raises DoctorError naming the variable.
2. NVML: ctypes on ``libnvidia-ml.so.1``, or ``pynvml`` (nvidia-ml-py) when that library cannot
   be loaded and pynvml is importable (ctypes first: importing pynvml alone took 73 ms on an H100
   box without .pyc files, the whole ctypes query 23 ms). Run in a daemon thread joined with the
   timeout, so a hung driver cannot freeze the doctor.
3. sysfs ``/sys/module/nvidia/version`` (driver) and procfs ``/proc/driver/nvidia/version``
   (driver) plus ``/proc/driver/nvidia/gpus/*/information`` (GPU names; no compute capability).
4. ``nvidia-smi --query-gpu=...`` with a timeout, no shell; it fills in compute capability and
   memory of GPUs found by procfs.

Hardware.source is the first method that gave the driver version. Every failure becomes a note.
CUDA_VISIBLE_DEVICES does not filter the list (all physical GPUs are reported); it is noted.
The whole detection finishes within about ``timeout`` + 1 s whatever the driver does.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from doctor.errors import DoctorError
from doctor.facts import GPU, Hardware
from doctor._util.files import describe_os_error, read_text

NVML_LIBRARY = "libnvidia-ml.so.1"
SMI_QUERY = "index,name,compute_cap,memory.total,driver_version,uuid"
# Drivers before ~510 do not know compute_cap; retried without it.
SMI_QUERY_OLD = "index,name,memory.total,driver_version,uuid"

# [0-9], not \d: \d also matches other scripts' digits; \Z, not $: $ accepts a trailing newline.
_DRIVER_RE = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?\Z")
_CUDA_RE = re.compile(r"[0-9]+\.[0-9]+\Z")
_CC_RE = re.compile(r"([0-9]+)\.([0-9]+)\Z")
_PROC_VERSION_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)")
_OVERRIDE_VARS = ("DOCTOR_GPUS", "DOCTOR_DRIVER_VERSION", "DOCTOR_CUDA_DRIVER_VERSION")
_NA = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]"}

T = TypeVar("T")


class Probe:
    """What one detection method found (mutable while it is being built)."""

    # A plain class: a @dataclass costs ~2 ms to create on 3.11, on every `doctor check`.
    __slots__ = ("source", "driver_version", "cuda_driver_version", "gpus", "notes")

    def __init__(self, source: str, driver_version: Optional[str] = None, cuda_driver_version: Optional[str] = None,
                 gpus: Optional[List[GPU]] = None, notes: Optional[List[str]] = None) -> None:
        self.source = source
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.gpus: List[GPU] = list(gpus) if gpus else []
        self.notes: List[str] = list(notes) if notes else []

    def __repr__(self) -> str:
        return f"Probe({self.source!r}, driver={self.driver_version!r}, gpus={self.gpus!r}, notes={self.notes!r})"

    @property
    def complete(self) -> bool:
        """A driver and at least one GPU, every GPU with compute capability and memory."""
        return bool(
            self.driver_version
            and self.gpus
            and all(g.compute_capability is not None and g.memory_mib is not None for g in self.gpus)
        )


def detect_hardware(
    environ: Optional[Mapping[str, str]] = None,
    *,
    timeout: float = 3.0,
    sys_root: Optional[str] = "/sys",
    proc_root: Optional[str] = "/proc",
    nvidia_smi: Optional[Union[str, Sequence[str]]] = "nvidia-smi",
    nvml_library: Optional[str] = NVML_LIBRARY,
    use_pynvml: bool = True,
) -> Hardware:
    """GPUs and driver by override, NVML, sysfs/procfs, then nvidia-smi; None-valued args skip a method."""
    environ = os.environ if environ is None else environ
    extra_notes: List[str] = []
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        extra_notes.append(
            f"CUDA_VISIBLE_DEVICES={cvd!r}: processes see only those GPUs; all physical GPUs are listed here"
        )
    override = hardware_from_override(environ)
    if override is not None:
        return Hardware(
            gpus=override.gpus,
            driver_version=override.driver_version,
            cuda_driver_version=override.cuda_driver_version,
            source=override.source,
            notes=override.notes + tuple(extra_notes),
        )

    deadline = time.monotonic() + max(timeout, 0.0)
    probes: List[Probe] = []
    if nvml_library == NVML_LIBRARY and not nvidia_device_present():
        # No device node, no driver to talk to: skip loading ctypes + NVML (a CPU box's whole check is faster).
        extra_notes.append("nvml: skipped, no NVIDIA device node (/dev/nvidiactl, /dev/nvidia0, /dev/dxg, /proc/driver/nvidia)")
    elif nvml_library is not None:
        nvml = probe_nvml(timeout, library=nvml_library, use_pynvml=use_pynvml)
        probes.append(nvml)
        if nvml.complete:
            return combine(probes, extra_notes)
    if sys_root is not None:
        probes.append(read_sysfs(sys_root))
    if proc_root is not None:
        probes.append(read_procfs(proc_root))
    if nvidia_smi is not None:
        remaining = deadline - time.monotonic()
        if remaining > 0.05:
            probes.append(query_nvidia_smi(nvidia_smi, timeout=remaining, environ=environ))
        else:
            extra_notes.append(f"nvidia-smi: skipped, the {timeout:g} s GPU probe budget was used up")
    return combine(probes, extra_notes)


DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/proc/driver/nvidia")


def nvidia_device_present(nodes: Sequence[str] = DEVICE_NODES) -> bool:
    """Whether any NVIDIA (or WSL GPU) device node exists; NVML cannot answer without one."""
    return any(os.path.exists(n) for n in nodes)


# --- 1. override -------------------------------------------------------------------------


def hardware_from_override(environ: Mapping[str, str]) -> Optional[Hardware]:
    """Hardware from DOCTOR_GPUS / DOCTOR_DRIVER_VERSION / DOCTOR_CUDA_DRIVER_VERSION, or None when unset."""
    values = {name: (environ.get(name) or "").strip() for name in _OVERRIDE_VARS}
    if not any(values.values()):
        return None
    gpus = parse_gpu_override(values["DOCTOR_GPUS"]) if values["DOCTOR_GPUS"] else ()
    driver = values["DOCTOR_DRIVER_VERSION"] or None
    if driver is not None and not _DRIVER_RE.match(driver):
        raise DoctorError(
            f"DOCTOR_DRIVER_VERSION={_short(driver)} is not a driver version like 535.104.05"
        )
    cuda = values["DOCTOR_CUDA_DRIVER_VERSION"] or None
    if cuda is not None and not _CUDA_RE.match(cuda):
        raise DoctorError(f"DOCTOR_CUDA_DRIVER_VERSION={_short(cuda)} is not a CUDA version like 12.2")
    set_vars = ", ".join(name for name in _OVERRIDE_VARS if values[name])
    return Hardware(
        gpus=gpus,
        driver_version=driver,
        cuda_driver_version=cuda,
        source="override",
        notes=(f"GPU facts taken from {set_vars}; nothing was probed",),
    )


def parse_gpu_override(value: str) -> Tuple[GPU, ...]:
    """Parse DOCTOR_GPUS ("NAME@CC[@MEM_MIB],..." or "none"); raises DoctorError when malformed."""
    if value.strip().lower() == "none":
        return ()
    gpus = []
    for index, item in enumerate(value.split(",")):
        parts = [p.strip() for p in item.split("@")]
        problem = None
        if len(parts) not in (2, 3):
            problem = "is not NAME@CC[@MEM_MIB]"
        elif not parts[0]:
            problem = "has an empty name"
        elif parts[1] != "?" and not _CC_RE.match(parts[1]):
            problem = f"has compute capability {parts[1]!r}, expected MAJOR.MINOR like 8.0, or ?"
        elif len(parts) == 3 and parts[2] != "?" and not (re.fullmatch(r"[0-9]+", parts[2]) and int(parts[2]) > 0):
            problem = f"has memory {parts[2]!r}, expected a whole number of MiB, or ?"
        if problem:
            raise DoctorError(
                f"DOCTOR_GPUS item {index + 1} {_short(item.strip())} {problem}"
                " (expected e.g. 'Tesla T4@7.5@15360,NVIDIA H100 80GB HBM3@9.0' or 'none')"
            )
        cc_match = _CC_RE.match(parts[1])
        cc = (int(cc_match.group(1)), int(cc_match.group(2))) if cc_match else None
        memory = int(parts[2]) if len(parts) == 3 and parts[2] != "?" else None
        gpus.append(GPU(index=index, name=parts[0], compute_capability=cc, memory_mib=memory))
    return tuple(gpus)


def _short(value: str, limit: int = 60) -> str:
    text = repr(value)  # repr keeps the message on one line whatever the value holds
    return text if len(text) <= limit else text[: limit - 4] + "...'"


# --- 2. NVML -----------------------------------------------------------------------------


class NvmlError(Exception):
    """An NVML call failed (the message names the call and NVML's reason)."""


class NvmlUnavailable(NvmlError):
    """The NVML library could not be loaded, or lacks a function we need."""


def probe_nvml(timeout: float, *, library: str = NVML_LIBRARY, use_pynvml: bool = True) -> Probe:
    """Query NVML in a daemon thread, giving up after `timeout` seconds; failures become notes."""

    def work() -> Probe:
        # ctypes first: importing pynvml costs ~70 ms where it has no .pyc (uv installs, or
        # PYTHONDONTWRITEBYTECODE), more than the whole NVML query; it would load the same library.
        try:
            return nvml_via_ctypes(library)
        except NvmlUnavailable as exc:
            if not use_pynvml:
                raise
            try:
                import pynvml  # type: ignore[import-not-found]
            except Exception:  # not installed, or a broken install
                raise exc from None
            probe = nvml_via_pynvml(pynvml)
            probe.notes.insert(0, f"nvml: {exc}; used pynvml instead")
            return probe

    finished, value, error = run_with_timeout(work, timeout, name="doctor-nvml")
    if not finished:
        return Probe("nvml", notes=[f"nvml: no answer within {timeout:g} s (driver hung?), gave up"])
    if error is not None:
        return Probe("nvml", notes=[f"nvml: {error}"])
    return value  # type: ignore[return-value]


def run_with_timeout(fn: Callable[[], T], timeout: float, *, name: str) -> Tuple[bool, Optional[T], Optional[str]]:
    """Run fn in a daemon thread: (finished, value, error text); an abandoned thread cannot block exit."""
    import threading

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported to the caller, never raised in the thread
            box["error"] = str(exc) if isinstance(exc, NvmlError) else f"{exc.__class__.__name__}: {exc}"

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if thread.is_alive():
        return False, None, None
    return True, box.get("value"), box.get("error")


def nvml_via_ctypes(library: str = NVML_LIBRARY) -> Probe:
    """Driver and GPUs through NVML's C API loaded with ctypes; raises NvmlError on failure."""
    import ctypes

    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise NvmlUnavailable(f"cannot load {library} ({exc})") from None

    def error_string(code: int) -> str:
        try:
            fn = lib.nvmlErrorString
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_int]
            text = fn(code)
            return text.decode("utf-8", "replace") if text else f"error {code}"
        except Exception:
            return f"error {code}"

    def call(name: str, *args: object) -> int:
        fn = getattr(lib, name, None)
        if fn is None:
            raise NvmlUnavailable(f"{library} has no {name}")
        fn.restype = ctypes.c_int
        return int(fn(*args))

    def check(name: str, *args: object) -> None:
        code = call(name, *args)
        if code != 0:
            raise NvmlError(f"{name} failed: {error_string(code)}")

    def text_of(name: str, handle: Optional[ctypes.c_void_p], size: int = 96) -> Optional[str]:
        buf = ctypes.create_string_buffer(size)
        args = ([handle] if handle is not None else []) + [buf, ctypes.c_uint(size)]
        if call(name, *args) != 0:
            return None
        return buf.value.decode("utf-8", "replace").strip() or None

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    init = "nvmlInit_v2" if hasattr(lib, "nvmlInit_v2") else "nvmlInit"
    check(init)
    probe = Probe("nvml")
    try:
        probe.driver_version = text_of("nvmlSystemGetDriverVersion", None, 80)
        cuda = ctypes.c_int(0)
        cuda_fn = "nvmlSystemGetCudaDriverVersion_v2"
        if not hasattr(lib, cuda_fn):
            cuda_fn = "nvmlSystemGetCudaDriverVersion"
        if hasattr(lib, cuda_fn) and call(cuda_fn, ctypes.byref(cuda)) == 0 and cuda.value > 0:
            probe.cuda_driver_version = format_cuda_version(cuda.value)
        count = ctypes.c_uint(0)
        check("nvmlDeviceGetCount_v2" if hasattr(lib, "nvmlDeviceGetCount_v2") else "nvmlDeviceGetCount", ctypes.byref(count))
        by_index = "nvmlDeviceGetHandleByIndex_v2" if hasattr(lib, "nvmlDeviceGetHandleByIndex_v2") else "nvmlDeviceGetHandleByIndex"
        for index in range(count.value):
            handle = ctypes.c_void_p()
            code = call(by_index, ctypes.c_uint(index), ctypes.byref(handle))
            if code != 0:
                probe.notes.append(f"nvml: GPU {index}: {by_index} failed: {error_string(code)}")
                probe.gpus.append(GPU(index=index, name="unknown"))
                continue
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            cc = None
            if call("nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor)) == 0:
                cc = (major.value, minor.value)
            memory = Memory()
            mem = None
            if call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory)) == 0:
                mem = int(memory.total // (1024 * 1024))
            probe.gpus.append(
                GPU(
                    index=index,
                    name=text_of("nvmlDeviceGetName", handle) or "unknown",
                    compute_capability=cc,
                    memory_mib=mem,
                    uuid=text_of("nvmlDeviceGetUUID", handle),
                )
            )
    finally:
        try:
            call("nvmlShutdown")
        except Exception:
            pass
    return probe


def nvml_via_pynvml(pynvml: object) -> Probe:
    """Driver and GPUs through the nvidia-ml-py module; NVML errors become NvmlError."""
    nv = pynvml
    nvml_error = getattr(nv, "NVMLError", Exception)

    def text(value: object) -> str:
        return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()

    def optional(fn: Callable[[], T]) -> Optional[T]:
        try:
            return fn()
        except nvml_error:
            return None

    try:
        nv.nvmlInit()  # type: ignore[attr-defined]
    except nvml_error as exc:
        raise NvmlError(f"nvmlInit failed: {exc}") from None
    probe = Probe("nvml")
    try:
        probe.driver_version = optional(lambda: text(nv.nvmlSystemGetDriverVersion()))  # type: ignore[attr-defined]
        getter = getattr(nv, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(nv, "nvmlSystemGetCudaDriverVersion", None)
        cuda = optional(getter) if getter else None
        if isinstance(cuda, int) and cuda > 0:
            probe.cuda_driver_version = format_cuda_version(cuda)
        try:
            count = int(nv.nvmlDeviceGetCount())  # type: ignore[attr-defined]
        except nvml_error as exc:
            raise NvmlError(f"nvmlDeviceGetCount failed: {exc}") from None
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
            except nvml_error as exc:
                probe.notes.append(f"nvml: GPU {index}: nvmlDeviceGetHandleByIndex failed: {exc}")
                probe.gpus.append(GPU(index=index, name="unknown"))
                continue
            cc = optional(lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))  # type: ignore[attr-defined]
            memory = optional(lambda: nv.nvmlDeviceGetMemoryInfo(handle))  # type: ignore[attr-defined]
            name = optional(lambda: text(nv.nvmlDeviceGetName(handle)))  # type: ignore[attr-defined]
            uuid = optional(lambda: text(nv.nvmlDeviceGetUUID(handle)))  # type: ignore[attr-defined]
            probe.gpus.append(
                GPU(
                    index=index,
                    name=name or "unknown",
                    compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
                    memory_mib=int(memory.total // (1024 * 1024)) if memory is not None else None,
                    uuid=uuid or None,
                )
            )
    finally:
        try:
            nv.nvmlShutdown()  # type: ignore[attr-defined]
        except Exception:
            pass
    return probe


def format_cuda_version(value: int) -> str:
    """NVML's integer CUDA version (12020) as "12.2"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


# --- 3. sysfs / procfs -------------------------------------------------------------------


def read_sysfs(sys_root: str = "/sys") -> Probe:
    """Driver version of the loaded nvidia kernel module from <sys_root>/module/nvidia/version."""
    probe = Probe("sysfs")
    path = os.path.join(sys_root, "module", "nvidia", "version")
    text, err = read_text(path, limit=4096)
    if text is None:
        probe.notes.append(f"sysfs: {path} {err or 'absent'} (nvidia kernel module not loaded or not visible)")
        return probe
    version = text.strip()
    if _DRIVER_RE.match(version):
        probe.driver_version = version
    else:
        probe.notes.append(f"sysfs: {path} holds {_short(version)}, not a driver version")
    return probe


def read_procfs(proc_root: str = "/proc") -> Probe:
    """Driver version from <proc_root>/driver/nvidia/version and GPU names from .../gpus/*/information."""
    probe = Probe("procfs")
    base = os.path.join(proc_root, "driver", "nvidia")
    text, err = read_text(os.path.join(base, "version"), limit=64 * 1024)
    if text is None:
        probe.notes.append(f"procfs: {os.path.join(base, 'version')} {err or 'absent'}")
    else:
        match = _PROC_VERSION_RE.search(text)
        if match:
            probe.driver_version = match.group(1)
        else:
            first = text.strip().splitlines()[0] if text.strip() else ""
            probe.notes.append(f"procfs: no driver version in {os.path.join(base, 'version')}: {_short(first)}")
    gpus_dir = os.path.join(base, "gpus")
    try:
        bus_ids = sorted(os.listdir(gpus_dir))  # PCI bus order, which is also nvidia-smi's order
    except FileNotFoundError:
        return probe
    except OSError as exc:
        probe.notes.append(f"procfs: cannot list {gpus_dir}: {describe_os_error(exc)}")
        return probe
    for index, bus_id in enumerate(bus_ids):
        info, err = read_text(os.path.join(gpus_dir, bus_id, "information"), limit=64 * 1024)
        fields = {}
        for line in (info or "").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if info is None:
            probe.notes.append(f"procfs: GPU {bus_id}: information {err or 'absent'}")
        name = fields.get("model") or "unknown"
        uuid = fields.get("gpu uuid")
        probe.gpus.append(GPU(index=index, name=name, uuid=uuid if uuid and uuid.lower() not in _NA else None))
    return probe


# --- 4. nvidia-smi -----------------------------------------------------------------------


def query_nvidia_smi(
    command: Union[str, Sequence[str]] = "nvidia-smi",
    *,
    timeout: float = 3.0,
    environ: Optional[Mapping[str, str]] = None,
) -> Probe:
    """Run `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` with a timeout; failures are notes."""
    import shutil
    import subprocess

    probe = Probe("nvidia-smi")
    environ = os.environ if environ is None else environ
    if isinstance(command, str):
        resolved = shutil.which(command, path=environ.get("PATH", os.defpath))
        if resolved is None:
            probe.notes.append(f"nvidia-smi: {command!r} not found on PATH")
            return probe
        argv = [resolved]
    else:
        argv = list(command)
    deadline = time.monotonic() + timeout
    for query in (SMI_QUERY, SMI_QUERY_OLD):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            probe.notes.append(f"nvidia-smi: no time left for the query {query!r}")
            return probe
        try:
            code, out, err = run_command(argv + [f"--query-gpu={query}", "--format=csv,noheader,nounits"], remaining)
        except subprocess.TimeoutExpired:
            probe.notes.append(f"nvidia-smi: no answer within {timeout:.1f} s, killed")
            return probe
        except OSError as exc:
            probe.notes.append(f"nvidia-smi: cannot run {argv[0]!r}: {describe_os_error(exc)}")
            return probe
        if code != 0:
            said = _last_line(out + "\n" + err)
            if query == SMI_QUERY and "compute_cap" in (out + err):
                continue  # old driver: ask again without compute_cap
            probe.notes.append(f"nvidia-smi: exited with status {code}: {_short(said, 120)}")
            return probe
        parse_smi_output(out, query, probe)
        if not probe.gpus and not probe.notes:
            probe.notes.append("nvidia-smi: ran but listed no GPU")
        return probe
    return probe


def parse_smi_output(out: str, query: str, probe: Probe) -> None:
    """Fill `probe` from nvidia-smi CSV rows for `query`; rows that do not parse become one note."""
    columns = query.split(",")
    bad: List[str] = []
    for line in out.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < len(columns):
            bad.append(line)
            continue
        # A GPU name could hold a comma: everything between index and the fixed tail is the name.
        tail = len(columns) - 2
        row = dict(zip(columns, [cells[0], ", ".join(cells[1 : len(cells) - tail])] + cells[len(cells) - tail :]))
        try:
            index = int(row["index"])
        except ValueError:
            bad.append(line)
            continue
        cc = None
        cc_match = _CC_RE.match(row.get("compute_cap", ""))
        if cc_match:
            cc = (int(cc_match.group(1)), int(cc_match.group(2)))
        memory = row.get("memory.total", "")
        driver = row.get("driver_version", "")
        if driver and _DRIVER_RE.match(driver) and probe.driver_version is None:
            probe.driver_version = driver
        uuid = row.get("uuid", "")
        probe.gpus.append(
            GPU(
                index=index,
                name=row["name"] or "unknown",
                compute_capability=cc,
                memory_mib=int(memory) if re.fullmatch(r"[0-9]+", memory) else None,
                uuid=uuid if uuid.lower() not in _NA else None,
            )
        )
    if bad:
        probe.notes.append(f"nvidia-smi: {len(bad)} line(s) of unexpected output, e.g. {_short(bad[0], 100)}")


def run_command(argv: Sequence[str], timeout: float) -> Tuple[int, str, str]:
    """(exit code, stdout, stderr) of argv, no shell; on timeout its whole process group is killed and TimeoutExpired raised."""
    import subprocess

    posix = os.name == "posix"
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=posix,  # own process group, so children that hold our pipes die with it
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            proc.communicate(timeout=0.5)
        except subprocess.TimeoutExpired:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        raise
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _kill_group(proc: "object") -> None:
    import signal

    pid = getattr(proc, "pid", None)
    if os.name == "posix" and pid:
        try:
            os.killpg(pid, signal.SIGKILL)  # the group we created for this child alone
        except OSError:
            pass
    try:
        proc.kill()  # type: ignore[attr-defined]
    except OSError:
        pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- combining ---------------------------------------------------------------------------


def combine(probes: Sequence[Probe], extra_notes: Sequence[str] = ()) -> Hardware:
    """One Hardware from the probes in detection order: first driver wins, later probes fill GPU gaps."""
    notes: List[str] = []
    for probe in probes:
        notes.extend(probe.notes)
    with_driver = [p for p in probes if p.driver_version]
    drivers = {p.driver_version for p in with_driver}
    if len(drivers) > 1:
        notes.append(
            "driver versions disagree: "
            + ", ".join(f"{p.driver_version} ({p.source})" for p in with_driver)
            + " (driver upgraded without a reboot?)"
        )
    with_gpus = [p for p in probes if p.gpus]
    source = with_driver[0].source if with_driver else (with_gpus[0].source if with_gpus else "none")
    cuda = next((p.cuda_driver_version for p in probes if p.cuda_driver_version), None)
    gpus: List[GPU] = []
    if with_gpus:
        gpus = list(with_gpus[0].gpus)
        for other in with_gpus[1:]:
            gpus = [_fill(gpu, _match(gpu, gpus, other.gpus)) for gpu in gpus]
    notes.extend(extra_notes)
    return Hardware(
        gpus=tuple(gpus),
        driver_version=with_driver[0].driver_version if with_driver else None,
        cuda_driver_version=cuda,
        source=source,
        notes=tuple(notes),
    )


def _match(gpu: GPU, ours: Sequence[GPU], theirs: Sequence[GPU]) -> Optional[GPU]:
    """The same physical GPU in another probe's list: by UUID when both know it, else by index."""
    if gpu.uuid:
        for other in theirs:
            if other.uuid == gpu.uuid:
                return other
        if any(o.uuid for o in theirs):
            return None
    if len(ours) == len(theirs):
        for other in theirs:
            if other.index == gpu.index:
                return other
    return None


def _fill(gpu: GPU, other: Optional[GPU]) -> GPU:
    if other is None:
        return gpu
    return GPU(
        index=gpu.index,
        name=gpu.name if gpu.name and gpu.name != "unknown" else other.name,
        compute_capability=gpu.compute_capability or other.compute_capability,
        memory_mib=gpu.memory_mib if gpu.memory_mib is not None else other.memory_mib,
        uuid=gpu.uuid or other.uuid,
    )
