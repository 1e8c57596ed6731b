"""Packing: first-fit rows, restarting positions, no cross-example targets, and the same loss and gradients
as the examples one by one (tiny Llama, fp32, through the loop's own model set-up: patched, LoRA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest
import torch

from doctor.runtime.train import loop, packing
from doctor.runtime.train.config import load_config
from doctor.runtime.train.data import IGNORE, Example
from tests.runtime.train.conftest import write_config


def ex(*ids: int) -> Example:
    return Example(tuple(ids), tuple(ids), 0)


def test_rows_first_fit_in_order() -> None:
    examples = [ex(*range(5)), ex(*range(4)), ex(*range(3)), ex(*range(2)), ex(*range(6))]
    assert packing.rows(examples, 8, packing=True) == [[0, 2], [1, 3], [4]]
    assert packing.rows(examples, 8, packing=False) == [[0], [1], [2], [3], [4]]


def test_collate_packed_is_one_flat_row_with_restarting_positions() -> None:
    b = packing.collate([[ex(5, 6, 7), ex(8, 9)], [ex(10, 11, 12)]], pad_id=0, packing=True)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12]]
    assert b.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    # the first token of each example is never a target: no example learns to predict the next one's start
    assert b.labels.tolist() == [[IGNORE, 6, 7, IGNORE, 9, IGNORE, 11, 12]]
    assert (b.targets, b.tokens, b.examples) == (5, 8, 3)
    assert packing.document_ids(b.position_ids).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]


def test_collate_unpacked_pads_on_the_right() -> None:
    b = packing.collate([[ex(5, 6, 7)], [ex(8, 9)]], pad_id=1, packing=False)
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 9, 1]]
    assert b.labels.tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]
    assert b.position_ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert (b.targets, b.tokens) == (3, 5)


def test_block_causal_mask_is_the_reference() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    mask = packing.block_causal_mask(pos, torch.float32)
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    assert float(mask.min()) == torch.finfo(torch.float32).min
    # no mask is built for rows of one example each: plain causal attention is already right
    one = packing.collate([[ex(1, 2, 3)], [ex(4, 5)]], 0, packing=False)
    assert "attention_mask" not in packing.model_inputs(one, "cpu", "sdpa")


def _grads(model: Any) -> List[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_and_gradients_equal_the_examples_one_by_one(tmp_path: Path, model_dir: Path, dataset: Path,
                                                                 attention: str) -> None:
    torch.manual_seed(0)
    cfg = load_config(write_config(tmp_path / "c.toml", model_dir, dataset, tmp_path / "out", lr=0.01))
    model, patched = loop.build_model(cfg, torch.float32, attention)
    assert patched.startswith("applied")
    with torch.no_grad():  # LoRA's B starts at zero: give the adapter a real effect on the loss
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    g = torch.Generator().manual_seed(1)
    examples = [ex(*torch.randint(8, 90, (int(n),), generator=g).tolist()) for n in (7, 3, 12, 5, 9, 2)]
    cpu = torch.device("cpu")

    packed = packing.collate([[examples[i] for i in row] for row in packing.rows(examples, 20, True)], 1, True)
    assert packed.input_ids.shape == (1, sum(len(e.input_ids) for e in examples))  # padding-free: one flat row
    loss_packed = loop.accumulate(model, [packed], cpu, attention)
    grads_packed = _grads(model)
    model.zero_grad(set_to_none=True)

    alone = [packing.collate([[e]], 1, False) for e in examples]
    loss_alone = loop.accumulate(model, alone, cpu, attention)
    grads_alone = _grads(model)

    assert loss_packed == pytest.approx(loss_alone, rel=1e-5)
    # the control: the same flat row with plain causal attention (examples see each other) gives another loss
    with torch.no_grad():
        leaky = float(model(input_ids=packed.input_ids, labels=packed.labels).loss)
    assert abs(leaky - loss_alone) > 1e-4
    assert len(grads_packed) == len(grads_alone) > 0
    for a, b in zip(grads_packed, grads_alone):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
