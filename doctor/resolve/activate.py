"""A venv's bin/activate that exports uv's constraint variables (uv never reads pip.conf), reversibly.

The edit is text only: the variables are exported in a marked block at the end, and unset by the
script's own deactivate(). Restoring is the caller's byte-for-byte backup, never an edit back.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Optional

from doctor._util.files import read_bytes
from doctor.envvars import UV_BUILD_CONSTRAINT, UV_CONSTRAINT
from doctor.resolve.pip_config import decode

BEGIN = "# >>> tune-doctor pins (`doctor pin --unhook` removes this block) >>>"
END = "# <<< tune-doctor pins <<<"
_READ_LIMIT = 1024 * 1024  # an activate script is a few KiB; the block is looked for in the first MiB


def activate_path(prefix: str) -> Optional[str]:
    """The environment's bin/activate, or None when it has none (not a venv)."""
    path = os.path.join(prefix, "bin", "activate")
    return path if os.path.isfile(path) else None


def with_uv_exports(text: str, cfile: str, bfile: str) -> str:
    """activate with the uv variables exported at its end and unset by its deactivate()."""
    unset = f"    unset {UV_CONSTRAINT} {UV_BUILD_CONSTRAINT}  # tune-doctor pins\n"
    out = re.sub(r"^(deactivate \(\) \{\n)", lambda m: m.group(1) + unset, text, count=1, flags=re.M)
    block = (f"\n{BEGIN}\n# uv never reads pip.conf: these keep `uv pip install` within the pins\n"
             f"export {UV_CONSTRAINT}={shlex.quote(cfile)}\nexport {UV_BUILD_CONSTRAINT}={shlex.quote(bfile)}\n"
             f"{END}\n")
    return out + ("" if out.endswith("\n") else "\n") + block


def exports_uv(path: str) -> bool:
    """Whether the script at `path` holds the block with_uv_exports writes (False when unreadable)."""
    try:
        return BEGIN in decode(read_bytes(path, _READ_LIMIT))
    except OSError:
        return False
