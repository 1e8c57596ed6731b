"""The bundled training runtime: patch a Hugging Face causal LM of the Llama family onto the ops the doctor proved.

    import doctor.runtime
    model = doctor.runtime.patch(model)                 # this model only (returns it)
    model = doctor.runtime.patch(model, skip=("attention",))
    doctor.runtime.patch_llama_family()                 # the classes: every model built later is patched
    doctor.runtime.is_active()                          # the class-level patches are in force

Each op (RMSNorm, RoPE, the MLP activation, LM head + loss, attention) runs the backend the dispatcher
chose from this environment's probe verdicts (doctor.dispatch); see doctor.runtime.patch for the rules.
Importing this package imports neither torch nor transformers: they load when a function is called.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable, Optional, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    import torch

M = TypeVar("M", bound="torch.nn.Module")


def patch(model: M, skip: Optional[Iterable[str]] = (), seq_len: Optional[int] = None) -> M:
    """Patch this model instance's ops onto the dispatcher's backends (minus `skip`); returns the model.

    seq_len: the sequence length it will train at (the attention probe's shape; default min(max positions, 2048)).
    """
    from doctor.runtime.patching import patch_model

    out: M = patch_model(model, skip, seq_len)
    return out


def patch_llama_family(skip: Optional[Iterable[str]] = ()) -> None:
    """Patch the Llama-family classes of transformers, so models built later run the chosen backends."""
    from doctor.runtime.patching import patch_classes

    patch_classes(skip)


def is_active() -> bool:
    """Whether the class-level patches (patch_llama_family) are in force in this process."""
    mod = sys.modules.get("doctor.runtime.patching")  # never loaded: nothing can have been patched
    return bool(mod is not None and mod.classes_patched())


__all__ = ["is_active", "patch", "patch_llama_family"]
