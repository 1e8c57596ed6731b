"""`[train] parallel = "fsdp"`: the model sharded over the ranks with torch's FSDP2 (`fully_shard`).

For a model that does not fit one GPU: every decoder layer (the classes in the model's `_no_split_modules`,
as accelerate picks them) is its own FSDP unit and the peft model is the root, so a rank holds 1/N of the
weights and all-gathers one layer at a time. Frozen base weights and the trainable LoRA weights share a unit
(FSDP2 shards per parameter and reduces only gradients that exist); mixed dtypes (a bf16 base with fp32
LoRA weights, peft's default) are all-gathered as bytes by FSDP2 itself, and no mixed-precision policy is
set: autocast does the casting exactly as in the data-parallel path. Gradient checkpointing (non-reentrant)
composes with it: the recomputation all-gathers the layer again.

The loss math is the data-parallel path's (doctor.runtime.train.loop): a rank's micro-batches are weighted by
their targets over the WHOLE step's targets, so the sum of the ranks' gradients is the one-process gradient.
FSDP averages gradients over the ranks in its reduce-scatter, so the loss is scaled by the world size
before backward (default AVG reduction: it works on every backend; a custom divide factor needs PREMUL_SUM).

Two things FSDP needs that plain data parallelism does not:
- every rank runs the same number of forward/backward passes in a step (the all-gathers and reduce-scatters
  are in them): a rank with a short (or empty) share, or a micro-batch without targets, runs a stand-in
  micro-batch of the step at weight 0 (zero gradients, the same collectives) — see `passes`;
- the adapter and optimizer state are sharded: saving gathers the full tensors (collectives: every rank
  calls `full_adapter` / `full_optimizer_state`, rank 0 writes), in the format a single process writes,
  so the saved adapter loads in plain peft and a checkpoint resumes in either mode.

Loading: rank 0 alone reads the weights (into host memory); the other ranks build the same model on the meta
device (no memory), and after sharding rank 0's full state dict is broadcast tensor by tensor, each rank keeping
its shards (torch's set_model_state_dict, broadcast_from_rank0), then the buffers (rotary frequencies are not in
a state dict). The LoRA weights rank 0 initialised travel the same way, so every rank starts from them. Only
the trainable (LoRA) tensors are ever gathered whole again, never the base model.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping

from doctor.errors import DoctorError

ADAPTER_NAME = "default"  # peft's adapter name: in parameter names, not in the saved adapter's keys


def passes(micro_batches: int, world: int) -> int:
    """Forward/backward passes every rank runs in a step of `micro_batches` dealt to `world` ranks."""
    return max(1, math.ceil(micro_batches / world))


def decoder_layers(model: Any) -> List[Any]:
    """The model's decoder layers: the modules whose class the model names in `_no_split_modules`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise DoctorError(f"parallel = \"fsdp\": {type(base).__name__} names no decoder layer class "
                          f"(_no_split_modules) to shard by; use parallel = \"ddp\"")
    return layers


def shard(model: Any, world: int, cuda: bool, lead: bool) -> None:
    """Shard `model` (a peft model: loaded on the CPU in rank 0, on the meta device elsewhere) over the `world`
    ranks, each decoder layer a unit and the root last, and fill every rank's shards from rank 0's weights.

    fully_shard moves each unit's shards to this rank's device (torch.cuda.current_device(), set by join()),
    so the whole model never sits on one GPU (a collective: every rank calls it).
    """
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    full = model.state_dict() if lead else {}  # rank 0's CPU tensors (sharding moves the parameters, not these)
    mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full
    _broadcast_buffers(model, torch.device(f"cuda:{torch.cuda.current_device()}") if cuda else torch.device("cpu"))


def _broadcast_buffers(model: Any, device: Any) -> None:
    """Every buffer as rank 0 has it (a meta rank's are empty: rotary frequencies are computed at init, not loaded)."""
    import torch
    import torch.distributed as dist

    for name, buf in list(model.named_buffers()):  # the same order in every rank: the same modules
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        t = torch.empty(buf.shape, dtype=buf.dtype, device=device) if buf.is_meta else buf
        dist.broadcast(t, src=0)
        if buf.is_meta:
            owner.register_buffer(leaf, t, persistent=leaf not in owner._non_persistent_buffers_set)


def is_sharded(model: Any) -> bool:
    """Whether `model` is the root of an FSDP2 sharding (shard() ran on it)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _full(t: Any) -> Any:
    """A DTensor gathered whole (a collective) on the CPU; any other value as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor().cpu() if isinstance(t, DTensor) else t


def full_adapter(model: Any) -> Dict[str, Any]:
    """The trainable tensors whole, by parameter name (collective: every rank calls it, in the same order)."""
    return {name: _full(p.detach()) for name, p in model.named_parameters() if p.requires_grad}


def full_optimizer_state(optimizer: Any) -> Dict[str, Any]:
    """optimizer.state_dict() with every sharded tensor gathered whole: the single-process format (collective)."""
    sd = optimizer.state_dict()
    state = {i: {k: _full(v) for k, v in s.items()} for i, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def peft_key(name: str) -> str:
    """The saved adapter's key of a parameter name (peft drops the adapter name: lora_A.default.weight -> lora_A.weight)."""
    return name.replace(f".{ADAPTER_NAME}", "")


def load_adapter(model: Any, adapter: Mapping[str, Any]) -> None:
    """Copy a saved adapter (peft keys, whole tensors) into the sharded trainable parameters: each rank keeps its shard."""
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            key = peft_key(name)
            if key not in adapter:
                raise DoctorError(f"the checkpoint's adapter has no {key} (made with other [lora] settings?)")
            full = adapter[key].to(p.dtype)
            if isinstance(p, DTensor):
                p.to_local().copy_(distribute_tensor(full.to(p.device), p.device_mesh, p.placements).to_local())
            else:
                p.copy_(full)


def shard_optimizer_state(sd: Mapping[str, Any], params: List[Any]) -> Dict[str, Any]:
    """A single-process optimizer state dict with each per-parameter tensor sharded like its parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    ids = [i for group in sd["param_groups"] for i in group["params"]]
    by_id = dict(zip(ids, params))
    state: Dict[Any, Any] = {}
    for i, s in sd["state"].items():
        p = by_id.get(int(i))
        state[i] = {k: (distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                        if isinstance(p, DTensor) and hasattr(v, "shape") and tuple(v.shape) == tuple(p.shape)
                        else v) for k, v in s.items()}
    return {"state": state, "param_groups": sd["param_groups"]}
