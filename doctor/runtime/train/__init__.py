"""`doctor train`: LoRA fine-tuning of a local Hugging Face causal LM on a JSONL dataset, from one TOML file.

    from doctor.runtime.train import load_config, train
    summary = train(load_config("train.toml"))      # adapter in output_dir/adapter, run_summary.json beside it

config (TOML -> TrainConfig, strict) · data (JSONL -> Examples) · packing (rows, micro-batches, the document
mask) · attention (which packed attention, proven by a probe) · loop (the training loop, checkpoints).
Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from doctor.runtime.train.config import TrainConfig, load_config

if TYPE_CHECKING:  # pragma: no cover
    from doctor.runtime.train.distributed import Group
    from doctor.runtime.train.loop import Log, RunSummary


def train(cfg: TrainConfig, log: "Optional[Log]" = None, stop_after: Optional[int] = None,
          progress: bool = False, color: bool = True, group: "Optional[Group]" = None) -> "RunSummary":
    """Run or continue the training `cfg` describes (see doctor.runtime.train.loop.train)."""
    from doctor.runtime.train.distributed import SINGLE
    from doctor.runtime.train.loop import train as _train

    return _train(cfg, log=log, stop_after=stop_after, progress=progress, color=color, group=group or SINGLE)


__all__ = ["TrainConfig", "load_config", "train"]
