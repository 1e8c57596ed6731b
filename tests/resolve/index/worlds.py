"""What the local test index holds and what each scenario has installed (see WORLDS.md for the why).

WORLDS: per index, the `name==version` pins recorded from the real index; the recorder adds their
dependency closure. SCENARIOS: an installed world is `resolve` (resolved by pip's resolver against the
local index, so it is a consistent set) with `force` installed on top with --no-deps (the breakage), each
pin optionally prefixed by its index (`cu124:xformers==0.0.28.post3`). DERIVED: records for an index this
recorder could not reach, built from recorded PyPI records with stated changes (see the record's
`metadata_source`); the recorder fetches the real ones instead whenever that index answers.
"""

from __future__ import annotations

from typing import Dict, List

INDEX_URLS: Dict[str, str] = {
    "pypi": "https://pypi.org/simple",
    "cu121": "https://download.pytorch.org/whl/cu121",
    "cu124": "https://download.pytorch.org/whl/cu124",
}

_TORCH = ["torch==2.3.0", "torch==2.3.1", "torch==2.4.0", "torch==2.4.1", "torch==2.5.1"]
_TRITON = ["triton==2.3.0", "triton==2.3.1", "triton==3.0.0", "triton==3.1.0"]
_XFORMERS = [
    "xformers==0.0.26.post1",  # torch==2.3.0
    "xformers==0.0.27",  # torch==2.3.1
    "xformers==0.0.27.post1",  # torch==2.4.0
    "xformers==0.0.27.post2",  # torch==2.4.0
    "xformers==0.0.28.post1",  # torch==2.4.1
    "xformers==0.0.28.post3",  # torch==2.5.1 (built for 2.5.1+cu121)
]
_TRANSFORMERS = [
    "transformers==4.45.2",
    "transformers==4.46.0",
    "transformers==4.46.1",
    "transformers==4.46.2",
    "transformers==4.46.3",
    "transformers==4.47.0",
    "transformers==4.47.1",
    "transformers==4.48.0",
    "transformers==4.48.1",
    "transformers==4.48.2",
    "transformers==4.48.3",
    "transformers==4.51.3",
    "transformers==5.0.0",
]
# S3's stack as of late 2024 (trl 0.13.0 came out 2024-12-16).
_S3 = ["trl==0.13.0", "accelerate==1.2.1", "datasets==3.1.0", "huggingface-hub==0.26.5", "tokenizers==0.20.3", "safetensors==0.4.5"]
# S4's stack as of July 2025 (unsloth 2025.7.4).
_S4 = [
    "unsloth==2025.7.4",
    "unsloth-zoo==2025.7.4",
    "unsloth-zoo==2025.7.5",
    "protobuf==3.20.3",
    "protobuf==5.29.5",
    "torchvision==0.19.0",
    "datasets==3.6.0",
    "huggingface-hub==0.33.4",
    "tokenizers==0.21.1",
    "peft==0.16.0",
    "accelerate==1.8.1",
    "diffusers==0.34.0",
    "trl==0.19.1",
    "cut-cross-entropy==25.1.1",
]
_BNB = ["bitsandbytes==0.41.3.post2", "bitsandbytes==0.42.0", "bitsandbytes==0.43.3", "bitsandbytes==0.44.1", "bitsandbytes==0.45.5"]

WORLDS: Dict[str, List[str]] = {
    "pypi": _TORCH + _TRITON + _XFORMERS + ["unsloth==2024.8"] + _TRANSFORMERS + _S3 + _S4 + _BNB,
    "cu121": ["torch==2.5.1+cu121", "xformers==0.0.28.post3"],
    "cu124": ["torch==2.5.1+cu124", "xformers==0.0.28.post3"],
}

