"""What the ranks of one distributed probe reported (or how they hung or died) -> ProbeResults naming the rank.

Pure: reads RankOutcome records the launcher (or rank 0 under torchrun) built, and a flight-recorder
dump file when NCCL left one. One verdict per rank per step (init, each collective x dtype); a rank
that hung gets a timeout verdict on the step it was in, a rank that died an error verdict with its
exit code or signal and stderr tail; a rank whose collective failed because a peer hung or died says
which peer, so the report points at the culprit, not at everyone who waited for it.
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor._util.proc import exit_reason
from doctor.envvars import GLOO_SOCKET_IFNAME, NCCL_SETTINGS
from doctor.verdicts import ProbeResult

BUSBW_FACTOR = {"all_reduce": lambda n: 2.0 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n}  # nccl-tests


class RankOutcome(NamedTuple):
    """Everything one rank left behind."""

    rank: int
    events: Tuple[Dict[str, Any], ...]  # what it reported, in order
    exit_code: Optional[int]  # None: still running when killed at the deadline (see timed_out)
    timed_out: bool  # the launcher killed it: silent past its deadline
    silent_s: float  # how long it had been silent when judged
    tail: str = ""  # last output (stdout + stderr)
    pid: Optional[int] = None
    flight_record: str = ""  # NCCL flight-recorder summary, when a dump was found


class BandwidthRow(NamedTuple):
    """One size of one collective: the slowest rank's time and the nccl-tests bandwidths."""

    collective: str
    bytes: int  # all-gather: the gathered total, as nccl-tests counts it
    time_us: float  # the slowest rank's mean time per collective
    algbw_gbs: float  # bytes / time, GB/s (1e9)
    busbw_gbs: float  # algbw x 2(n-1)/n (all-reduce) or (n-1)/n (all-gather)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self._asdict().items()}


def settings_line(backend: str, env: Mapping[str, str]) -> str:
    """The transport settings that matter for a hang, as set ('unset' otherwise)."""
    names = NCCL_SETTINGS if backend == "nccl" else (GLOO_SOCKET_IFNAME,)
    return ", ".join(f"{n}={env.get(n, 'unset')}" for n in names)


def _step_id(check: str, dtype: str) -> str:
    """'dist.all_reduce.float32', 'dist.init'."""
    return "dist." + ".".join(p for p in (check, dtype) if p)


def _phase(events: Sequence[Mapping[str, Any]]) -> Tuple[str, str]:
    """(step id, words) of what a rank was doing when last heard from."""
    if not events:
        return "dist.startup", "starting (import torch)"
    last = events[-1]
    if last.get("event") == "begin":
        what = " ".join(str(p) for p in (last.get("check"), last.get("dtype")) if p)
        size = f" {last['bytes']} bytes" if "bytes" in last else ""
        return _step_id(str(last.get("check", "")), str(last.get("dtype", ""))), f"in {what}{size}"
    if last.get("event") == "ready":
        return "dist.init", "before init_process_group"
    return "dist.process", f"after its last event ({last.get('event')} {last.get('check', '')})".replace(" )", ")")


def _culprits(outcomes: Sequence[RankOutcome]) -> Dict[int, str]:
    """Ranks that hung or died, with a word for each."""
    out: Dict[int, str] = {}
    for o in outcomes:
        if o.timed_out:
            out[o.rank] = "hung"
        elif o.exit_code not in (0, None) or not any(e.get("event") == "done" for e in o.events):
            out[o.rank] = "died" if o.exit_code not in (0, None) else "stopped"
    return out


