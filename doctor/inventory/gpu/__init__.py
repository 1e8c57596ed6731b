"""GPUs and the NVIDIA driver without torch, one module per source (as uv's uv-torch accelerator.rs).

detect       the order (override -> NVML -> sysfs -> procfs -> nvidia-smi), the time budget, combining
override     DOCTOR_GPUS / DOCTOR_DRIVER_VERSION / DOCTOR_CUDA_DRIVER_VERSION
nvml         libnvidia-ml through ctypes, or pynvml
sysfs        /sys/module/nvidia/version
procfs       /proc/driver/nvidia
nvidia_smi   `nvidia-smi --query-gpu` with a timeout
detection    what one source found (Detection) and the value checks they share
"""
