"""`doctor train --nproc N`: data-parallel LoRA training over torch.distributed (gloo on CPU, NCCL on GPUs).

Two ways in:
- `launch(...)`: the command starts N ranks on this machine, each `python -m doctor train CONFIG` with
  RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR=127.0.0.1/MASTER_PORT set; each rank leads its own process group
  and the first rank that fails takes the others down (killed), named in one line;
- `join()`: a rank (ours, or one started by torchrun) finds WORLD_SIZE/RANK in its environment and joins.

The math (doctor.runtime.train.loop): every rank builds the same data plan, takes micro-batches
rank, rank + N, ... of each optimizer step, and weights each micro-batch's loss by its targets over the
targets of the WHOLE step; the gradients are then summed over the ranks (one all-reduce of the adapter's
flattened gradients: it also works for a rank whose share of a step is empty, which the DDP wrapper's
per-backward hooks would not), so every step's loss and update are the single-process run's.

Probes and checks run once per node (`Group.node_first`): local rank 0 runs them (probing what the verdict
store lacks) while the node's other ranks wait for it, then they take its result (the attention choice) or
redo the work reading the verdicts it stored, never probing themselves; N ranks never start N probe suites
on one machine at once. A node's ranks are ranks rank - local_rank .. (contiguous, as torchrun and launch()
number them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, TypeVar

from doctor._util.proc import exit_reason, kill_group
from doctor.envvars import LOCAL_RANK, MASTER_ADDR, MASTER_PORT, PYTHONUNBUFFERED, RANK, WORLD_SIZE
from doctor.errors import DoctorError

MAX_NPROC = 64  # more ranks than that on one machine is a typo
COLLECTIVE_TIMEOUT_S = 600.0  # a collective waiting longer than this on a peer fails its rank (a hung peer)
POLL_S = 0.1
INTERRUPT_GRACE_S = 60.0  # after Ctrl-C, how long rank 0 may take to write its checkpoint
ERROR_PREFIX = "doctor: error: "  # how the CLI prints a rank's one-line error (doctor.cli)
INTERNAL_PREFIX = "doctor: internal error: "

T = TypeVar("T")


class RankFailed(DoctorError):
    """A rank of a launched run failed; `returncode` is how it ended (negative: the signal)."""

    def __init__(self, message: str, returncode: int) -> None:
        """One line naming the rank, and its exit status."""
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class Group:
    """This process's place in the run: rank of world (world 1: a single process, no torch.distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def lead(self) -> bool:
        """Rank 0: the one that logs and writes the adapter, checkpoints and summary."""
        return self.rank == 0

    def sum(self, value: float) -> float:
        """The sum of `value` over the ranks (float64)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=_device(self))
        dist.all_reduce(t)
        return float(t.item())

    def node_first(self, lead: Callable[[], T], rest: Callable[[T], T]) -> T:
        """`lead()` on local rank 0 while the node's other ranks wait; then they return `rest(its result)`.

        The result travels to every rank (a collective: every rank calls this, at the same point), so it must
        be picklable. A DoctorError in local rank 0 is raised, with the same line, in every rank of its node.
        """
        if self.world == 1:
            return lead()
        import torch.distributed as dist

        mine: Tuple[Optional[T], str] = (None, "")
        error: Optional[BaseException] = None
        if self.local_rank == 0:
            try:
                mine = (lead(), "")
            except DoctorError as e:
                mine, error = (None, str(e)), e
            except Exception as e:  # shared as a line, so the node's other ranks do not wait on a peer gone
                mine, error = (None, f"local rank 0 failed ({type(e).__name__}: {e})"), e
        every: List[Any] = [None] * self.world
        dist.all_gather_object(every, mine)  # also the wait: it returns once every node's local rank 0 is done
        if error is not None:
            raise error
        result, failed = every[self.rank - self.local_rank]
        if failed:
            raise DoctorError(failed)
        done: T = result
        return done if self.local_rank == 0 else rest(done)

    def sum_grads(self, params: Sequence[Any]) -> None:
        """Replace each parameter's gradient by its sum over the ranks (None counts as zeros)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads]).to(_device(self))
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n


SINGLE = Group()


