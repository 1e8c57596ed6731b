"""A distributed probe's verdicts -> Findings: the ranks that failed, not the peers that waited for them."""

from __future__ import annotations

from typing import List

from doctor.findings import Category, Finding, Severity, finding
from doctor.probes.distributed.launcher import DistRun

VICTIM_PREFIX = "waiting on a peer"  # verdicts.rank_verdicts starts a peer-blamed failure so
LINK_ID = "dist.link"  # link.grade's verdict
EXPLAIN_LINK = ("All-reduce moved data at under half the link's rated bandwidth: multi-GPU training would be slower than "
                "it should. Look for NCCL_P2P_DISABLE=1 left set, a PCIe path where NVLink was expected (nvidia-smi topo -m), "
                "or a degraded NVLink (nvidia-smi nvlink -s).")
EXPLAIN = {
    "timeout": "A rank stopped answering inside a collective: training across these processes would hang there. "
               "With NCCL, compare with NCCL_P2P_DISABLE=1 (peer-to-peer transport) and NCCL_IB_DISABLE=1, and check "
               "NCCL_SOCKET_IFNAME names an interface every rank can reach.",
    "crash": "A rank was killed by a signal during the probe; its stderr tail is the evidence.",
    "error": "A rank failed to set up or run a collective; its stderr tail is the evidence.",
    "wrong-result": "A collective returned wrong values: data-parallel gradients would be silently wrong.",
}


def distributed_findings(run: DistRun) -> List[Finding]:
    """One error finding per failing rank step (peers that only waited on it are folded in); one ok finding when all passed."""
    out: List[Finding] = []
    for r in run.results:
        if r.passed or r.status == "skipped" or r.detail.startswith(VICTIM_PREFIX):
            continue
        if r.id == LINK_ID:  # slow, not wrong: a warning
            out.append(finding("distributed.link-slow", Severity.WARN, Category.GPU, f"{r.backend}: {r.detail[:120]}",
                               {"detail": r.detail}, EXPLAIN_LINK, subject=r.backend))
            continue
        out.append(finding(f"distributed.{r.status}", Severity.ERROR, Category.GPU,
                           f"{r.backend}: {r.id} {r.status}", {"rank": r.backend, "step": r.id, "detail": r.detail[:500]},
                           EXPLAIN.get(r.status, ""), subject=r.backend))
    if not out and any(not r.passed for r in run.results):  # only victims left: name them rather than pass
        for r in run.results:
            if not r.passed:
                out.append(finding(f"distributed.{r.status}", Severity.ERROR, Category.GPU, f"{r.backend}: {r.id} {r.status}",
                                   {"rank": r.backend, "step": r.id, "detail": r.detail[:500]}, subject=r.backend))
    if not out:
        out.append(finding("distributed.ok", Severity.OK, Category.GPU,
                           f"all-reduce and all-gather correct on {run.world_size} {run.backend} ranks",
                           {"backend": run.backend, "ranks": run.world_size}))
    return out
