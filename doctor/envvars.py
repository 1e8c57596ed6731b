"""Every environment variable the doctor reads or sets, named once (as uv's `EnvVars` does).

Code spells a variable through these constants, never as a string literal, so `grep` finds every
reader and the README can be checked against one list. Grouped by who owns the variable.
"""

from __future__ import annotations

from typing import Tuple

# --- the doctor's own ------------------------------------------------------------------------------
DOCTOR_PREFIX = "DOCTOR_"  # every variable the doctor owns starts so; all are shown in the report's facts
DOCTOR_GPUS = "DOCTOR_GPUS"  # simulated GPUs, NAME@CC[@MEM_MIB][@UUID],... or "none": replaces detection
DOCTOR_DRIVER_VERSION = "DOCTOR_DRIVER_VERSION"  # simulated NVIDIA driver version (replaces detection)
DOCTOR_CUDA_DRIVER_VERSION = "DOCTOR_CUDA_DRIVER_VERSION"  # simulated highest CUDA the driver supports
DOCTOR_CACHE_DIR = "DOCTOR_CACHE_DIR"  # the doctor's own cache (probe verdicts, compiled checks)
DOCTOR_STATE_DIR = "DOCTOR_STATE_DIR"  # the doctor's state: what each applied plan changed (for --undo)
DOCTOR_MATRIX_DIR = "DOCTOR_MATRIX_DIR"  # another copy of the compatibility data (compat_matrix/data)
DOCTOR_RUNTIME_PROBES = "DOCTOR_RUNTIME_PROBES"  # "0": doctor.runtime runs no probes (cached verdicts, else references)
DOCTOR_BACKEND_PREFIX = "DOCTOR_BACKEND_"  # DOCTOR_BACKEND_<OP>=<backend> forces the dispatcher's choice
DOCTOR_INDEX_URL = "DOCTOR_INDEX_URL"  # the package index plans draw from (default: pip's configuration)
DOCTOR_TORCH_INDEX_URL = "DOCTOR_TORCH_INDEX_URL"  # base of PyTorch's per-CUDA-family indexes (<base>/cu121)
DOCTOR_SERVICE_URL = "DOCTOR_SERVICE_URL"  # check/pin/install ask this resolution service (--service URL)
DOCTOR_SERVICE_TOKEN_FILE = "DOCTOR_SERVICE_TOKEN_FILE"  # a file with the bearer token the client sends (a file, not
# the token: every DOCTOR_* value is shown in the report's facts)
DOCTOR_SERVE_SETTINGS = "DOCTOR_SERVE_SETTINGS"  # set by `doctor serve` for its uvicorn workers (JSON settings)
DOCTOR_EVENT_FD = "DOCTOR_EVENT_FD"  # set for a child (probe, cache verify): the fd of its JSON-lines event channel

# --- output (read by rich, named here so the README and tests use one spelling) ----------------------
NO_COLOR = "NO_COLOR"  # any value: no colour (https://no-color.org)
COLUMNS = "COLUMNS"  # terminal width rich uses when it cannot ask the terminal

# --- GPUs --------------------------------------------------------------------------------------------
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"  # which GPUs CUDA shows; `doctor probe --gpu N` sets it for probes
CUDA_DEVICE_ORDER = "CUDA_DEVICE_ORDER"  # "PCI_BUS_ID": CUDA numbers GPUs as nvidia-smi does (default FASTEST_FIRST)

# --- compiled caches (each read the way its owner reads it) ------------------------------------------
UNSLOTH_COMPILE_LOCATION = "UNSLOTH_COMPILE_LOCATION"  # unsloth_zoo's compiled cache (default: cwd-relative)
UNSLOTH_LOCK_TIMEOUT = "UNSLOTH_LOCK_TIMEOUT"  # how long unsloth waits for its compile lock
TRITON_CACHE_DIR = "TRITON_CACHE_DIR"  # Triton's kernel cache
TRITON_HOME = "TRITON_HOME"  # Triton's home; the cache is $TRITON_HOME/.triton/cache
TRITON_INTERPRET = "TRITON_INTERPRET"  # "1": Triton's CPU interpreter (probe bodies read it)
TORCHINDUCTOR_CACHE_DIR = "TORCHINDUCTOR_CACHE_DIR"  # torch.compile's Inductor cache
XDG_CACHE_HOME = "XDG_CACHE_HOME"  # the user cache base directory (platformdirs)
XDG_CONFIG_HOME = "XDG_CONFIG_HOME"  # the user config base directory (pip reads pip.conf there)
XDG_CONFIG_DIRS = "XDG_CONFIG_DIRS"  # the system config directories (pip reads pip.conf there)
HOME = "HOME"

# --- which Python environment is active (it may not be the one the doctor runs in) -------------------
VIRTUAL_ENV = "VIRTUAL_ENV"  # set by a venv's activate script
CONDA_PREFIX = "CONDA_PREFIX"  # set by `conda activate`
ACTIVE_ENV_VARS: Tuple[str, ...] = (VIRTUAL_ENV, CONDA_PREFIX)  # in the order activation stacks them: venv on top

# --- what kind of machine (environment kinds) --------------------------------------------------------
COLAB_RELEASE_TAG = "COLAB_RELEASE_TAG"  # Google Colab
COLAB_GPU = "COLAB_GPU"  # Google Colab with a GPU runtime
KAGGLE_KERNEL_RUN_TYPE = "KAGGLE_KERNEL_RUN_TYPE"  # Kaggle notebooks
KAGGLE_URL_BASE = "KAGGLE_URL_BASE"  # Kaggle notebooks
KUBERNETES_SERVICE_HOST = "KUBERNETES_SERVICE_HOST"  # a Kubernetes pod (container)

