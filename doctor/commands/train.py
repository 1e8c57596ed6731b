"""`doctor train CONFIG.toml [--stop-after N]`: LoRA fine-tuning from one TOML file (doctor.runtime.train)."""

from __future__ import annotations

import argparse
import sys

from doctor.commands import add_common, count_at_least
from doctor.exits import ExitCode, epilog

HELP = """CONFIG.toml names a local Hugging Face model folder, a JSONL dataset ({"text": ...} or chat
{"messages": [...]} lines) and the training settings; README "Fine-tuning: doctor train" has a complete one.
The run writes OUTPUT_DIR/adapter (plain peft format), OUTPUT_DIR/run_summary.json and a resumable checkpoint
in OUTPUT_DIR/checkpoints; running the same config again continues from the last checkpoint.

examples:
  doctor train train.toml
  doctor train train.toml --stop-after 500     # checkpoint at step 500 and stop; run again to continue
  doctor train train.toml --nproc 2            # data-parallel over 2 processes (one per GPU; gloo on CPU)
  torchrun --nproc-per-node 2 -m doctor train train.toml   # the same under torchrun: each rank joins

With 2+ ranks, [train] parallel = "fsdp" shards the model over them (PyTorch FSDP2) instead of copying it to
each: for a model that does not fit one GPU; the losses are the same. Probes run once per node (local rank 0).

""" + epilog((ExitCode.HEALTHY, ExitCode.BAD_INPUT, ExitCode.INTERNAL, ExitCode.INTERRUPTED), notes=(
    "train: 0 when the run finished, or stopped where --stop-after said (the summary says which)",
    "train: 3 also when the loss stops being finite (the message says what to change)",
    "train: 130 after Ctrl-C, with a checkpoint of the last finished step (the same command continues)",
    "train --nproc N: 4 when a rank crashed or was killed (one line names it; the others are stopped)",
))


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor train` and its options."""
    t = sub.add_parser("train", help="LoRA fine-tuning of a local model on a JSONL dataset, from a TOML config",
                       epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", metavar="CONFIG.toml", help="the training configuration")
    t.add_argument("--stop-after", type=count_at_least(1), default=None, metavar="N",
                   help="save a checkpoint after step N and stop (for sessions with a time limit)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel ranks on this machine (torch.distributed: NCCL, one per GPU; gloo on CPU); "
                        "the global batch and every step's loss are those of one process (default 1)")
    add_common(t)
    t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, report; exit codes are in HELP (doctor.exits)."""
    from doctor.runtime.train import distributed, load_config, train

    distributed.check_nproc(args.nproc)
    cfg = load_config(args.config)
    joined = distributed.from_env()  # a rank started by --nproc or by torchrun
    if joined is None and args.nproc > 1:
        argv = [sys.executable, "-m", "doctor", "train", args.config, "--no-progress"]
        argv += ["--stop-after", str(args.stop_after)] if args.stop_after is not None else []
        argv += ["--no-color"] if args.no_color else []
        try:
            return distributed.launch(argv, args.nproc)
        except distributed.RankFailed as e:  # its own code: bad input stays 3, a crashed or killed rank is 4
            print(f"doctor: error: {e}", file=sys.stderr)
            return int(ExitCode.BAD_INPUT if e.returncode == ExitCode.BAD_INPUT else ExitCode.INTERNAL)
    group = distributed.join(*joined) if joined is not None else distributed.SINGLE
    try:
        train(cfg, stop_after=args.stop_after, progress=not args.no_progress, color=not args.no_color, group=group)
    finally:
        if joined is not None:
            distributed.leave()
    return int(ExitCode.HEALTHY)
