"""The distributed probe over gloo on CPU processes: the same code path NCCL takes on GPUs, minus the GPU.

Real ranks (child processes rendezvousing on 127.0.0.1), real collectives; the hang and the death are
planted through the worker's documented test hooks (DOCTOR_DIST_TEST_HANG_RANK / _DIE_RANK).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from doctor.probes.distributed.launcher import run_distributed
from doctor.probes.distributed.verdicts import RankOutcome, bandwidth_rows, rank_verdicts, read_flight_record
from tests.conftest import REPO, run_doctor


def gone(pids: List[int]) -> bool:
    """Every pid has exited and been reaped (nothing of the run left running)."""
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def env_with(**extra: str) -> Dict[str, str]:
    """This environment plus the given variables."""
    e = dict(os.environ)
    e.update(extra)
    return e


def test_three_ranks_correct_and_bandwidth_by_nccl_tests_definitions() -> None:
    """3 gloo ranks: every rank passes init and each collective in fp32 and bf16; busbw = algbw x the nccl-tests factor."""
    run = run_distributed(3, "gloo", timeout=30)
    assert run.passed, [(r.id, r.backend, r.status, r.detail) for r in run.results]
    steps = {(r.id, r.backend) for r in run.results}
    for rank in range(3):
        for step in ("dist.init", "dist.all_reduce.float32", "dist.all_reduce.bfloat16", "dist.all_gather.float32",
                     "dist.all_gather.bfloat16"):
            assert (step, f"gloo:rank{rank}") in steps
    assert {(b.collective, b.bytes) for b in run.bandwidth} == {(c, n) for c in ("all_reduce", "all_gather")
                                                                for n in (4096, 262144, 4194304)}
    for b in run.bandwidth:
        assert b.time_us > 0 and b.algbw_gbs == pytest.approx(b.bytes / (b.time_us * 1e-6) / 1e9)
        factor = 2 * 2 / 3 if b.collective == "all_reduce" else 2 / 3
        assert b.busbw_gbs == pytest.approx(b.algbw_gbs * factor)
    assert len(run.pids) == 3 and gone(list(run.pids))


def test_a_rank_that_dies_is_an_error_verdict_naming_it() -> None:
    """Rank 1 exits with code 7 after init: its verdict says so with its stderr tail; rank 0's failure blames rank 1."""
    t0 = time.monotonic()
    run = run_distributed(2, "gloo", timeout=10, env=env_with(DOCTOR_DIST_TEST_DIE_RANK="1"))
    assert time.monotonic() - t0 < 60
    dead = [r for r in run.results if r.backend == "gloo:rank1" and not r.passed]
    assert len(dead) == 1 and dead[0].status == "error", dead
    assert "rank 1" in dead[0].detail and "exit code 7" in dead[0].detail
    assert "DOCTOR_DIST_TEST_DIE_RANK: rank 1 exits with code 7" in dead[0].stderr_tail
    waited = [r for r in run.results if r.backend == "gloo:rank0" and not r.passed]
    assert waited and all("rank 1 died" in r.detail for r in waited), waited
    assert not run.passed and gone(list(run.pids))