# --- reported in the facts because they change how the stack behaves ---------------------------------
PYTORCH_CUDA_ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
BNB_CUDA_VERSION = "BNB_CUDA_VERSION"  # bitsandbytes: load libbitsandbytes_cudaXY.so instead of torch's CUDA
HF_HOME = "HF_HOME"

# --- pip and uv (the pin hook sets them; the planner neutralises some for its own pip runs) ----------
PIP_CONSTRAINT = "PIP_CONSTRAINT"  # pip's constraints file (a pin hook writes it)
PIP_BUILD_CONSTRAINT = "PIP_BUILD_CONSTRAINT"  # pip >= 26.2: constraints for build isolation
PIP_CONFIG_FILE = "PIP_CONFIG_FILE"  # one config file for pip; os.devnull: none at all
PIP_INDEX_URL = "PIP_INDEX_URL"
PIP_EXTRA_INDEX_URL = "PIP_EXTRA_INDEX_URL"
PIP_FIND_LINKS = "PIP_FIND_LINKS"
PIP_NO_INDEX = "PIP_NO_INDEX"
PIP_DISABLE_PIP_VERSION_CHECK = "PIP_DISABLE_PIP_VERSION_CHECK"
UV_CONSTRAINT = "UV_CONSTRAINT"  # uv never reads pip.conf: its own constraints variable
UV_BUILD_CONSTRAINT = "UV_BUILD_CONSTRAINT"
LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
CUDA_HOME = "CUDA_HOME"
PATH = "PATH"  # where nvidia-smi is looked up

# --- user name, as getpass.getuser() reads it (per-user cache directories) ---------------------------
USER_NAME_VARS: Tuple[str, ...] = ("LOGNAME", "USER", "LNAME", "USERNAME")

# --- torch.distributed and NCCL (the distributed probe sets or reports them) ----------------------------
MASTER_ADDR = "MASTER_ADDR"  # rendezvous host (torchrun sets it; the probe's launcher uses 127.0.0.1)
MASTER_PORT = "MASTER_PORT"  # rendezvous port (the launcher picks a free one)
RANK = "RANK"  # this process's global rank
WORLD_SIZE = "WORLD_SIZE"  # how many ranks in all
LOCAL_RANK = "LOCAL_RANK"  # rank on this node: the GPU index a rank uses
NCCL_P2P_DISABLE = "NCCL_P2P_DISABLE"  # "1": no peer-to-peer (NVLink/PCIe) transport: a common hang workaround
NCCL_IB_DISABLE = "NCCL_IB_DISABLE"  # "1": no InfiniBand transport
NCCL_SOCKET_IFNAME = "NCCL_SOCKET_IFNAME"  # which network interface NCCL's bootstrap and sockets use
NCCL_NVLS_ENABLE = "NCCL_NVLS_ENABLE"  # NVLink multicast (SHARP); the probe sets "0" unless the user set it
NCCL_DEBUG = "NCCL_DEBUG"  # "INFO"/"WARN": NCCL's own log (lands in a rank's stderr tail)
GLOO_SOCKET_IFNAME = "GLOO_SOCKET_IFNAME"  # which network interface gloo uses
TORCH_NCCL_ASYNC_ERROR_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"  # a timed-out collective aborts the rank
TORCH_NCCL_DUMP_ON_TIMEOUT = "TORCH_NCCL_DUMP_ON_TIMEOUT"  # "1": the flight recorder dumps on a timeout
TORCH_NCCL_TRACE_BUFFER_SIZE = "TORCH_NCCL_TRACE_BUFFER_SIZE"  # flight recorder entries kept (0: recorder off)
TORCH_NCCL_DEBUG_INFO_TEMP_FILE = "TORCH_NCCL_DEBUG_INFO_TEMP_FILE"  # dump file prefix; the rank is appended
DOCTOR_DIST_TEST_HANG_RANK = "DOCTOR_DIST_TEST_HANG_RANK"  # test hook: this rank of the distributed probe hangs
DOCTOR_DIST_TEST_DIE_RANK = "DOCTOR_DIST_TEST_DIE_RANK"  # test hook: this rank exits with code 7 after init
NCCL_SETTINGS: Tuple[str, ...] = (NCCL_P2P_DISABLE, NCCL_IB_DISABLE, NCCL_SOCKET_IFNAME, NCCL_NVLS_ENABLE, NCCL_DEBUG)

# --- set for child processes (probes, cache verify) --------------------------------------------------
PYTHONDONTWRITEBYTECODE = "PYTHONDONTWRITEBYTECODE"  # never leave __pycache__ in someone's cache
PYTHONFAULTHANDLER = "PYTHONFAULTHANDLER"  # a segfault prints the Python stack: evidence
PYTHONSTARTUP = "PYTHONSTARTUP"  # removed for children: a user's startup file must not run there
PYTHONUNBUFFERED = "PYTHONUNBUFFERED"  # children's output arrives line by line


def backend_var(op: str) -> str:
    """DOCTOR_BACKEND_ATTENTION for the op 'attention'."""
    return DOCTOR_BACKEND_PREFIX + op.upper()


def backend_op(name: str) -> str:
    """'cross_entropy' for DOCTOR_BACKEND_CROSS_ENTROPY (the inverse of backend_var)."""
    return name[len(DOCTOR_BACKEND_PREFIX):].lower()
