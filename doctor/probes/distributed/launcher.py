"""Start the distributed probe's ranks on this machine, isolated: one child per rank, deadlines, group kills.

Each rank is a doctor._util.proc.EventChild (its own process group, events on a pipe, output in a
log), rendezvousing on 127.0.0.1 at a free port. A rank must report within IMPORT_TIMEOUT until every
rank has imported torch, then within `timeout + grace` of its previous event or of that moment (the
collectives' own timeout is `timeout`, so a rank waiting on a hung peer reports the failure itself first). A silent
rank is killed with its whole group; when the run ends, nothing it started is left running.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from doctor._util.proc import EventChild
from doctor.envvars import (LOCAL_RANK, MASTER_ADDR, MASTER_PORT, NCCL_SETTINGS, RANK, TORCH_NCCL_DEBUG_INFO_TEMP_FILE,
                            WORLD_SIZE, GLOO_SOCKET_IFNAME)
from doctor.probes.distributed.link import grade, parse_topology, topology_table, weakest_link
from doctor.probes.distributed.verdicts import (BandwidthRow, RankOutcome, bandwidth_rows, rank_verdicts,
                                                read_flight_record)
from doctor.probes.distributed.worker import default_job, nccl_defaults
from doctor.verdicts import ProbeResult

IMPORT_TIMEOUT = 180.0  # a cold `import torch` on a network filesystem can take a minute
TAIL_CHARS = 2000
POLL_S = 0.05  # per child per round: the latency of noticing one rank's event
Progress = Callable[[int, Dict[str, Any]], None]  # (rank, event)


class DistRun(NamedTuple):
    """One distributed probe: per-rank verdicts, the bandwidth table, the settings it ran with."""

    backend: str
    world_size: int
    results: Tuple[ProbeResult, ...]
    bandwidth: Tuple[BandwidthRow, ...]
    settings: Tuple[Tuple[str, str], ...]  # transport settings as set ('unset' otherwise)
    timeout_s: float
    wall_s: float
    pids: Tuple[int, ...] = ()  # each rank's process (all gone when the run returns)

    @property
    def passed(self) -> bool:
        """Every verdict passed."""
        return all(r.passed for r in self.results)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form (the report document adds the envelope)."""
        return {"backend": self.backend, "world_size": self.world_size, "timeout_s": self.timeout_s,
                "wall_s": round(self.wall_s, 3), "pids": list(self.pids), "settings": dict(self.settings),
                "results": [r.to_dict() for r in self.results], "bandwidth": [b.to_dict() for b in self.bandwidth]}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (rank 0's store binds it a moment later; a race is an init verdict)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def transport_settings(backend: str, env: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    """The settings that matter for a hang, as the ranks see them."""
    names = NCCL_SETTINGS if backend == "nccl" else (GLOO_SOCKET_IFNAME,)
    return tuple((n, env.get(n, "unset")) for n in names)


def rank_env(base: Mapping[str, str], backend: str, rank: int, world: int, port: int, dump_prefix: str) -> Dict[str, str]:
    """A rank's environment: rendezvous, rank numbers, and (NCCL) the probe's defaults under the user's settings."""
    env = dict(base)
    if backend == "nccl":  # GPU-only path: untested in CI
        for k, v in nccl_defaults(dump_prefix).items():
            env.setdefault(k, v)
    env.update({MASTER_ADDR: "127.0.0.1", MASTER_PORT: str(port), RANK: str(rank), WORLD_SIZE: str(world),
                LOCAL_RANK: str(rank)})
    return env


def run_distributed(nproc: int, backend: str = "gloo", timeout: float = 30.0, env: Optional[Mapping[str, str]] = None,
                    python: Optional[str] = None, progress: Optional[Progress] = None, gpu_name: str = "") -> DistRun:
    """Run the probe over `nproc` ranks on this machine (gloo: CPU processes; nccl: one per GPU); never hangs.

    With NCCL the all-reduce bandwidth is also graded against the GPUs' link (`gpu_name` picks the PCIe
    rating): GPU-only, untested so far.
    """
    if nproc < 1:
        raise ValueError("nproc must be at least 1")
    base = dict(os.environ if env is None else env)
    grace = min(10.0, timeout)  # time for a rank's own timeout error (or NCCL's dump) to arrive before we kill
    limit = timeout + grace
    job = json.dumps(default_job(backend, timeout))
    port = free_port()
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tune-doctor-dist-") as tmp:
        dump_prefix = os.path.join(tmp, "nccl_trace_rank_")
        children: List[EventChild] = []
        try:
            for r in range(nproc):
                children.append(EventChild([python or sys.executable, "-m", "doctor.probes.distributed.worker", job],
                                           rank_env(base, backend, r, nproc, port, dump_prefix)))
            outcomes = _watch(children, limit, progress)
            outcomes = [o._replace(flight_record=read_flight_record(dump_prefix + str(o.rank))) for o in outcomes]
        except OSError as exc:  # the interpreter is gone or not executable: every rank shares the verdict
            why = f"cannot start the rank process: {exc.strerror or exc}"
            results = [ProbeResult("dist.startup", f"{backend}:rank{r}", "error", op="startup", detail=why) for r in range(nproc)]
            return DistRun(backend, nproc, tuple(results), (), transport_settings(backend, base), timeout,
                           time.monotonic() - t_start)
        finally:
            for c in children:
                c.close()
        ranks_env = rank_env(base, backend, 0, nproc, port, dump_prefix)
        results = rank_verdicts(outcomes, backend, ranks_env, limit)
    rows = bandwidth_rows(outcomes, nproc)
    if backend == "nccl" and nproc > 1:  # GPU-only path: untested in CI
        table = topology_table()
        results.append(grade(rows, weakest_link(parse_topology(table), nproc, gpu_name) if table else None, backend))
    return DistRun(backend, nproc, tuple(results), tuple(rows),
                   transport_settings(backend, ranks_env), timeout, time.monotonic() - t_start,
                   tuple(o.pid for o in outcomes if o.pid is not None))


def _watch(children: List[EventChild], limit: float, progress: Optional[Progress]) -> List[RankOutcome]:
    """Read every rank's events until each has exited or been killed at its deadline."""
    n = len(children)
    events: List[List[Dict[str, Any]]] = [[] for _ in range(n)]
    last = [time.monotonic()] * n
    ready = [False] * n
    all_ready = float("inf")  # when the last rank had imported torch: the others' waits in init count from there
    finished: Dict[int, Tuple[Optional[int], bool, float]] = {}  # rank -> (exit code, timed out, silent s)
    while len(finished) < n:
        for r, child in enumerate(children):
            if r in finished:
                continue
            deadline = (max(last[r], all_ready) + limit) if all_ready < float("inf") else last[r] + IMPORT_TIMEOUT
            kind, ev = child.next_event(min(deadline, time.monotonic() + POLL_S))
            now = time.monotonic()
            if kind in ("event", "garbage") and ev is not None:
                if kind == "event":
                    events[r].append(ev)
                    ready[r] = ready[r] or ev.get("event") == "ready"
                    if progress:
                        progress(r, ev)
                last[r] = now
            elif kind == "eof":
                finished[r] = (child.exit_code(), False, now - last[r])
            elif now >= deadline:
                child.kill()  # its whole group: nothing it started stays behind
                finished[r] = (child.exit_code(), True, now - last[r])
            if all_ready == float("inf") and all(ready[i] or i in finished for i in range(n)):
                all_ready = time.monotonic()  # a rank gone before import is not worth waiting for either
    return [RankOutcome(r, tuple(events[r]), None if finished[r][1] else finished[r][0], finished[r][1], finished[r][2],
                        tail=children[r].tail(TAIL_CHARS), pid=children[r].proc.pid) for r in range(n)]
