"""The knowledge: which libraries patch others while they are imported, and what must come after them."""

from __future__ import annotations

from typing import Mapping, NamedTuple, Tuple


class Patcher(NamedTuple):
    """A library that patches other libraries' classes while it is being imported."""

    name: str  # top-level import name
    patches: Tuple[str, ...]  # top-level names it must be imported before
    markers: Tuple[str, ...]  # packages whose submodules only load during this patcher's import
    why: str  # one clause for the explanation: what it patches and when


# Data: import-time patchers and the libraries they must precede.
IMPORT_TIME_PATCHERS: Tuple[Patcher, ...] = (
    Patcher(
        name="unsloth",
        patches=("transformers", "trl", "peft"),
        markers=("unsloth", "unsloth_zoo"),
        # unsloth replaces transformers/trl/peft classes and functions while it is imported; names a
        # program bound earlier (`from trl import SFTTrainer`) keep the unpatched objects. It checks
        # sys.modules for ['trl', 'transformers', 'peft'] itself and warns
        # "Unsloth should be imported before ...".
        why="unsloth patches transformers, trl and peft classes when it is imported",
    ),
)

# Deliberately NOT import-order rules, with the reason (kept next to the data so nobody adds them back
# by guess):
NOT_IMPORT_ORDER_SENSITIVE: Mapping[str, str] = {
    # liger_kernel.transformers.monkey_patch does `import transformers` at its own top, and Liger's
    # docs show `import transformers` before `from liger_kernel.transformers import ...`. Importing
    # liger patches nothing: `apply_liger_kernel_to_<model>()` swaps module attributes
    # (modeling_llama.LlamaRMSNorm = LigerRMSNorm, ...) when CALLED, which affects models built
    # afterwards, and with `model=` it also patches an existing instance. What matters is the call
    # coming before model construction, which import order cannot tell (doctor.rules.import_order.liger
    # checks the call order in scripts).
    "liger_kernel": "patches when apply_liger_kernel_to_*() is called, not when imported",
}
