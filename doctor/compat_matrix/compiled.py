"""compiled.json: a pre-parsed copy of the TOML data files, keyed by their bytes.

Parsing 35 KB of TOML with the pure-python tomllib is most of a cold load; json is C-accelerated.
The copy is only a cache: validation still runs on what it holds, and a stale or tampered copy is a miss.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from doctor.compat_matrix.files import DEFAULT_DIR, FILES, parse, read_bytes

COMPILED = "compiled.json"


def sources_digest(raws: Mapping[str, bytes]) -> str:
    """CRC-32 and size over the data files' names and bytes: the key of the pre-parsed copy.

    It only has to notice edits (validation runs on whatever is loaded); hashlib's OpenSSL import
    alone costs more than the whole lookup.
    """
    crc, size = 0, 0
    for name in sorted(raws):
        chunk = name.encode() + b"\0" + raws[name] + b"\0"
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return f"crc32:{crc:08x}:{size}"


def preparsed(directory: Path, raws: Mapping[str, bytes]) -> Optional[Dict[str, Dict[str, Any]]]:
    """The parsed documents from compiled.json when it was made from exactly these bytes, else None."""
    try:
        doc = json.loads((directory / COMPILED).read_bytes())
    except (OSError, ValueError, RecursionError):  # a corrupt cache is a miss: the TOML is read instead
        return None
    if not isinstance(doc, dict) or doc.get("digest") != sources_digest(raws) or not isinstance(doc.get("documents"), dict):
        return None
    docs = doc["documents"]
    return docs if set(docs) == set(raws) and all(isinstance(v, dict) for v in docs.values()) else None


def compile_data(directory: Optional[Union[Path, str]] = None) -> Path:
    """Write compiled.json (pre-parsed TOML) beside the data files, atomically; returns its path."""
    d = Path(directory) if directory is not None else DEFAULT_DIR
    raws = {name: read_bytes(d / name) for name in FILES}
    documents = {name: parse(name, raw) for name, raw in raws.items()}
    payload = json.dumps({"digest": sources_digest(raws), "documents": documents}, sort_keys=True, separators=(",", ":"))
    tmp = d / (COMPILED + ".tmp")
    tmp.write_text(payload + "\n", encoding="utf-8")
    os.replace(tmp, d / COMPILED)
    return d / COMPILED
