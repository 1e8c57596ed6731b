"""Request documents for the service's tests and its benchmark, built from the recorded worlds.

`recorded_doc("S4")` is a realistic Facts document: the 76 distributions of the recorded Unsloth stack
(tests/resolve/index/data, real METADATA with every Requires-Dist line), torch's build from its recorded
torch/version.py, xformers' from its cpp_lib.json, on an A100 with a 550 driver, as a client would send it.
"""

from __future__ import annotations

import ast
import json
from email.parser import Parser
from pathlib import Path
from typing import Any, Dict, List, Optional

from packaging.utils import canonicalize_name

DATA = Path(__file__).resolve().parents[1] / "resolve" / "index" / "data"

A100 = {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0", "memory_mib": 81920}


def _record(index: str, name: str, version: str) -> Dict[str, Any]:
    for idx in (index, "pypi", "cu121", "cu124"):
        p = DATA / idx / canonicalize_name(name) / f"{version}.json"
        if p.is_file():
            return dict(json.loads(p.read_text()))
    raise FileNotFoundError(f"no recording of {name}=={version}")


def _members(rec: Dict[str, Any]) -> Dict[str, str]:
    m = rec.get("members") or {}
    return dict(json.loads(m) if isinstance(m, str) else m)


def _torch_build(text: str) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for node in ast.parse(text).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and value is not None:
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                pass
    return {"version": values.get("__version__"), "cuda": values.get("cuda"), "hip": values.get("hip"),
            "git_version": values.get("git_version"), "error": False}


def recorded_doc(scenario: str = "S4", packages: Optional[List[str]] = None) -> Dict[str, Any]:
    """The request document for a recorded scenario (data/scenarios.json), as the client would send it."""
    pins = json.loads((DATA / "scenarios.json").read_text())[scenario]["installed"]
    dists, torch_build, xformers_build = [], None, None
    for pin in pins:
        index, _, rest = pin.rpartition(":")
        name, _, version = rest.partition("==")
        rec = _record(index or "pypi", name, version)
        meta = Parser().parsestr(rec["metadata"], headersonly=True)
        dists.append({"name": canonicalize_name(name), "version": meta["Version"] or version,
                      "requires": [r for r in meta.get_all("Requires-Dist") or []], "installer": "pip"})
        members = _members(rec)
        if "torch/version.py" in members:
            torch_build = _torch_build(members["torch/version.py"])
            dists[-1]["version"] = torch_build["version"] or dists[-1]["version"]
        if "xformers/cpp_lib.json" in members:
            cpp = json.loads(members["xformers/cpp_lib.json"])
            env = cpp.get("env", {})
            xformers_build = {"torch": cpp.get("torch_version"), "cuda": cpp.get("cuda_version"),
                              "python": cpp.get("python_version"), "arch_list": env.get("TORCH_CUDA_ARCH_LIST"),
                              "error": False}
    facts = {
        "python": {"version": "3.11.9", "implementation": "CPython"},
        "platform": {"system": "Linux", "machine": "x86_64", "release": "6.1.0-28-amd64", "libc": "glibc",
                     "libc_version": "2.36"},
        "environment": ["venv"],
        "markers": {"implementation_name": "cpython", "os_name": "posix", "platform_machine": "x86_64",
                    "platform_python_implementation": "CPython", "platform_system": "Linux",
                    "python_full_version": "3.11.9", "python_version": "3.11", "sys_platform": "linux"},
        "distributions": sorted(dists, key=lambda d: d["name"]),
        "torch_build": torch_build, "xformers_build": xformers_build,
        "driver": "550.54.15", "cuda_driver": "12.4", "gpus": [A100],
    }
    return {"schema_version": 1, "facts": facts, "packages": packages or []}


def minimal_doc(**facts: Any) -> Dict[str, Any]:
    """The smallest valid request, with `facts` fields laid over it."""
    base: Dict[str, Any] = {"python": {"version": "3.11.9"}, "platform": {"system": "Linux", "machine": "x86_64"}}
    base.update(facts)
    return {"facts": base}