def test_cli_distributed_json_end_to_end() -> None:
    """`doctor probe --distributed --nproc 2 --json`: exit 0, one document, 2 ranks x 5 passing steps, bandwidth rows."""
    proc = run_doctor("probe", "--distributed", "--nproc", "2", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["command"] == "probe distributed" and doc["exit_code"] == 0 and doc["status"] == "healthy"
    assert doc["backend"] == "gloo" and doc["world_size"] == 2 and doc["settings"] == {"GLOO_SOCKET_IFNAME": "unset"}
    assert len(doc["results"]) == 10 and all(r["status"] == "pass" for r in doc["results"])
    assert {r["backend"] for r in doc["results"]} == {"gloo:rank0", "gloo:rank1"}
    assert len(doc["bandwidth"]) == 6 and all(b["busbw_gbs"] > 0 for b in doc["bandwidth"])
    assert [f["id"] for f in doc["findings"]] == ["distributed.ok"]
    assert gone(doc["pids"])


def test_cli_a_hung_rank_is_a_timeout_naming_it_and_nothing_is_left_running() -> None:
    """Rank 1 hangs in its first collective: a timeout verdict and finding for rank 1 within the limit, exit 2, ranks gone."""
    t0 = time.monotonic()
    proc = run_doctor("probe", "--distributed", "--nproc", "2", "--timeout", "3", "--json",
                      env={"DOCTOR_DIST_TEST_HANG_RANK": "1"}, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    hung = [r for r in doc["results"] if r["status"] == "timeout"]
    assert len(hung) == 1 and hung[0]["backend"] == "gloo:rank1" and hung[0]["id"] == "dist.all_reduce.float32"
    assert "rank 1" in hung[0]["detail"] and "hung in all_reduce float32" in hung[0]["detail"]
    assert "GLOO_SOCKET_IFNAME=unset" in hung[0]["detail"]
    # rank 0 timed out waiting (gloo's own timeout) and says on whom; the finding names only the culprit
    rank0 = [r for r in doc["results"] if r["backend"] == "gloo:rank0" and r["status"] != "pass"]
    assert rank0 and rank0[0]["detail"].startswith("waiting on a peer (rank 1 hung)")
    assert [(f["id"], f["subject"]) for f in doc["findings"]] == [("distributed.timeout", "gloo:rank1")]
    assert elapsed < 60  # startup + 3 s group timeout + 3 s grace, never the 30 s default or a hang
    assert gone(doc["pids"])


def test_cli_text_output() -> None:
    """Without --json: the verdict table and the bandwidth table, exit 0 (1 rank: no bandwidth to share, busbw 0)."""
    proc = run_doctor("probe", "--distributed", "--nproc", "1", "--no-color", env={"COLUMNS": "160"}, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "dist.all_gather.bfloat16" in proc.stdout and "gloo:rank0" in proc.stdout
    assert "bus bandwidth" in proc.stdout and "process-group timeout 30 s" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--distributed", "--nproc", "0"], "must be at least 1"),
    (["--distributed", "--nproc", "two"], "not a whole number"),
    (["--nproc", "2"], "--nproc needs --distributed"),
    (["--distributed", "--only", "sdpa"], "does not combine with --only"),
    (["--distributed", "--gpu", "0", "--refresh"], "does not combine with --gpu, --refresh"),
    (["--distributed", "--list"], "does not combine with --list"),
    (["--distributed", "--nproc", "65"], "at most 64 CPU processes"),
    (["--distributed", "--timeout", "0"], "positive number of seconds"),
])
def test_cli_bad_input_is_exit_3_in_one_line(args: List[str], words: str) -> None:
    """Each mistake: exit 3, one line on stderr naming it, nothing on stdout, no traceback."""
    proc = run_doctor("probe", *args, env={"DOCTOR_GPUS": "none"})
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_torchrun_writes_one_merged_report(tmp_path: Path) -> None:
    """`torchrun --nnodes 1 --nproc-per-node 2 --max-restarts 0 --standalone -m doctor.probes.distributed`: rank 0 writes both ranks."""
    out = tmp_path / "report.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this interpreter")
    proc = subprocess.run([str(torchrun), "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "0",
                           "--standalone", "-m", "doctor.probes.distributed", "--out", str(out), "--timeout", "20"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
                          env=env_with(PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["world_size"] == 2 and doc["note"] == "" and len(doc["results"]) == 10
    assert all(r["status"] == "pass" for r in doc["results"]) and len(doc["bandwidth"]) == 6
    assert f"report written to {out}" in proc.stdout


def test_module_outside_torchrun_is_exit_3() -> None:
    """`python -m doctor.probes.distributed` without RANK/WORLD_SIZE says to use torchrun, exit 3, one line."""
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-m", "doctor.probes.distributed"], capture_output=True, text=True,
                          timeout=60, env=e, cwd=REPO, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3 and "torchrun" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bandwidth_rows_need_every_rank_and_use_the_slowest() -> None:
    """A size that one rank never timed is left out; the slowest rank's time is the row's time."""
    def bw(coll: str, n: int, us: float) -> Dict[str, object]:
        return {"event": "bandwidth", "collective": coll, "bytes": n, "time_us": us}

    outcomes = [RankOutcome(0, (bw("all_reduce", 1000, 10.0), bw("all_gather", 1000, 5.0)), 0, False, 0.0),
                RankOutcome(1, (bw("all_reduce", 1000, 20.0),), 0, False, 0.0)]
    rows = bandwidth_rows(outcomes, 2)
    assert [(r.collective, r.bytes, r.time_us) for r in rows] == [("all_reduce", 1000, 20.0)]
    assert rows[0].algbw_gbs == pytest.approx(1000 / 20e-6 / 1e9) and rows[0].busbw_gbs == pytest.approx(rows[0].algbw_gbs)


def test_a_wrong_result_and_a_rank_killed_by_a_signal() -> None:
    """A wrong collective result stays wrong-result; a rank killed by SIGKILL mid-step is a crash naming the signal."""
    ev = ({"event": "ready"}, {"event": "begin", "check": "all_reduce", "dtype": "bfloat16"},
          {"event": "result", "check": "all_reduce", "dtype": "bfloat16", "status": "wrong-result", "error": 0.5,
           "tolerance": 0.0, "detail": "x"}, {"event": "done"})
    killed = ({"event": "ready"}, {"event": "begin", "check": "all_gather", "dtype": "float32"})
    res = rank_verdicts([RankOutcome(0, ev, 0, False, 0.0), RankOutcome(1, killed, -9, False, 1.0, tail="boom")],
                        "nccl", {"NCCL_P2P_DISABLE": "1"}, 10.0)
    assert [(r.id, r.backend, r.status) for r in res] == [("dist.all_reduce.bfloat16", "nccl:rank0", "wrong-result"),
                                                          ("dist.all_gather.float32", "nccl:rank1", "crash")]
    assert "killed by SIGKILL" in res[1].detail and "in all_gather float32" in res[1].detail and res[1].stderr_tail == "boom"
    assert res[0].detail.startswith("waiting on a peer (rank 1 died)")


def test_nccl_timeout_names_the_nccl_settings_and_the_flight_record(tmp_path: Path) -> None:
    """A hung NCCL rank's verdict lists NCCL_P2P_DISABLE etc. as set and the flight recorder's last entries."""
    dump = tmp_path / "nccl_trace_rank_1"
    dump.write_bytes(pickle.dumps({"entries": [{"collective_seq_id": 4, "profiling_name": "nccl:all_reduce",
                                                "state": "scheduled", "input_sizes": [[1024]]}]}))
    record = read_flight_record(str(dump))
    assert record == "#4 nccl:all_reduce scheduled in=[[1024]]"
    hung = RankOutcome(1, ({"event": "ready"}, {"event": "begin", "check": "init", "dtype": ""}), None, True, 70.0,
                       flight_record=record)
    (r,) = rank_verdicts([hung], "nccl", {"NCCL_P2P_DISABLE": "1", "NCCL_SOCKET_IFNAME": "eth0"}, 70.0)
    assert r.status == "timeout" and r.id == "dist.init"
    assert "NCCL_P2P_DISABLE=1, NCCL_IB_DISABLE=unset, NCCL_SOCKET_IFNAME=eth0" in r.detail
    assert "flight recorder: #4 nccl:all_reduce scheduled" in r.detail


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps([1, 2]), pickle.dumps({"entries": 5})])
def test_an_unreadable_flight_record_is_no_summary(tmp_path: Path, content: bytes) -> None:
    """Empty, garbage or oddly shaped dumps give '' (never an exception); a missing file too."""
    p = tmp_path / "dump"
    p.write_bytes(content)
    assert read_flight_record(str(p)) == ""
    assert read_flight_record(str(tmp_path / "missing")) == ""


# `nvidia-smi topo -m` as it prints on a 4-GPU host (tabs; a bold/underlined header on a terminal).
TOPO = ("\x1b[4m\tGPU0\tGPU1\tGPU2\tGPU3\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
        "GPU0\t X \tNV18\tNV18\tSYS\t0-51\t0\t\tN/A\n"
        "GPU1\tNV18\t X \tNV18\tSYS\t0-51\t0\t\tN/A\n"
        "GPU2\tNV18\tNV18\t X \tSYS\t0-51\t0\t\tN/A\n"
        "GPU3\tSYS\tSYS\tSYS\t X \t52-103\t1\t\tN/A\n"
        "\nLegend:\n\n  X    = Self\n  SYS  = Connection traversing PCIe as well as the SMP interconnect\n")


def test_topology_parsing_and_the_weakest_link_of_the_ranks_used() -> None:
    """Pairs and links from the table; 3 ranks ride NVLink (NV18 = 450 GB/s), a 4th brings the PCIe hop in."""
    from doctor.probes.distributed.link import parse_topology, rated_gbs, weakest_link

    links = parse_topology(TOPO)
    assert links[(0, 1)] == "NV18" and links[(3, 0)] == "SYS" and (0, 0) not in links and len(links) == 12
    assert weakest_link(links, 3, "NVIDIA H100 80GB HBM3") == ("NV18", 450.0, (0, 1))
    assert weakest_link(links, 4, "NVIDIA H100 80GB HBM3") == ("SYS", 64.0, (0, 3))
    assert weakest_link(links, 4, "Some Future GPU") is None  # its PCIe hop has no rating: no honest grade
    assert weakest_link(links, 3, "Some Future GPU") == ("NV18", 450.0, (0, 1))
    assert rated_gbs("NV4", "x") == 100.0 and rated_gbs("PIX", "Tesla T4") == 16.0 and rated_gbs("??", "H100") is None
    assert parse_topology("") == {} and parse_topology("garbage\nGPU0\tX") == {}


def test_link_grade_and_its_finding() -> None:
    """busbw at the largest size vs the link: >= half passes, below is a warning finding (exit 1), unknown is skipped."""
    from doctor.probes.distributed.findings import distributed_findings
    from doctor.probes.distributed.launcher import DistRun
    from doctor.probes.distributed.link import grade
    from doctor.report_data import exit_code_for
    from doctor.verdicts import ProbeResult
    from doctor.probes.distributed.verdicts import BandwidthRow

    rows = [BandwidthRow("all_reduce", 1 << 20, 100.0, 10.0, 15.0), BandwidthRow("all_reduce", 1 << 28, 1000.0, 240.0, 360.0)]
    ok = grade(rows, ("NV18", 450.0, (0, 1)), "nccl")
    assert ok.status == "pass" and "360.0 GB/s" in ok.detail and "80%" in ok.detail
    slow = grade(rows, ("NV18", 900.0, (0, 1)), "nccl")
    assert slow.status == "wrong-result" and slow.error == pytest.approx(0.6)
    assert grade(rows, None, "nccl").status == "skipped" and grade([], ("NV18", 450.0, (0, 1)), "nccl").status == "skipped"
    passed = ProbeResult("dist.init", "nccl:rank0", "pass", error=0.0, tolerance=0.0)
    run = DistRun("nccl", 2, (passed, slow), (), (), 60.0, 1.0)
    fs = distributed_findings(run)
    assert [(f.id, f.severity.label) for f in fs] == [("distributed.link-slow", "warn")] and exit_code_for(fs) == 1


def test_ranks_that_cannot_start_or_die_at_startup(tmp_path: Path) -> None:
    """A missing interpreter: an error verdict per rank; one that exits 1 before torch: each rank's exit and output."""
    run = run_distributed(2, "gloo", timeout=5, python=str(tmp_path / "no-such-python"))
    assert [(r.id, r.backend, r.status) for r in run.results] == [("dist.startup", "gloo:rank0", "error"),
                                                                  ("dist.startup", "gloo:rank1", "error")]
    assert all("cannot start the rank process" in r.detail for r in run.results)
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ImportError: no torch here' >&2\nexit 1\n")
    fake.chmod(0o755)
    run = run_distributed(2, "gloo", timeout=5, python=str(fake))
    assert [(r.id, r.status) for r in run.results] == [("dist.startup", "error")] * 2
    assert all("died starting (import torch): exit code 1" in r.detail and "no torch here" in r.stderr_tail
               for r in run.results), run.results
    assert gone(list(run.pids))


def test_a_rank_dead_before_torch_leaves_its_peer_blaming_it(tmp_path: Path) -> None:
    """Rank 1's interpreter fails before `import torch`; rank 0 waits in init until killed, its verdict blames rank 1."""
    from doctor.probes.distributed.findings import distributed_findings

    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nif [ "$RANK" = 1 ]; then echo "rank 1 broken interpreter" >&2; exit 1; fi\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    t0 = time.monotonic()
    run = run_distributed(2, "gloo", timeout=3, python=str(wrapper), env=env_with(PYTHONPATH=str(REPO)))
    assert time.monotonic() - t0 < 60
    by = {(r.backend, r.id): r for r in run.results}
    dead = by[("gloo:rank1", "dist.startup")]
    assert dead.status == "error" and "exit code 1" in dead.detail and "broken interpreter" in dead.stderr_tail
    stuck = by[("gloo:rank0", "dist.init")]
    assert stuck.status == "timeout" and stuck.detail.startswith("waiting on a peer (rank 1 died): rank 0")
    assert [f.subject for f in distributed_findings(run)] == ["gloo:rank1"] and gone(list(run.pids))
