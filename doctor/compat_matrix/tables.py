"""One loader per data file: validate its rows with Doc, build the model records, hand them to the Builder.

Each loader names the tables its file may hold (anything else is an error: typos, stray data) and
checks what the rows mean beyond their types (unique keys, versions that parse, cross-file references).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Set, Tuple

from packaging.version import Version

from doctor.compat_matrix.assemble import Builder
from doctor.compat_matrix.document import Doc, Fields, show
from doctor.compat_matrix.model import (
    ArchSet,
    BnbArchs,
    BnbLoader,
    BnbWheel,
    CacheFallback,
    DriverFloor,
    GpuFeature,
    GpuName,
    KnownIssue,
    OptionalRequirement,
    RangeRequirement,
    Requirement,
    StableAbi,
    XformersException,
)

_CUDA_RE = re.compile(r"^\d+\.\d+$")
_MINOR_RE = re.compile(r"^\d+\.\d+$")
_VARIANT_RE = re.compile(r"^cu\d{3,}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _xformers_torch(doc: Doc, b: Builder) -> None:
    """xformers version -> torch requirement; known-good exceptions to the pin; stable-ABI releases."""
    doc.check_tables({"meta", "sources", "requirement", "exception", "stable_abi", "note"})
    fields: Fields = {
        "xformers": ("str", True), "torch": ("str", True), "source": ("str", True), "note": ("str", False),
        "wheel_torch": ("str", False), "wheel_cuda": ("str", False), "wheel_source": ("str", False),
    }
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("requirement", fields):
        v = doc.version(f"{where}.xformers", row["xformers"])
        doc.unique(seen, v, f"{where}.xformers")
        wheel_torch, wheel_cuda = row.get("wheel_torch", ""), row.get("wheel_cuda", "")
        if bool(wheel_torch) != bool(wheel_cuda):
            doc.fail(f"{where}.{'wheel_cuda' if wheel_torch else 'wheel_torch'}", "missing (wheel_torch and wheel_cuda go together)")
        if wheel_torch:
            wt = doc.version(f"{where}.wheel_torch", wheel_torch)
            if not wt.local or not _VARIANT_RE.match(wt.local) or len(wt.release) != 3:
                doc.fail(f"{where}.wheel_torch", f"invalid torch build {show(wheel_torch)} (expected 'X.Y.Z+cuXYZ')")
            doc.match(f"{where}.wheel_cuda", wheel_cuda, _CUDA_RE, "CUDA version", "'X.Y'")
            if not row.get("wheel_source"):
                doc.fail(f"{where}.wheel_source", "missing (the wheel's build facts need their source)")
        rows.append(Requirement(row["xformers"], doc.spec(f"{where}.torch", row["torch"]), row["source"], row.get("note", ""),
                                wheel_torch=wheel_torch, wheel_cuda=wheel_cuda, wheel_source=row.get("wheel_source", "")))
    b.tables["xformers_torch"] = tuple(rows)
    known = {Version(r.version): r for r in rows}

    exceptions = []
    seen = {}
    fields = {
        "xformers": ("str", True), "torch": ("str", True), "source": ("str", True), "evidence": ("str", True),
        "reports": ("strlist", False), "reports_source": ("str", False), "note": ("str", False),
    }
    for where, row in doc.rows("exception", fields, required=False):
        xv = doc.version(f"{where}.xformers", row["xformers"])
        tv = doc.release(f"{where}.torch", row["torch"], parts=(3,))
        doc.unique(seen, (xv, tv), where)
        req = known.get(xv)
        if req is None:
            doc.fail(f"{where}.xformers", f"{show(row['xformers'])} is not a requirement row of this file")
        if req.spec.contains(tv, prereleases=True):
            doc.fail(f"{where}.torch", f"{show(row['torch'])} already meets xformers {row['xformers']}'s requirement torch{req.spec}")
        if row.get("reports") and not row.get("reports_source"):
            doc.fail(f"{where}.reports_source", "missing (reports need their source)")
        exceptions.append(XformersException(row["xformers"], tv, row["source"], row["evidence"], tuple(row.get("reports", ())),
                                            row.get("reports_source", ""), row.get("note", "")))
    b.tables["xformers_exceptions"] = tuple(exceptions)

    stable = []
    fields = {"xformers": ("str", True), "built_for": ("str", True), "source": ("str", True), "note": ("str", False)}
    for where, row in doc.rows("stable_abi", fields, required=False):
        stable.append(StableAbi(doc.spec(f"{where}.xformers", row["xformers"]), doc.spec(f"{where}.built_for", row["built_for"]),
                                row["source"], row.get("note", "")))
    b.tables["xformers_stable_abi"] = tuple(stable)
    b.notes_of(doc)


def _torch_triton(doc: Doc, b: Builder) -> None:
    """torch release -> triton pin."""
    doc.check_tables({"meta", "sources", "pin", "note"})
    fields: Fields = {"torch": ("str", True), "triton": ("str", True), "source": ("str", True), "note": ("str", False)}
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("pin", fields):
        v = doc.release(f"{where}.torch", row["torch"], parts=(3,))
        doc.unique(seen, v, f"{where}.torch")
        rows.append(Requirement(row["torch"], doc.spec(f"{where}.triton", row["triton"]), row["source"], row.get("note", "")))
    b.tables["torch_triton"] = tuple(rows)
    b.notes_of(doc)


def _torch_cuda(doc: Doc, b: Builder) -> None:
    """Default CUDA of the index wheel, CUDA variants on the download index, the index URL."""
    doc.check_tables({"meta", "sources", "index", "default_cuda", "variants", "note"})
    index = doc.table("index", {"url": ("str", True), "source": ("str", True)})
    if not re.match(r"^https?://\S+$", index["url"]):
        doc.fail("index.url", f"invalid URL {show(index['url'])}")
    b.tables["torch_index_url"] = index["url"].rstrip("/")

    default: Dict[str, str] = {}
    seen: Dict[Any, str] = {}
    for where, row in doc.rows("default_cuda", {"torch": ("str", True), "cuda": ("str", True), "source": ("str", True)}):
        t = doc.match(f"{where}.torch", row["torch"], _MINOR_RE, "torch minor", "'X.Y'")
        doc.unique(seen, t, f"{where}.torch")
        default[t] = doc.match(f"{where}.cuda", row["cuda"], _CUDA_RE, "CUDA version", "'X.Y'")
    b.tables["torch_default_cuda"] = default

    variants: Dict[str, Tuple[str, ...]] = {}
    uncertain: Set[str] = set()
    seen = {}
    fields: Fields = {
        "torch": ("str", True), "variants": ("strlist", True), "uncertain": ("bool", False),
        "note": ("str", False), "source": ("str", True),
    }
    for where, row in doc.rows("variants", fields):
        t = doc.match(f"{where}.torch", row["torch"], _MINOR_RE, "torch minor", "'X.Y'")
        doc.unique(seen, t, f"{where}.torch")
        if not row["variants"]:
            doc.fail(f"{where}.variants", "empty")
        for j, tag in enumerate(row["variants"]):
            doc.match(f"{where}.variants[{j}]", tag, _VARIANT_RE, "CUDA variant", "'cuXYZ'")
        variants[t] = tuple(row["variants"])
        if row.get("uncertain", False):
            uncertain.add(t)
        if row.get("note"):
            b.note(doc, f"{where}.note", f"torch_cuda_variants.{t}", row["note"])
    b.tables["torch_cuda_variants"] = variants
    b.tables["torch_cuda_variants_uncertain"] = frozenset(uncertain)
    b.notes_of(doc)


def _cuda_driver(doc: Doc, b: Builder) -> None:
    """CUDA toolkit -> minimum Linux driver."""
    doc.check_tables({"meta", "sources", "floor", "note"})
    fields: Fields = {
        "cuda": ("str", True), "toolkit": ("str", True), "minor_compat": ("str", True),
        "source": ("str", True), "minor_compat_source": ("str", False),
    }
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("floor", fields):
        cuda = doc.match(f"{where}.cuda", row["cuda"], _CUDA_RE, "CUDA version", "'X.Y'")
        doc.unique(seen, cuda, f"{where}.cuda")
        rows.append(DriverFloor(
            cuda=cuda,
            toolkit=doc.version(f"{where}.toolkit", row["toolkit"]),
            minor_compat=doc.version(f"{where}.minor_compat", row["minor_compat"]),
            source=row["source"],
            minor_compat_source=row.get("minor_compat_source", ""),
            toolkit_text=row["toolkit"],
            minor_compat_text=row["minor_compat"],
        ))
    b.tables["cuda_min_driver"] = tuple(rows)
    b.notes_of(doc)


def _torch_cuda_archs(doc: Doc, b: Builder) -> None:
    """Compute capabilities per torch CUDA variant and torch range."""
    doc.check_tables({"meta", "sources", "arch_set", "note"})
    fields: Fields = {
        "variant": ("str", True), "torch": ("str", True), "archs": ("strlist", True), "ptx": ("strlist", True),
        "source": ("str", True), "note": ("str", False),
    }
    known_variants = {t for tags in b.tables.get("torch_cuda_variants", {}).values() for t in tags}
    rows = []
    for where, row in doc.rows("arch_set", fields):
        variant = doc.match(f"{where}.variant", row["variant"], _VARIANT_RE, "CUDA variant", "'cuXYZ'")
        if variant not in known_variants:
            doc.fail(f"{where}.variant", f"{show(variant)} is not a variant in torch_cuda.toml")
        if not row["archs"]:
            doc.fail(f"{where}.archs", "empty")
        archs = tuple(doc.cc(f"{where}.archs[{j}]", a) for j, a in enumerate(row["archs"]))
        ptx = tuple(doc.cc(f"{where}.ptx[{j}]", a) for j, a in enumerate(row["ptx"]))
        for j, cc in enumerate(ptx):
            if cc not in archs:  # "12.0+PTX" means 12.0 as cubin AND as PTX
                doc.fail(f"{where}.ptx[{j}]", f"{show(row['ptx'][j])} is not in archs")
        rows.append(ArchSet(variant, doc.spec(f"{where}.torch", row["torch"]), archs, ptx, row["source"]))
    b.tables["torch_cuda_archs"] = tuple(rows)
    b.notes_of(doc)


def _gpu_features(doc: Doc, b: Builder) -> None:
    """GPU features -> minimum (and maximum) compute capability."""
    doc.check_tables({"meta", "sources", "feature", "note"})
    fields: Fields = {
        "name": ("str", True), "min_cc": ("str", True), "max_cc": ("str", False), "min_cuda": ("str", False),
        "note": ("str", True), "source": ("str", True),
    }
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("feature", fields):
        name = doc.match(f"{where}.name", row["name"], _ID_RE, "feature name")
        doc.unique(seen, name, f"{where}.name")
        min_cc = doc.cc(f"{where}.min_cc", row["min_cc"])
        max_cc = doc.cc(f"{where}.max_cc", row["max_cc"]) if "max_cc" in row else None
        if max_cc is not None and max_cc < min_cc:
            doc.fail(f"{where}.max_cc", f"{show(row['max_cc'])} is below min_cc {show(row['min_cc'])}")
        min_cuda = doc.match(f"{where}.min_cuda", row["min_cuda"], _CUDA_RE, "CUDA version", "'X.Y'") if "min_cuda" in row else None
        rows.append(GpuFeature(name, min_cc, row["note"], row["source"], max_cc=max_cc, min_cuda=min_cuda))
    b.tables["gpu_features"] = tuple(rows)
    b.notes_of(doc)


def _bitsandbytes_torch(doc: Doc, b: Builder) -> None:
    """bitsandbytes version ranges -> torch (and python) requirement."""
    doc.check_tables({"meta", "sources", "requirement", "note"})
    fields: Fields = {
        "bitsandbytes": ("str", True), "torch": ("str", True), "python": ("str", False),
        "note": ("str", False), "source": ("str", True),
    }
    rows = []
    for where, row in doc.rows("requirement", fields):
        rows.append(RangeRequirement(
            versions=doc.spec(f"{where}.bitsandbytes", row["bitsandbytes"]),
            spec=doc.spec(f"{where}.torch", row["torch"]),
            source=row["source"],
            python=doc.spec(f"{where}.python", row["python"]) if "python" in row else None,
            note=row.get("note", ""),
        ))
    b.tables["bitsandbytes_torch"] = tuple(rows)
    b.notes_of(doc)


def _known_issues(doc: Doc, b: Builder) -> None:
    """Known issues with affected ranges and fixes."""
    doc.check_tables({"meta", "sources", "issue", "note"})
    fields: Fields = {
        "id": ("str", True), "package": ("str", True), "affected": ("str", True), "requires": ("strmap", False),
        "title": ("str", True), "cause": ("str", True), "fix": ("strlist", True), "reports": ("strlist", True),
        "signature": ("str", False), "note": ("str", False), "source": ("str", True),
    }
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("issue", fields):
        issue_id = doc.match(f"{where}.id", row["id"], _ID_RE, "issue id", "like 'xformers.dtype-layout'")
        doc.unique(seen, issue_id, f"{where}.id")
        requires = {}
        for pkg, spec in row.get("requires", {}).items():
            requires[doc.canonical(f"{where}.requires.{pkg}", pkg)] = doc.spec(f"{where}.requires.{pkg}", spec)
        for j, fix in enumerate(row["fix"]):
            doc.pip_spec(f"{where}.fix[{j}]", fix)
        rows.append(KnownIssue(
            id=issue_id,
            package=doc.canonical(f"{where}.package", row["package"]),
            affected=doc.spec(f"{where}.affected", row["affected"]),
            requires=requires,
            title=row["title"],
            cause=row["cause"],
            fix=tuple(row["fix"]),
            reports=tuple(row["reports"]),
            source=row["source"],
            signature=row.get("signature", ""),
            note=row.get("note", ""),
        ))
    b.tables["known_issues"] = tuple(rows)
    b.notes_of(doc)


def _pairs(doc: Doc, b: Builder) -> None:
    """Known-good torch -> xformers pairs; what an unsloth release requires of other packages."""
    doc.check_tables({"meta", "sources", "pair", "unsloth_requires", "note"})
    known_xformers = {Version(r.version) for r in b.tables.get("xformers_torch", ())}
    pairs: Dict[str, str] = {}
    seen: Dict[Any, str] = {}
    fields: Fields = {"torch": ("str", True), "xformers": ("str", True), "note": ("str", False), "source": ("str", True)}
    for where, row in doc.rows("pair", fields):
        doc.release(f"{where}.torch", row["torch"], parts=(2, 3))
        doc.unique(seen, row["torch"], f"{where}.torch")
        xv = doc.version(f"{where}.xformers", row["xformers"])
        if xv not in known_xformers:
            doc.fail(f"{where}.xformers", f"{show(row['xformers'])} is not in xformers_torch.toml")
        pairs[row["torch"]] = row["xformers"]
    b.tables["torch_xformers_pairs"] = pairs

    requires: Dict[str, List[Requirement]] = {}
    seen = {}
    fields = {"unsloth": ("str", True), "package": ("str", True), "spec": ("str", True), "note": ("str", False), "source": ("str", True)}
    for where, row in doc.rows("unsloth_requires", fields):
        uv = doc.version(f"{where}.unsloth", row["unsloth"])
        pkg = doc.canonical(f"{where}.package", row["package"])
        doc.unique(seen, (uv, pkg), where)
        spec = doc.spec(f"{where}.spec", row["spec"])
        requires.setdefault(pkg, []).append(Requirement(row["unsloth"], spec, row["source"], row.get("note", "")))
    b.tables["unsloth_requires"] = {k: tuple(v) for k, v in requires.items()}
    b.notes_of(doc)


def _optional_runtime(doc: Doc, b: Builder) -> None:
    """Declared requirements the requirer does not need at run time."""
    doc.check_tables({"meta", "sources", "optional", "note"})
    fields: Fields = {
        "requirer": ("str", True), "requirement": ("str", True), "requirer_versions": ("str", False), "why": ("str", True),
        "source": ("str", True), "observed": ("str", False), "observed_source": ("str", False), "note": ("str", False),
    }
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("optional", fields):
        requirer = doc.canonical(f"{where}.requirer", row["requirer"])
        requirement = doc.canonical(f"{where}.requirement", row["requirement"])
        doc.unique(seen, (requirer, requirement), where)
        if row.get("observed") and not row.get("observed_source"):
            doc.fail(f"{where}.observed_source", "missing (every observation needs its source)")
        versions = doc.spec(f"{where}.requirer_versions", row["requirer_versions"]) if "requirer_versions" in row else None
        rows.append(OptionalRequirement(requirer, requirement, row["why"], row["source"], versions,
                                        row.get("observed", ""), row.get("observed_source", ""), row.get("note", "")))
    b.tables["optional_runtime"] = tuple(rows)
    b.notes_of(doc)


_BNB_LIB_RE = re.compile(r"^libbitsandbytes_[a-z0-9_]+\.(so|dll|dylib)$")
_BNB_PICKS = ("exact", "same-major")


def _bitsandbytes_libs(doc: Doc, b: Builder) -> None:
    """bitsandbytes: the native libraries each release ships, how it picks one, the archs they are built for."""
    doc.check_tables({"meta", "sources", "wheel", "loader", "archs", "note"})
    seen: Dict[Any, str] = {}
    wheels = []
    for where, row in doc.rows("wheel", {"bitsandbytes": ("strlist", True), "libraries": ("strlist", True), "source": ("str", True)}):
        if not row["bitsandbytes"]:
            doc.fail(f"{where}.bitsandbytes", "empty")
        for j, raw in enumerate(row["bitsandbytes"]):
            doc.unique(seen, doc.version(f"{where}.bitsandbytes[{j}]", raw), f"{where}.bitsandbytes[{j}]")
        for j, name in enumerate(row["libraries"]):
            doc.match(f"{where}.libraries[{j}]", name, _BNB_LIB_RE, "library file name", "'libbitsandbytes_cuda121.so'")
        wheels.append(BnbWheel(tuple(row["bitsandbytes"]), tuple(row["libraries"]), row["source"]))
    b.tables["bitsandbytes_wheels"] = tuple(wheels)

    loaders = []
    fields: Fields = {
        "bitsandbytes": ("str", True), "picks": ("str", True), "nocublaslt_below": ("str", False),
        "source": ("str", True), "note": ("str", False),
    }
    for where, row in doc.rows("loader", fields):
        if row["picks"] not in _BNB_PICKS:
            doc.fail(f"{where}.picks", f"invalid pick rule {show(row['picks'])} (expected one of {', '.join(_BNB_PICKS)})")
        below = doc.cc(f"{where}.nocublaslt_below", row["nocublaslt_below"]) if "nocublaslt_below" in row else None
        loaders.append(BnbLoader(doc.spec(f"{where}.bitsandbytes", row["bitsandbytes"]), row["picks"], row["source"], below,
                                 row.get("note", "")))
    b.tables["bitsandbytes_loaders"] = tuple(loaders)

    archs = []
    fields = {
        "bitsandbytes": ("str", True), "cuda": ("str", True), "archs": ("strlist", True), "ptx": ("strlist", True),
        "source": ("str", True), "note": ("str", False),
    }
    for where, row in doc.rows("archs", fields):
        if not row["archs"]:
            doc.fail(f"{where}.archs", "empty")
        cubins = tuple(doc.cc(f"{where}.archs[{j}]", a) for j, a in enumerate(row["archs"]))
        ptx = tuple(doc.cc(f"{where}.ptx[{j}]", a) for j, a in enumerate(row["ptx"]))
        for j, cc in enumerate(ptx):
            if cc not in cubins:  # CMake builds the highest arch as cubin AND PTX
                doc.fail(f"{where}.ptx[{j}]", f"{show(row['ptx'][j])} is not in archs")
        archs.append(BnbArchs(doc.spec(f"{where}.bitsandbytes", row["bitsandbytes"]), doc.spec(f"{where}.cuda", row["cuda"]),
                              cubins, ptx, row["source"], row.get("note", "")))
    b.tables["bitsandbytes_archs"] = tuple(archs)
    b.notes_of(doc)


def _gpu_names(doc: Doc, b: Builder) -> None:
    """GPU name substrings -> compute capability, most specific first."""
    doc.check_tables({"meta", "sources", "gpu", "note"})
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("gpu", {"pattern": ("str", True), "cc": ("str", True), "source": ("str", True)}):
        doc.unique(seen, row["pattern"].lower(), f"{where}.pattern")
        rows.append(GpuName(row["pattern"], doc.cc(f"{where}.cc", row["cc"]), row["source"]))
    b.tables["gpu_names"] = tuple(rows)
    b.notes_of(doc)


def _notes(doc: Doc, b: Builder) -> None:
    """Free-text facts."""
    doc.check_tables({"meta", "sources", "note"})
    b.notes_of(doc, required=True)


def _unsloth_runtime(doc: Doc, b: Builder) -> None:
    """unsloth_zoo runtime behaviour by release: the compiled-cache temp-directory fallback."""
    doc.check_tables({"meta", "sources", "cache_fallback", "note"})
    fields: Fields = {
        "since": ("str", True), "random_fallback_since": ("str", False), "error_log_since": ("str", False),
        "location_env_since": ("str", False), "fallback_dir": ("str", True), "shared_across_users": ("bool", True),
        "source": ("str", True), "history_source": ("str", False), "note": ("str", False),
    }
    row = doc.table("cache_fallback", fields)
    for key in ("since", "random_fallback_since", "error_log_since", "location_env_since"):
        if key in row:
            doc.version(f"cache_fallback.{key}", row[key])
    b.tables["unsloth_cache_fallback"] = CacheFallback(
        since=row["since"],
        source=row["source"],
        random_fallback_since=row.get("random_fallback_since", ""),
        error_log_since=row.get("error_log_since", ""),
        location_env_since=row.get("location_env_since", ""),
        fallback_dir=row["fallback_dir"],
        shared_across_users=row["shared_across_users"],
        history_source=row.get("history_source", ""),
        note=row.get("note", ""),
    )
    b.notes_of(doc)


LOADERS: Dict[str, Callable[[Doc, Builder], None]] = {
    "xformers_torch.toml": _xformers_torch,
    "torch_triton.toml": _torch_triton,
    "torch_cuda.toml": _torch_cuda,
    "cuda_driver.toml": _cuda_driver,
    "torch_cuda_archs.toml": _torch_cuda_archs,
    "gpu_features.toml": _gpu_features,
    "bitsandbytes_torch.toml": _bitsandbytes_torch,
    "known_issues.toml": _known_issues,
    "pairs.toml": _pairs,
    "gpu_names.toml": _gpu_names,
    "notes.toml": _notes,
    "unsloth_runtime.toml": _unsloth_runtime,
    "optional_runtime.toml": _optional_runtime,
    "bitsandbytes_libs.toml": _bitsandbytes_libs,
}