def rank_verdicts(outcomes: Sequence[RankOutcome], backend: str, env: Mapping[str, str], limit_s: float) -> List[ProbeResult]:
    """Every rank's verdicts, rank by rank, steps in order."""
    culprits = _culprits(outcomes)
    results: List[ProbeResult] = []
    for o in sorted(outcomes, key=lambda x: x.rank):
        label = f"{backend}:rank{o.rank}"
        others = {r: w for r, w in culprits.items() if r != o.rank}
        blame = "; ".join(f"rank {r} {w}" for r, w in sorted(others.items()))
        for ev in o.events:
            if ev.get("event") != "result":
                continue
            status = str(ev.get("status", "error"))
            detail = str(ev.get("detail", ""))
            if status != "pass" and blame:
                detail = f"waiting on a peer ({blame}): {detail}"
            results.append(ProbeResult(
                id=_step_id(str(ev.get("check", "")), str(ev.get("dtype", ""))), backend=label, op=str(ev.get("check", "")),
                status=status, error=_num(ev.get("error")), tolerance=_num(ev.get("tolerance")),
                time_ms=_num(ev.get("time_ms")), detail=detail[:2000],
                stderr_tail=o.tail if status not in ("pass", "skipped") else ""))
        dead = "; ".join(f"rank {r} {w}" for r, w in sorted(others.items()) if w != "hung")
        failure = _rank_failure(o, label, backend, env, limit_s, dead)
        if failure is not None:
            results.append(failure)
    return results


def _rank_failure(o: RankOutcome, label: str, backend: str, env: Mapping[str, str], limit_s: float,
                  dead: str = "") -> Optional[ProbeResult]:
    """The verdict for a rank that hung or died (None when it finished); `dead`: peers that died, which it may have waited on."""
    step, words = _phase(o.events)
    pid = f" (pid {o.pid})" if o.pid else ""
    record = f"; NCCL flight recorder: {o.flight_record}" if o.flight_record else ""
    if o.timed_out:
        detail = (f"rank {o.rank}{pid} hung {words}: nothing from it for {o.silent_s:.0f} s (limit {limit_s:g} s); "
                  f"its process group was killed. Settings: {settings_line(backend, env)}{record}")
        if dead:  # stuck waiting for a peer that is gone: the peer is the culprit
            detail = f"waiting on a peer ({dead}): {detail}"
        return ProbeResult(step, label, "timeout", op=step[5:], detail=detail[:2000], stderr_tail=o.tail)
    done = any(e.get("event") == "done" for e in o.events)
    if o.exit_code == 0 and done:
        return None
    how = exit_reason(o.exit_code) if o.exit_code != 0 else "exit code 0 before finishing"
    status = "crash" if (o.exit_code or 0) < 0 else "error"
    detail = f"rank {o.rank}{pid} died {words}: {how}{record}"
    return ProbeResult(step, label, status, op=step[5:], detail=detail[:2000], stderr_tail=o.tail)


def _num(value: object) -> Optional[float]:
    """A JSON number as a float, anything else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def bandwidth_rows(outcomes: Sequence[RankOutcome], world: int) -> List[BandwidthRow]:
    """One row per (collective, size) that every rank timed: the slowest rank's time, nccl-tests bandwidths."""
    times: Dict[Tuple[str, int], Dict[int, float]] = {}
    for o in outcomes:
        for ev in o.events:
            if ev.get("event") == "bandwidth" and _num(ev.get("time_us")) and isinstance(ev.get("bytes"), int):
                times.setdefault((str(ev.get("collective")), int(ev["bytes"])), {})[o.rank] = float(ev["time_us"])
    rows = []
    for (coll, nbytes), per_rank in times.items():
        if len(per_rank) != world or coll not in BUSBW_FACTOR:
            continue
        t = max(per_rank.values())
        algbw = nbytes / (t * 1e-6) / 1e9
        rows.append(BandwidthRow(coll, nbytes, t, algbw, algbw * BUSBW_FACTOR[coll](world)))
    return sorted(rows, key=lambda r: (r.collective != "all_reduce", r.bytes))


def read_flight_record(path: str, entries: int = 5) -> str:
    """A one-line summary of an NCCL flight-recorder dump (the last collectives and their state), '' if unreadable."""
    # GPU-only path, untested in CI: the dump is a pickle torch writes on a watchdog timeout
    # (TORCH_NCCL_DUMP_ON_TIMEOUT); the file is our own child's, in a directory the launcher made.
    try:
        with open(path, "rb") as f:
            dump = pickle.load(f)
        records = list(dump.get("entries", []))[-entries:]
    except Exception:  # missing, partial or another format: no summary rather than a crash
        return ""
    parts = []
    for e in records:
        if isinstance(e, dict):
            parts.append(f"#{e.get('collective_seq_id', '?')} {e.get('profiling_name', '?')} {e.get('state', '?')}"
                         f" in={e.get('input_sizes', '?')}")
    return "; ".join(parts)
