"""GPUs and driver from `nvidia-smi --query-gpu=...`: compute capability and memory that procfs lacks.

Run without a shell, in its own process group, with the time left of the detection budget
(doctor._util.proc.run): a hung nvidia-smi, or a grandchild of it still holding our pipes, is killed.
"""

from __future__ import annotations

import os
import re
from typing import List, Mapping, Optional, Sequence, Union

from doctor._util.files import describe_os_error
from doctor.envvars import PATH
from doctor.facts import GPU
from doctor.inventory.gpu.detection import CC_RE, DRIVER_RE, NA, Detection, short

SMI_QUERY = "index,name,compute_cap,memory.total,driver_version,uuid"
# Drivers before ~510 do not know compute_cap; retried without it.
SMI_QUERY_OLD = "index,name,memory.total,driver_version,uuid"


def query_nvidia_smi(
    command: Union[str, Sequence[str]] = "nvidia-smi",
    *,
    timeout: float = 3.0,
    environ: Optional[Mapping[str, str]] = None,
) -> Detection:
    """Run `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` with a timeout; failures are notes."""
    import shutil
    import time

    found = Detection("nvidia-smi")
    environ = os.environ if environ is None else environ
    if isinstance(command, str):
        resolved = shutil.which(command, path=environ.get(PATH, os.defpath))
        if resolved is None:
            found.notes.append(f"nvidia-smi: {command!r} not found on PATH")
            return found
        argv = [resolved]
    else:
        argv = list(command)
    # Lazy: subprocess and tempfile cost milliseconds, and a machine without nvidia-smi never needs them.
    from doctor._util.proc import run
    from doctor._util.timeouts import TimedOut

    deadline = time.monotonic() + timeout
    for query in (SMI_QUERY, SMI_QUERY_OLD):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            found.notes.append(f"nvidia-smi: no time left for the query {query!r}")
            return found
        try:
            done = run(argv + [f"--query-gpu={query}", "--format=csv,noheader,nounits"], remaining)
        except TimedOut:
            found.notes.append(f"nvidia-smi: no answer within {timeout:.1f} s, killed")
            return found
        except OSError as exc:
            found.notes.append(f"nvidia-smi: cannot run {argv[0]!r}: {describe_os_error(exc)}")
            return found
        if done.returncode != 0:
            said = _last_line(done.stdout + "\n" + done.stderr)
            if query == SMI_QUERY and "compute_cap" in (done.stdout + done.stderr):
                continue  # old driver: ask again without compute_cap
            found.notes.append(f"nvidia-smi: exited with status {done.returncode}: {short(said, 120)}")
            return found
        parse_smi_output(done.stdout, query, found)
        if not found.gpus and not found.notes:
            found.notes.append("nvidia-smi: ran but listed no GPU")
        return found
    return found


def parse_smi_output(out: str, query: str, found: Detection) -> None:
    """Fill `found` from nvidia-smi CSV rows for `query`; rows that do not parse become one note."""
    columns = query.split(",")
    bad: List[str] = []
    for line in out.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < len(columns):
            bad.append(line)
            continue
        # A GPU name could hold a comma: everything between index and the fixed tail is the name.
        tail = len(columns) - 2
        row = dict(zip(columns, [cells[0], ", ".join(cells[1 : len(cells) - tail])] + cells[len(cells) - tail :]))
        try:
            index = int(row["index"])
        except ValueError:
            bad.append(line)
            continue
        cc = None
        cc_match = CC_RE.match(row.get("compute_cap", ""))
        if cc_match:
            cc = (int(cc_match.group(1)), int(cc_match.group(2)))
        memory = row.get("memory.total", "")
        driver = row.get("driver_version", "")
        if driver and DRIVER_RE.match(driver) and found.driver_version is None:
            found.driver_version = driver
        uuid = row.get("uuid", "")
        found.gpus.append(
            GPU(
                index=index,
                name=row["name"] or "unknown",
                compute_capability=cc,
                memory_mib=int(memory) if re.fullmatch(r"[0-9]+", memory) else None,
                uuid=uuid if uuid.lower() not in NA else None,
            )
        )
    if bad:
        found.notes.append(f"nvidia-smi: {len(bad)} line(s) of unexpected output, e.g. {short(bad[0], 100)}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
