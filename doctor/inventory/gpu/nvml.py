"""GPUs and driver through NVML: ctypes on libnvidia-ml.so.1 first, the pynvml module when that cannot load.

ctypes first: importing pynvml alone took 73 ms on an H100 box without .pyc files, the whole ctypes
query 23 ms, and pynvml would load the same library. The query runs in a daemon thread joined with
the timeout (doctor._util.timeouts), so a hung driver cannot freeze the doctor. Without a device
node there is no driver to talk to, and the library is not even loaded.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, TypeVar

from doctor._util.timeouts import TimedOut, call_with_timeout
from doctor.facts import GPU
from doctor.inventory.gpu.detection import Detection

NVML_LIBRARY = "libnvidia-ml.so.1"
DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/proc/driver/nvidia")

T = TypeVar("T")


class NvmlError(Exception):
    """An NVML call failed (the message names the call and NVML's reason)."""


class NvmlUnavailable(NvmlError):
    """The NVML library could not be loaded, or lacks a function we need."""


def nvidia_device_present(nodes: Sequence[str] = DEVICE_NODES) -> bool:
    """Whether any NVIDIA (or WSL GPU) device node exists; NVML cannot answer without one."""
    return any(os.path.exists(n) for n in nodes)


def detect_nvml(timeout: float, *, library: str = NVML_LIBRARY, use_pynvml: bool = True) -> Detection:
    """Query NVML in a daemon thread, giving up after `timeout` seconds; failures become notes."""

    def work() -> Detection:
        try:
            return nvml_via_ctypes(library)
        except NvmlUnavailable as exc:
            if not use_pynvml:
                raise
            try:
                import pynvml  # type: ignore[import-not-found]
            except Exception:  # not installed, or a broken install
                raise exc from None
            found = nvml_via_pynvml(pynvml)
            found.notes.insert(0, f"nvml: {exc}; used pynvml instead")
            return found

    try:
        return call_with_timeout(work, timeout, name="doctor-nvml")
    except TimedOut:
        return Detection("nvml", notes=[f"nvml: no answer within {timeout:g} s (driver hung?), gave up"])
    except NvmlError as exc:
        return Detection("nvml", notes=[f"nvml: {exc}"])
    except (Exception, SystemExit) as exc:  # a driver library or pynvml can fail in any way: a note, never a crash
        return Detection("nvml", notes=[f"nvml: {exc.__class__.__name__}: {exc}"])


def nvml_via_ctypes(library: str = NVML_LIBRARY) -> Detection:
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
    found = Detection("nvml")
    try:
        found.driver_version = text_of("nvmlSystemGetDriverVersion", None, 80)
        cuda = ctypes.c_int(0)
        cuda_fn = "nvmlSystemGetCudaDriverVersion_v2"
        if not hasattr(lib, cuda_fn):
            cuda_fn = "nvmlSystemGetCudaDriverVersion"
        if hasattr(lib, cuda_fn) and call(cuda_fn, ctypes.byref(cuda)) == 0 and cuda.value > 0:
            found.cuda_driver_version = format_cuda_version(cuda.value)
        count = ctypes.c_uint(0)
        check("nvmlDeviceGetCount_v2" if hasattr(lib, "nvmlDeviceGetCount_v2") else "nvmlDeviceGetCount", ctypes.byref(count))
        by_index = "nvmlDeviceGetHandleByIndex_v2" if hasattr(lib, "nvmlDeviceGetHandleByIndex_v2") else "nvmlDeviceGetHandleByIndex"
        for index in range(count.value):
            handle = ctypes.c_void_p()
            code = call(by_index, ctypes.c_uint(index), ctypes.byref(handle))
            if code != 0:
                found.notes.append(f"nvml: GPU {index}: {by_index} failed: {error_string(code)}")
                found.gpus.append(GPU(index=index, name="unknown"))
                continue
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            cc = None
            if call("nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor)) == 0:
                cc = (major.value, minor.value)
            memory = Memory()
            mem = None
            if call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory)) == 0:
                mem = int(memory.total // (1024 * 1024))
            found.gpus.append(
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
    return found


def nvml_via_pynvml(pynvml: object) -> Detection:
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
    found = Detection("nvml")
    try:
        found.driver_version = optional(lambda: text(nv.nvmlSystemGetDriverVersion()))  # type: ignore[attr-defined]
        getter = getattr(nv, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(nv, "nvmlSystemGetCudaDriverVersion", None)
        cuda = optional(getter) if getter else None
        if isinstance(cuda, int) and cuda > 0:
            found.cuda_driver_version = format_cuda_version(cuda)
        try:
            count = int(nv.nvmlDeviceGetCount())  # type: ignore[attr-defined]
        except nvml_error as exc:
            raise NvmlError(f"nvmlDeviceGetCount failed: {exc}") from None
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
            except nvml_error as exc:
                found.notes.append(f"nvml: GPU {index}: nvmlDeviceGetHandleByIndex failed: {exc}")
                found.gpus.append(GPU(index=index, name="unknown"))
                continue
            cc = optional(lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))  # type: ignore[attr-defined]
            memory = optional(lambda: nv.nvmlDeviceGetMemoryInfo(handle))  # type: ignore[attr-defined]
            name = optional(lambda: text(nv.nvmlDeviceGetName(handle)))  # type: ignore[attr-defined]
            uuid = optional(lambda: text(nv.nvmlDeviceGetUUID(handle)))  # type: ignore[attr-defined]
            found.gpus.append(
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
    return found


def format_cuda_version(value: int) -> str:
    """NVML's integer CUDA version (12020) as "12.2"."""
    return f"{value // 1000}.{(value % 1000) // 10}"
