"""Rows and micro-batches: padding-free packing of short examples, attention kept inside each example.

With packing on, examples are laid first-fit into rows of at most `seq_len` tokens, and a micro-batch
(`batch_size` rows) is flattened into ONE row of its real tokens: no padding at all. What keeps the
examples apart:

- position_ids restart at 0 for every example (RoPE sees each example from position 0);
- the first token of every example is not a target (labels IGNORE), so no example learns to predict
  the start of the next one: the Hugging Face loss shifts labels across the flat row;
- attention never crosses an example boundary. On CUDA that is FlexAttention with a document mask or
  flash-attn's variable-length kernel (transformers derives both from the restarting position_ids);
  everywhere else (the CPU path, and the fallback) it is this module's torch reference: an explicit
  block-diagonal causal mask, additive, that SDPA and eager attention take as they are.

So a packed micro-batch gives the same loss and gradients as its examples one by one (tested, fp32).
Without packing, a micro-batch is `batch_size` examples padded on the right (pad tokens are never
targets and, attention being causal, no real token sees them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

from doctor.runtime.train.data import IGNORE, Example

if TYPE_CHECKING:  # pragma: no cover
    import torch

TORCH_MASK_IMPLEMENTATIONS = ("sdpa", "eager")  # attention that takes an explicit 4D mask (the torch reference)


@dataclass(frozen=True)
class MicroBatch:
    """The tensors of one forward/backward pass, and what the loss normalisation needs."""

    input_ids: "torch.Tensor"  # [rows, T] long
    labels: "torch.Tensor"  # [rows, T] long, IGNORE where not a target
    position_ids: "torch.Tensor"  # [rows, T] long, restarting at every example
    targets: int  # tokens that are targets after the model's one-token shift (the loss's denominator)
    tokens: int  # real (non-padding) tokens
    examples: int


def rows(examples: Sequence[Example], seq_len: int, packing: bool) -> List[List[int]]:
    """Indices of the examples in each row: one per row, or first-fit packed into rows of <= seq_len tokens.

    First-fit keeps the given (shuffled) order as far as it can: an example goes to the first open row
    it fits in, so rows fill up to ~seq_len without sorting the dataset by length.
    """
    if not packing:
        return [[i] for i in range(len(examples))]
    out: List[List[int]] = []
    room: List[int] = []
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        for r, free in enumerate(room):
            if n <= free:
                out[r].append(i)
                room[r] -= n
                break
        else:
            out.append([i])
            room.append(seq_len - n)
    return out


def collate(parts: Sequence[Sequence[Example]], pad_id: int, packing: bool) -> MicroBatch:
    """One micro-batch from its rows (each a sequence of examples): flattened when packing, else padded rows."""
    import torch

    if packing:
        flat = [ex for row in parts for ex in row]
        ids, labels, pos = _concat(flat)
        id_rows, label_rows, pos_rows = [ids], [labels], [pos]
    else:
        width = max(sum(len(ex.input_ids) for ex in row) for row in parts)
        id_rows, label_rows, pos_rows = [], [], []
        for row in parts:
            ids, labels, pos = _concat(list(row))
            pad = width - len(ids)
            id_rows.append(ids + [pad_id] * pad)
            label_rows.append(labels + [IGNORE] * pad)
            pos_rows.append(pos + list(range(len(pos), len(pos) + pad)))  # padding continues the row: one document
    label_t = torch.tensor(label_rows, dtype=torch.long)
    return MicroBatch(
        input_ids=torch.tensor(id_rows, dtype=torch.long),
        labels=label_t,
        position_ids=torch.tensor(pos_rows, dtype=torch.long),
        targets=int((label_t[:, 1:] != IGNORE).sum()),
        tokens=sum(len(ex.input_ids) for row in parts for ex in row),
        examples=sum(len(row) for row in parts),
    )


def _concat(examples: Sequence[Example]) -> "tuple[List[int], List[int], List[int]]":
    ids: List[int] = []
    labels: List[int] = []
    pos: List[int] = []
    for ex in examples:
        ids.extend(ex.input_ids)
        labels.append(IGNORE)  # the first token of an example is never predicted (from the previous example)
        labels.extend(ex.labels[1:])
        pos.extend(range(len(ex.input_ids)))
    return ids, labels, pos


def document_ids(position_ids: "torch.Tensor") -> "torch.Tensor":
    """[rows, T] index of the example each token belongs to: a new one wherever a position does not follow the last by 1."""
    import torch

    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)


def block_causal_mask(position_ids: "torch.Tensor", dtype: "torch.dtype") -> "torch.Tensor":
    """The torch reference: [rows, 1, T, T] additive mask, 0 where query i may see key j (same example, j <= i).

    Additive (0 / the dtype's lowest value) because eager attention adds the mask to the scores and SDPA
    takes a float mask the same way; transformers passes a 4D mask through untouched.
    """
    import torch

    doc = document_ids(position_ids)
    t = position_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def model_inputs(batch: MicroBatch, device: Any, attention: str, dtype: "Optional[torch.dtype]" = None) -> dict:
    """Keyword arguments for the model's forward: ids, labels, position_ids, and the explicit mask where needed."""
    kw = {"input_ids": batch.input_ids.to(device), "labels": batch.labels.to(device),
          "position_ids": batch.position_ids.to(device)}
    if attention in TORCH_MASK_IMPLEMENTATIONS and bool((document_ids(batch.position_ids)[:, -1] > 0).any()):
        import torch

        kw["attention_mask"] = block_causal_mask(kw["position_ids"], dtype or torch.float32)
    return kw
