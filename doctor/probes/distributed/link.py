"""Grading the all-reduce bus bandwidth against the link between the GPUs (`nvidia-smi topo -m`).

GPU-only, and untested on a real multi-GPU host so far (none was lent): the parsing and the grade are
tested on a recorded `topo -m` table; the rated figures are the vendors' per-direction numbers
(NVLink 2-4: 25 GB/s per link, so NV18 on H100/H200 = 450 GB/s; PCIe 4.0 x16 ~32 GB/s, 5.0 x16 ~64 GB/s).
A grade is a floor, not a benchmark: busbw under half the rated figure at the largest size means the
link is not doing what it should (a PCIe fallback, P2P off, a degraded NVLink), not that NCCL is slow.
"""

from __future__ import annotations

import re
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

from doctor._util.proc import run
from doctor._util.timeouts import TimedOut
from doctor.probes.distributed.verdicts import BandwidthRow
from doctor.verdicts import ProbeResult

TOPO_TIMEOUT = 10.0
NVLINK_GBS_PER_LINK = 25.0
PCIE_GBS = (("H100", 64.0), ("H200", 64.0), ("B200", 64.0), ("L40", 32.0), ("A100", 32.0), ("A10", 32.0), ("A40", 32.0),
            ("L4", 32.0), ("RTX 40", 32.0), ("RTX 30", 32.0), ("V100", 16.0), ("T4", 16.0))  # x16, per direction
PCIE_LINKS = ("PIX", "PXB", "PHB", "NODE", "SYS")
MIN_FRACTION = 0.5  # of the rated figure: below it the link is graded as not performing
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def topology_table(timeout: float = TOPO_TIMEOUT) -> Optional[str]:
    """`nvidia-smi topo -m` output, or None when it is missing, fails or hangs."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = run([exe, "topo", "-m"], timeout)
    except (TimedOut, OSError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_topology(text: str) -> Dict[Tuple[int, int], str]:
    """{(i, j): 'NV18' | 'PIX' | ...} for every GPU pair in a `topo -m` table (colour codes ignored)."""
    lines = [_ANSI.sub("", ln) for ln in text.splitlines()]
    header: List[str] = []
    links: Dict[Tuple[int, int], str] = {}
    for ln in lines:
        cells = [c.strip() for c in ln.split("\t")]
        if not header and any(re.fullmatch(r"GPU\d+", c) for c in cells):
            header = cells
            continue
        if header and cells and re.fullmatch(r"GPU\d+", cells[0]):
            i = int(cells[0][3:])
            for col, cell in zip(header[1:], cells[1:]):
                if re.fullmatch(r"GPU\d+", col) and cell and cell != "X":
                    links[(i, int(col[3:]))] = cell
    return links


def rated_gbs(link: str, gpu_name: str) -> Optional[float]:
    """The link's rated per-direction bandwidth in GB/s (None when unknown)."""
    m = re.fullmatch(r"NV(\d+)", link)
    if m:
        return int(m.group(1)) * NVLINK_GBS_PER_LINK
    if link in PCIE_LINKS:
        return next((gbs for key, gbs in PCIE_GBS if key in gpu_name), None)
    return None


def weakest_link(links: Dict[Tuple[int, int], str], ranks: int, gpu_name: str) -> Optional[Tuple[str, float, Tuple[int, int]]]:
    """(link, rated GB/s, pair) of the slowest link among the first `ranks` GPUs (a ring is as fast as it); None if any is unrated."""
    rated = [(rated_gbs(v, gpu_name), v, k) for k, v in links.items() if k[0] < ranks and k[1] < ranks]
    known = [(g, v, k) for g, v, k in rated if g is not None]
    if not known or len(known) < len(rated):  # a pair without a rating may be the slowest: no honest grade
        return None
    g, v, k = min(known)
    return v, float(g), k


def grade(rows: Sequence[BandwidthRow], link: Optional[Tuple[str, float, Tuple[int, int]]], backend: str) -> ProbeResult:
    """A verdict on the largest all-reduce's busbw against the link (skipped when either is unknown)."""
    ar = [r for r in rows if r.collective == "all_reduce"]
    if link is None or not ar:
        why = "no link rating (nvidia-smi topo -m unreadable or the link unknown)" if link is None else "no all-reduce timing"
        return ProbeResult("dist.link", backend, "skipped", op="bandwidth", detail=why)
    top = max(ar, key=lambda r: r.bytes)
    name, rated, (a, b) = link
    frac = top.busbw_gbs / rated
    status = "pass" if frac >= MIN_FRACTION else "wrong-result"
    detail = (f"all-reduce busbw {top.busbw_gbs:.1f} GB/s at {top.bytes} bytes = {frac:.0%} of the link GPU{a}-GPU{b} "
              f"{name} ({rated:g} GB/s rated per direction); below {MIN_FRACTION:.0%} is graded as not performing")
    return ProbeResult("dist.link", backend, status, error=round(1.0 - frac, 4), tolerance=1.0 - MIN_FRACTION,
                       op="bandwidth", detail=detail)