# index -> pin -> how to derive it from recorded PyPI records when the index cannot be reached.
DERIVED: Dict[str, Dict[str, Dict[str, object]]] = {
    "cu124": {
        "torch==2.5.1+cu124": {
            "from": "torch==2.5.1",
            "why": "PyPI's torch 2.5.1 is the cu124 build (its torch/version.py: 2.5.1+cu124, cuda 12.4; nvidia-* 12.4 pins); "
            "the cu124 index serves that build under the local version 2.5.1+cu124",
        },
        "xformers==0.0.28.post3": {
            "from": "xformers==0.0.28.post3",
            "cpp_lib": {"cuda": 1204, "torch": "2.5.1+cu124"},
            "why": "same release and Requires-Dist (torch==2.5.1) as on PyPI; the cu124 index's build is compiled for "
            "2.5.1+cu124 (cpp_lib.json cuda 1204), PyPI's for 2.5.1+cu121",
        },
    },
    "cu121": {
        "torch==2.5.1+cu121": {
            "from": "torch==2.5.1",
            "cuda": "12.1",
            "nvidia_from": "torch==2.4.1",
            "why": "PyPI's torch 2.5.1 metadata with the local version 2.5.1+cu121, cuda 12.1 in torch/version.py, and the "
            "CUDA 12.1 nvidia-* pins of PyPI's torch 2.4.1 (a cu121 build), nccl kept at 2.5.1's",
        },
        "xformers==0.0.28.post3": {
            "from": "xformers==0.0.28.post3",
            "why": "PyPI's xformers 0.0.28.post3 is itself the cu121 build (cpp_lib.json: torch 2.5.1+cu121, cuda 1201)",
        },
    },
}

SCENARIOS: Dict[str, Dict[str, object]] = {
    "S1": {
        "about": "torch 2.4.0 with an xformers and a triton built for / pinned to torch 2.3.0",
        "resolve": ["torch==2.4.0", "numpy"],
        "force": ["xformers==0.0.26.post1", "triton==2.3.0"],
    },
    "S2": {
        "about": "torch 2.3.1 + xformers 0.0.27 (metadata-consistent; the aten.to.dtype_layout dispatch failure)",
        "resolve": ["torch==2.3.1", "xformers==0.0.27"],
        "force": [],
    },
    "S2u": {
        "about": "S2 with unsloth 2024.8 installed (its colab-no-deps extra says xformers<0.0.27)",
        "resolve": ["torch==2.3.1", "xformers==0.0.27", "unsloth==2024.8"],
        "force": [],
    },
    "S3": {
        "about": "trl 0.13.0 (transformers>=4.46.0) installed next to transformers 4.45.2",
        "resolve": ["transformers==4.45.2", "huggingface-hub==0.26.5", "tokenizers==0.20.3", "accelerate==1.2.1", "datasets==3.1.0", "rich", "torch==2.4.0"],
        "force": ["trl==0.13.0"],
    },
    "S4": {
        "about": "unsloth 2025.7.4 (unsloth_zoo>=2025.7.5) with unsloth_zoo 2025.7.4 (protobuf<4.0.0) and protobuf 5.29.5",
        "resolve": [
            "unsloth==2025.7.4",
            "unsloth-zoo==2025.7.5",
            "protobuf==5.29.5",
            "torch==2.4.0",
            "xformers==0.0.27.post2",
            "torchvision==0.19.0",
            "transformers==4.51.3",
            "datasets==3.6.0",
            "huggingface-hub==0.33.4",
            "tokenizers==0.21.1",
            "peft==0.16.0",
            "accelerate==1.8.1",
            "diffusers==0.34.0",
            "trl==0.19.1",
            "bitsandbytes==0.45.5",
            "cut-cross-entropy==25.1.1",
        ],
        "force": ["unsloth-zoo==2025.7.4"],
    },
    "S5": {
        "about": "PyPI torch 2.5.1 (a cu124 build) with PyPI xformers 0.0.28.post3 (built for 2.5.1+cu121)",
        "resolve": ["torch==2.5.1", "xformers==0.0.28.post3"],
        "force": [],
    },
    "B1": {
        "about": "PyPI torch 2.5.1 (CUDA 12.4) with bitsandbytes 0.41.3.post2 (CUDA libraries up to 12.x below 12.4)",
        "resolve": ["torch==2.5.1", "bitsandbytes==0.41.3.post2"],
        "force": [],
    },
}
