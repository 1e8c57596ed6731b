"""Record the real index bytes the refresh tests serve (run by hand, with network; tests never run it).

    python -m tests.compat_matrix.refresh.record

For each wheel in WHEELS it reads, through the refresh's own LazyWheel, what a refresh reads: the zip's
central directory (the part the refresh needs) and the members it inflates (METADATA, xformers/cpp_lib.json).
It stores only those byte ranges, zlib-compressed, with the file's length and the index's sha256, plus the
METADATA text (served as the PEP 658 `.metadata` file in the tests). Everything else of the wheel is not
stored: the test server answers zeros there, which no zip parser would take for a directory entry.

Output: recorded/<project>/<wheel file name>.json (a few KB each).
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

from doctor.compat_matrix.refresh import lazy_wheel
from doctor.compat_matrix.refresh.fetch import Fetcher
from doctor.compat_matrix.refresh.simple_api import DEFAULT_INDEX, project_files

OUT = Path(__file__).resolve().parent / "recorded"
WHEELS: Dict[str, Tuple[str, ...]] = {
    "xformers": (
        "xformers-0.0.20-cp311-cp311-manylinux2014_x86_64.whl",  # ==2.0.1, built 2.0.1+cu118
        "xformers-0.0.28.post3-cp311-cp311-manylinux_2_28_x86_64.whl",  # ==2.5.1, but built cu121 (torch there is cu124)
        "xformers-0.0.35-py39-none-manylinux_2_28_x86_64.whl",  # >=2.10 (loose), built 2.10.0+cu128
    ),
    # torch 2.15.0's METADATA is listed in the last 64 KiB of its central directory: the tail is enough.
    "torch": ("torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl",),
}
# METADATA only (their central directories are ~1.2 MB): served as PEP 658 files, never by Range.
# torch 2.2.1 requires triton only for python < 3.12: the cp312 wheel has no triton requirement.
METADATA_ONLY: Dict[str, Tuple[str, ...]] = {
    "torch": ("torch-2.2.1-cp311-cp311-manylinux1_x86_64.whl", "torch-2.2.1-cp312-cp312-manylinux1_x86_64.whl"),
}


class _Recording(Fetcher):
    def __init__(self) -> None:
        super().__init__()
        self.ranges: List[Tuple[int, bytes]] = []

    def get_range(self, url: str, start: int, end: int, what: str = "") -> bytes:
        data = super().get_range(url, start, end, what)
        self.ranges.append((start, data))
        return data


def record_one(fetcher: _Recording, url: str, filename: str, sha256: str) -> Dict[str, object]:
    """The recorded ranges and METADATA of one wheel."""
    fetcher.ranges = []
    wheel = lazy_wheel.LazyWheel(fetcher, url, filename)
    members = wheel.members(lambda n: n == "xformers/cpp_lib.json" or (n.endswith(".dist-info/METADATA") and n.count("/") == 1))
    tail_start, tail = fetcher.ranges[0]
    cd_start, _, _ = wheel._directory(tail, tail_start)
    segments = []
    for start, data in fetcher.ranges:
        if start == tail_start:  # keep the directory part of the tail only (the rest is compressed binary)
            cut = max(0, cd_start - start)
            start, data = start + cut, data[cut:]
        segments.append([start, base64.b64encode(zlib.compress(data, 9)).decode()])
    metadata = next(v for k, v in members.items() if k.endswith("METADATA"))
    return {
        "filename": filename,
        "length": wheel.length,
        "sha256": sha256,
        "metadata": metadata.decode("utf-8"),
        "members": sorted(members),
        "segments": segments,
    }


def main() -> None:
    """Record every wheel of WHEELS (and the METADATA of METADATA_ONLY) from the default index."""
    with _Recording() as fetcher:
        for project in sorted(set(WHEELS) | set(METADATA_ONLY)):
            files = {f.filename: f for f in project_files(fetcher, DEFAULT_INDEX, project)}
            for name in WHEELS.get(project, ()) + METADATA_ONLY.get(project, ()):
                f = files[name]
                rec = record_one(fetcher, f.url, name, f.sha256 or "")
                if name in METADATA_ONLY.get(project, ()):
                    rec["segments"], rec["members"], rec["metadata_only"] = [], [], True
                out = OUT / project / f"{name}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(rec, indent=1) + "\n")
                print(f"{out.relative_to(OUT)}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