def _device(group: Group) -> Any:
    import torch

    return torch.device(f"cuda:{group.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def from_env(env: Optional[Mapping[str, str]] = None) -> Optional[Tuple[int, int, int]]:
    """(rank, world, local_rank) when the environment names a torch.distributed run of 2+ ranks, else None."""
    e = os.environ if env is None else env
    if WORLD_SIZE not in e:
        return None
    try:
        world, rank = int(e[WORLD_SIZE]), int(e.get(RANK, "0"))
        local = int(e.get(LOCAL_RANK, str(rank)))
    except ValueError:
        raise DoctorError(f"{WORLD_SIZE}={e.get(WORLD_SIZE)!r} {RANK}={e.get(RANK)!r}: not whole numbers") from None
    if world < 1 or not 0 <= rank < world:
        raise DoctorError(f"{RANK}={rank} of {WORLD_SIZE}={world}: the rank must be in 0..{WORLD_SIZE}-1")
    return None if world == 1 else (rank, world, local)


def join(rank: int, world: int, local_rank: int) -> Group:
    """Join the run's process group (env:// rendezvous): NCCL with one GPU per rank when CUDA is there, else gloo."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:  # untested here (no GPU in CI): one process per GPU, LOCAL_RANK its index
        torch.cuda.set_device(local_rank)
    if MASTER_ADDR not in os.environ or MASTER_PORT not in os.environ:
        raise DoctorError(f"{WORLD_SIZE}={world} but {MASTER_ADDR}/{MASTER_PORT} are not set "
                          f"(start ranks with `doctor train --nproc N` or torchrun)")
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return Group(rank, world, local_rank)


def leave() -> None:
    """Leave the process group (at the end of a rank's run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_nproc(n: int) -> None:
    """--nproc must be 1..MAX_NPROC."""
    if not 1 <= n <= MAX_NPROC:
        raise DoctorError(f"--nproc {n}: must be between 1 and {MAX_NPROC} (processes on this machine)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the rendezvous binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run argv (a `doctor train` command line) as nproc ranks; their exit status (0: all succeeded).

    Rank 0's output is ours; the others' go to temporary logs. The first rank to fail ends the run: the
    others are killed (their groups) and RankFailed, one line, names the rank, how it ended and its error.
    """
    check_nproc(nproc)
    port = free_port()
    procs: List["subprocess.Popen[bytes]"] = []
    logs: List[Any] = []
    try:
        for rank in range(nproc):
            env = {**os.environ, RANK: str(rank), WORLD_SIZE: str(nproc), LOCAL_RANK: str(rank),
                   MASTER_ADDR: "127.0.0.1", MASTER_PORT: str(port), PYTHONUNBUFFERED: "1"}
            err = tempfile.TemporaryFile(prefix=f"tune-doctor-rank{rank}-")
            logs.append(err)
            out = None if rank == 0 else err
            procs.append(subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                          start_new_session=True))
        failed = _wait(procs)
    except KeyboardInterrupt:
        # Ctrl-C reaches only us (each rank has its own session). Rank 0 alone gets it: it checkpoints the last
        # finished step as a single process does (every rank holds the same adapter), then the others are killed.
        if procs and procs[0].poll() is None:
            procs[0].send_signal(signal.SIGINT)
            _reap(procs[:1], grace=INTERRUPT_GRACE_S)
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                kill_group(p)
    try:
        if failed is None:
            if logs:  # rank 0's stderr (warnings and all) is the command's own; after a failure, the line below is
                sys.stderr.write(_read(logs[0]))
                sys.stderr.flush()
            return 0
        rank = failed
        line = _error_line(_read(logs[rank])) if int(procs[rank].returncode or 0) > 0 else ""  # a signal: no last words
        raise RankFailed(f"rank {rank} of {nproc} failed ({exit_reason(procs[rank].returncode)})"
                         + (f": {line}" if line else "") + "; the other ranks were stopped", int(procs[rank].returncode))
    finally:
        for f in logs:
            f.close()


def _wait(procs: Sequence["subprocess.Popen[bytes]"]) -> Optional[int]:
    """Wait for every rank; the rank that failed first (None: all exited 0). Survivors are killed then."""
    while True:
        codes = [p.poll() for p in procs]
        bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            # a rank whose peer died fails too, moments later: the one that did not fail on its own is to blame
            time.sleep(0.5)
            first = min(bad, key=lambda i: (int(procs[i].returncode or 0) >= 0, i))  # a signal: it did not choose to
            for p in procs:
                if p.poll() is None:
                    kill_group(p)
            return first
        if all(c == 0 for c in codes):
            return None
        time.sleep(POLL_S)


def _reap(procs: Sequence["subprocess.Popen[bytes]"], grace: float) -> None:
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(p)


def _read(f: Any) -> str:
    try:
        f.flush()
        f.seek(0)
        return str(f.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return ""


def _error_line(text: str) -> str:
    """The rank's own one-line error (`doctor: error: ...`), or its last non-blank line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    mine = [ln for ln in lines if ln.startswith(ERROR_PREFIX) or ln.startswith(INTERNAL_PREFIX)]
    if mine:
        return mine[-1][len(ERROR_PREFIX):] if mine[-1].startswith(ERROR_PREFIX) else mine[-1][len("doctor: "):]
    return lines[-1][:300] if lines else ""
