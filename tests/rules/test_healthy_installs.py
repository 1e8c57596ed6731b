"""Healthy default installs give no warning from the stack rules: a warning means the user should act.

A fresh unsloth install on a T4 (no bf16: fp16 is the way, not a fault) and HF + peft on an A100 and a T4.
The worlds are real dist-infos (the real unsloth and unsloth_zoo wheels, small stand-ins for the rest with
the versions a resolver picks). The compiled-cache findings belong to doctor.cache and its tests.
"""

from __future__ import annotations

import sys
from typing import List, Tuple

import pytest

from doctor.findings import Severity
from tests.conftest import Env, one
from tests.rules.bnb_files import bnb_files

T4 = "Tesla T4@7.5@15360"
A100 = "NVIDIA A100-SXM4-80GB@8.0@81920"
DRIVER = "580.159.04"
LINUX = "platform_system == 'Linux' and platform_machine == 'x86_64'"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}"


def _loud(report, *, skip_prefix: Tuple[str, ...] = ("cache.",)) -> List[Tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(id, title) of every warning or error outside the given prefixes."""
    return [(f.id, f.title) for f in report.findings if f.severity >= Severity.WARN and not f.id.startswith(skip_prefix)]


def _hf_stack(env: Env, torch: str, cuda: str, triton: str) -> Env:
    """torch (CUDA) with its triton, transformers, peft, accelerate: what `pip install transformers peft accelerate` leaves."""
    env.torch(torch, cuda, [f"triton=={triton}; {LINUX}"]).wheel("triton", triton)
    env.wheel("transformers", "4.49.0", ["numpy>=1.17", "huggingface-hub<1.0,>=0.26.0", "safetensors>=0.4.1"])
    env.wheel("peft", "0.14.0", ["transformers", "accelerate>=0.21.0", "torch>=1.13.0", "safetensors"])
    env.wheel("accelerate", "1.4.0", ["numpy<3.0.0,>=1.17", "torch>=2.0.0", "huggingface-hub>=0.21.0", "safetensors>=0.4.3"])
    for name, version in (("numpy", "2.2.3"), ("huggingface-hub", "0.29.1"), ("safetensors", "0.5.3")):
        env.wheel(name, version)
    return env


@pytest.mark.parametrize("gpu", [A100, T4])
def test_hf_peft_default_install_has_nothing_to_act_on(env: Env, gpu: str) -> None:
    """HF + peft on a cu124 torch: no warning on an A100, nor on a T4 (no bf16 is info, with fp16 as the way)."""
    report = _hf_stack(env, "2.6.0+cu124", "12.4", "3.2.0").check(gpus=gpu, driver=DRIVER)
    assert _loud(report, skip_prefix=()) == []
    assert report.exit_code == 0
    if gpu == T4:
        assert one(report, "gpu.no-bf16").severity is Severity.INFO


@pytest.mark.slow
def test_fresh_unsloth_on_t4_no_stack_rule_warns(env: Env, real_wheels) -> None:  # type: ignore[no-untyped-def]
    """unsloth 2025.3.14 with the unsloth_zoo it names (2025.3.11), torch 2.6.0+cu124, the xformers built for it,
    a bitsandbytes that supports it, and every other requirement present: no stack rule warns on a T4."""
    env.install([real_wheels["unsloth==2025.3.14"], real_wheels["unsloth_zoo==2025.3.11"]])
    _hf_stack(env, "2.6.0+cu124", "12.4", "3.2.0")
    cpp = ('{"version": {"cuda": 1204, "hip": null, "torch": "2.6.0+cu124", "python": "%s"},'
           ' "env": {"TORCH_CUDA_ARCH_LIST": "6.0 7.0 7.5 8.0 8.6 9.0"}}' % PY)
    env.wheel("xformers", "0.0.29.post3", ["numpy", "torch==2.6.0"], {"xformers/__init__.py": "", "xformers/cpp_lib.json": cpp})
    # the stand-in carries the real 0.45.3 wheel's library files (empty): the doctor lists what bitsandbytes can load
    env.wheel("bitsandbytes", "0.45.3", ["torch<3,>=2.0", "numpy>=1.17"], bnb_files("0.45.3"))
    env.wheel("trl", "0.15.2", ["accelerate>=0.34.0", "datasets>=2.21.0", "rich", "transformers>=4.46.0"])
    for name, version in (("torchvision", "0.21.0+cu124"), ("packaging", "24.2"), ("tyro", "0.9.16"), ("datasets", "3.3.2"),
                          ("sentencepiece", "0.2.0"), ("tqdm", "4.67.1"), ("psutil", "7.0.0"), ("wheel", "0.45.1"),
                          ("protobuf", "3.20.3"), ("hf-transfer", "0.1.9"), ("diffusers", "0.32.2"),
                          ("cut-cross-entropy", "25.1.1"), ("pillow", "11.1.0"), ("regex", "2024.11.6"), ("rich", "13.9.4")):
        env.wheel(name, version)
    report = env.check(gpus=T4, driver=DRIVER)
    assert _loud(report) == []
    assert one(report, "gpu.no-bf16").severity is Severity.INFO
    assert one(report, "xformers.binary").severity is Severity.OK
    assert one(report, "bitsandbytes.torch").severity is Severity.OK
    assert one(report, "bitsandbytes.cuda-library").title.endswith("loads libbitsandbytes_cuda124.so for torch's CUDA 12.4")
    assert "unsloth.zoo-skew" not in {f.id for f in report.findings}
