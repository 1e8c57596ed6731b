"""Load and strictly validate the compatibility matrix data (doctor/compat_matrix/data/*.toml).

Every problem becomes ONE `DoctorError` line naming the file and the key, e.g.
`matrix data error: xformers_torch.toml: requirement[3].torch: invalid specifier '==2.0.x'`
(row indexes are 0-based, in file order). A Matrix is only returned when every file is valid.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Set, Tuple, Union

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.compat_matrix.model import (
    ArchSet,
    CacheFallback,
    DriverFloor,
    GpuFeature,
    GpuName,
    KnownIssue,
    Matrix,
    RangeRequirement,
    Requirement,
)
from doctor.compat_matrix.versions import parse_cc
from doctor.errors import DoctorError


def _toml():  # type: ignore[no-untyped-def]
    """tomllib (tomli before 3.11), imported only when a TOML file must really be parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib
    return tomllib

SCHEMA = 1
ENV_VAR = "DOCTOR_MATRIX_DIR"
DEFAULT_DIR = Path(__file__).parent / "data"
COMPILED = "compiled.json"  # pre-parsed copy of the TOML files (see compile_data); a mismatch is a miss

# Every file the schema-1 matrix consists of, in load order (pairs.toml after xformers_torch.toml:
# it is checked against it).
FILES: Tuple[str, ...] = (
    "xformers_torch.toml",
    "torch_triton.toml",
    "torch_cuda.toml",
    "cuda_driver.toml",
    "torch_cuda_archs.toml",
    "gpu_features.toml",
    "bitsandbytes_torch.toml",
    "known_issues.toml",
    "pairs.toml",
    "gpu_names.toml",
    "notes.toml",
    "unsloth_runtime.toml",
)

_PREFIX = "matrix data error"
_SOURCE_KEY_RE = re.compile(r"^[A-Z][A-Z0-9-]*$")
_DATA_VERSION_RE = re.compile(r"^\d{4}\.\d{2}\.\d{2}$")
_CUDA_RE = re.compile(r"^\d+\.\d+$")
_MINOR_RE = re.compile(r"^\d+\.\d+$")
_VARIANT_RE = re.compile(r"^cu\d{3,}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PIP_SPEC_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*((?:[=!<>~]=?=?\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)+)$")
_NOTE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_.-]+)+$")

# Field kinds a row may hold: (python type check, human name).
_KINDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "a boolean"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "strlist": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "strmap": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "a table of strings"),
}

Fields = Mapping[str, Tuple[str, bool]]  # key -> (kind, required)

_NOTE_FIELDS: Fields = {"key": ("str", True), "text": ("str", True), "source": ("str", True)}


def _show(value: Any) -> str:
    """A value for a one-line message: strings quoted, newlines escaped."""
    text = f"'{value}'" if isinstance(value, str) else repr(value)
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _type_name(value: Any) -> str:
    """TOML-ish name of a parsed value's type, for 'expected X, got Y'."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def _one_line(text: str) -> str:
    """Collapse any line breaks so an error is always exactly one line."""
    return " ".join(text.split())


class _Doc:
    """One parsed data file plus the helpers that turn bad values into one-line errors."""

    def __init__(self, name: str, data: Dict[str, Any]) -> None:
        self.name = name
        self.data = data
        self.sources: Dict[str, str] = {}

    def fail(self, where: str, msg: str) -> NoReturn:
        """Raise the one-line error for `where` in this file."""
        raise DoctorError(_one_line(f"{_PREFIX}: {self.name}: {where}: {msg}") if where else _one_line(f"{_PREFIX}: {self.name}: {msg}"))

    # -- structure ---------------------------------------------------------------------------

    def check_tables(self, allowed: Set[str]) -> None:
        """Reject top-level tables this file does not define (typos, stray data)."""
        for key in self.data:
            if key not in allowed:
                self.fail(key, "unknown table")

    def table(self, name: str, fields: Fields) -> Dict[str, Any]:
        """A single [table] with its fields checked."""
        raw = self.data.get(name)
        if raw is None:
            self.fail(name, "missing")
        if not isinstance(raw, dict):
            self.fail(name, f"expected a table, got {_type_name(raw)}")
        self._check_fields(name, raw, fields)
        return raw

    def rows(self, name: str, fields: Fields, required: bool = True) -> List[Tuple[str, Dict[str, Any]]]:
        """The rows of an array of tables [[name]], as (where, row), fields and source keys checked."""
        raw = self.data.get(name)
        if raw is None:
            if required:
                self.fail(name, "missing")
            return []
        if not isinstance(raw, list):
            self.fail(name, f"expected an array of tables ([[{name}]]), got {_type_name(raw)}")
        if required and not raw:
            self.fail(name, "empty")
        out = []
        for i, row in enumerate(raw):
            where = f"{name}[{i}]"
            if not isinstance(row, dict):
                self.fail(where, f"expected a table, got {_type_name(row)}")
            self._check_fields(where, row, fields)
            out.append((where, row))
        return out

    def _check_fields(self, where: str, row: Dict[str, Any], fields: Fields) -> None:
        """Required keys present, no unknown keys, every value of the right type, sources known."""
        for key in row:
            if key not in fields:
                self.fail(f"{where}.{key}", "unknown key")
        for key, (kind, required) in fields.items():
            if key not in row:
                if required:
                    self.fail(f"{where}.{key}", "missing")
                continue
            check, expected = _KINDS[kind]
            value = row[key]
            if not check(value):
                self.fail(f"{where}.{key}", f"expected {expected}, got {_type_name(value)} {_show(value)}")
            if kind == "str" and not value.strip() and required:
                self.fail(f"{where}.{key}", "empty")
            if key.endswith("source") and key in row:
                self.source(f"{where}.{key}", value)

    # -- values ------------------------------------------------------------------------------

    def source(self, where: str, key: str) -> str:
        """A source key that this file's [sources] defines."""
        if key not in self.sources:
            self.fail(where, f"unknown source key {_show(key)} (not in [sources])")
        return key

    def version(self, where: str, raw: str) -> Version:
        """A PEP 440 version."""
        try:
            return Version(raw)
        except InvalidVersion:
            self.fail(where, f"invalid version {_show(raw)}")

    def release(self, where: str, raw: str, parts: Tuple[int, ...] = (2, 3)) -> Version:
        """A plain release ('2.3' or '2.3.1'): no local label, no pre/post/dev part."""
        v = self.version(where, raw)
        if v.local or v.pre or v.post is not None or v.dev is not None or v.epoch or len(v.release) not in parts:
            want = " or ".join({2: "'X.Y'", 3: "'X.Y.Z'"}[p] for p in parts)
            self.fail(where, f"invalid release {_show(raw)} (expected {want})")
        return v

    def spec(self, where: str, raw: str) -> SpecifierSet:
        """A non-empty PEP 440 specifier set."""
        if not raw.strip() or not raw.strip(", "):  # an empty set admits everything: never what a fact means
            self.fail(where, f"empty specifier {_show(raw)}")
        try:
            return SpecifierSet(raw)
        except InvalidSpecifier:
            self.fail(where, f"invalid specifier {_show(raw)}")

    def cc(self, where: str, raw: str) -> Tuple[int, int]:
        """A compute capability 'X.Y'."""
        try:
            return parse_cc(raw)
        except ValueError:
            self.fail(where, f"invalid compute capability {_show(raw)} (expected 'X.Y')")

    def match(self, where: str, raw: str, pattern: "re.Pattern[str]", what: str, expected: str = "") -> str:
        """A string that must match `pattern` (CUDA 'X.Y', torch minor, 'cuXYZ', ids)."""
        if not pattern.match(raw):
            self.fail(where, f"invalid {what} {_show(raw)}" + (f" (expected {expected})" if expected else ""))
        return raw

    def pip_spec(self, where: str, raw: str) -> str:
        """A pip requirement 'name<specifiers>' such as 'xformers==0.0.27.post2'."""
        # a regex plus SpecifierSet, not packaging.requirements: that module's marker parser
        # costs more to import than loading the whole matrix
        m = _PIP_SPEC_RE.match(raw)
        if not m:
            self.fail(where, f"invalid requirement {_show(raw)}")
        try:
            SpecifierSet(m.group(2))
        except InvalidSpecifier:
            self.fail(where, f"invalid requirement {_show(raw)}")
        return raw

    def canonical(self, where: str, raw: str) -> str:
        """A canonical (PEP 503) distribution name."""
        if canonicalize_name(raw) != raw:
            self.fail(where, f"not a canonical package name {_show(raw)} (use {_show(canonicalize_name(raw))})")
        return raw

    def unique(self, seen: Dict[Any, str], key: Any, where: str) -> None:
        """Reject a second row with the same key."""
        if key in seen:
            self.fail(where, f"duplicate of {seen[key]}")
        seen[key] = where


class _Builder:
    """Accumulates the tables of all files; `matrix()` builds the Matrix at the very end."""

    def __init__(self) -> None:
        self.data_version: Optional[Tuple[str, str]] = None  # (value, file it came from)
        self.sources: Dict[str, str] = {}
        self.source_origin: Dict[str, str] = {}
        self.notes: Dict[str, str] = {}
        self.note_origin: Dict[str, str] = {}
        self.tables: Dict[str, Any] = {}

    def header(self, doc: _Doc) -> None:
        """[meta] and [sources] of one file, checked against the files before it."""
        meta = doc.table("meta", {"schema": ("int", True), "data_version": ("str", True), "description": ("str", True)})
        if meta["schema"] != SCHEMA:
            doc.fail("meta.schema", f"unsupported schema {meta['schema']!r} (this doctor reads schema {SCHEMA})")
        dv = doc.match("meta.data_version", meta["data_version"], _DATA_VERSION_RE, "data_version", "'YYYY.MM.DD'")
        if self.data_version is None:
            self.data_version = (dv, doc.name)
        elif dv != self.data_version[0]:
            doc.fail("meta.data_version", f"{_show(dv)} differs from {_show(self.data_version[0])} in {self.data_version[1]}")

        sources = doc.data.get("sources")
        if sources is None:
            doc.fail("sources", "missing")
        if not isinstance(sources, dict) or not sources:
            doc.fail("sources", "expected a non-empty table of KEY = \"description\"")
        for key, desc in sources.items():
            doc.match(f"sources.{key}", key, _SOURCE_KEY_RE, "source key", "upper-case like 'NV-T3'")
            if not isinstance(desc, str) or not desc.strip():
                doc.fail(f"sources.{key}", f"expected a non-empty string, got {_type_name(desc)} {_show(desc)}")
            if key in self.sources and self.sources[key] != desc:
                doc.fail(f"sources.{key}", f"description differs from {self.source_origin[key]}")
            self.sources.setdefault(key, desc)
            self.source_origin.setdefault(key, doc.name)
        doc.sources = dict(sources)

    def note(self, doc: _Doc, where: str, key: str, text: str) -> None:
        """Add one free-text note; keys are unique across all files."""
        doc.match(where, key, _NOTE_KEY_RE, "note key", "'table.fact'")
        if key in self.notes:
            doc.fail(where, f"duplicate note key {_show(key)} (also in {self.note_origin[key]})")
        self.notes[key] = text
        self.note_origin[key] = doc.name

    def notes_of(self, doc: _Doc, required: bool = False) -> None:
        """The optional [[note]] rows every file may carry."""
        for where, row in doc.rows("note", _NOTE_FIELDS, required=required):
            self.note(doc, f"{where}.key", row["key"], row["text"])

    def matrix(self) -> Matrix:
        """The finished Matrix (only called when every file passed)."""
        assert self.data_version is not None
        return Matrix(
            schema=SCHEMA,
            data_version=self.data_version[0],
            sources=dict(self.sources),
            notes=dict(self.notes),
            **self.tables,
        )


# -- one function per file: validate rows, build model objects ---------------------------------


def _xformers_torch(doc: _Doc, b: _Builder) -> None:
    """xformers version -> torch requirement."""
    doc.check_tables({"meta", "sources", "requirement", "note"})
    fields: Fields = {"xformers": ("str", True), "torch": ("str", True), "source": ("str", True), "note": ("str", False)}
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("requirement", fields):
        v = doc.version(f"{where}.xformers", row["xformers"])
        doc.unique(seen, v, f"{where}.xformers")
        rows.append(Requirement(row["xformers"], doc.spec(f"{where}.torch", row["torch"]), row["source"], row.get("note", "")))
    b.tables["xformers_torch"] = tuple(rows)
    b.notes_of(doc)


def _torch_triton(doc: _Doc, b: _Builder) -> None:
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


def _torch_cuda(doc: _Doc, b: _Builder) -> None:
    """Default CUDA of the index wheel, CUDA variants on the download index, the index URL."""
    doc.check_tables({"meta", "sources", "index", "default_cuda", "variants", "note"})
    index = doc.table("index", {"url": ("str", True), "source": ("str", True)})
    if not re.match(r"^https?://\S+$", index["url"]):
        doc.fail("index.url", f"invalid URL {_show(index['url'])}")
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


def _cuda_driver(doc: _Doc, b: _Builder) -> None:
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


def _torch_cuda_archs(doc: _Doc, b: _Builder) -> None:
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
            doc.fail(f"{where}.variant", f"{_show(variant)} is not a variant in torch_cuda.toml")
        if not row["archs"]:
            doc.fail(f"{where}.archs", "empty")
        archs = tuple(doc.cc(f"{where}.archs[{j}]", a) for j, a in enumerate(row["archs"]))
        ptx = tuple(doc.cc(f"{where}.ptx[{j}]", a) for j, a in enumerate(row["ptx"]))
        for j, cc in enumerate(ptx):
            if cc not in archs:  # "12.0+PTX" means 12.0 as cubin AND as PTX
                doc.fail(f"{where}.ptx[{j}]", f"{_show(row['ptx'][j])} is not in archs")
        rows.append(ArchSet(variant, doc.spec(f"{where}.torch", row["torch"]), archs, ptx, row["source"]))
    b.tables["torch_cuda_archs"] = tuple(rows)
    b.notes_of(doc)


def _gpu_features(doc: _Doc, b: _Builder) -> None:
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
            doc.fail(f"{where}.max_cc", f"{_show(row['max_cc'])} is below min_cc {_show(row['min_cc'])}")
        min_cuda = doc.match(f"{where}.min_cuda", row["min_cuda"], _CUDA_RE, "CUDA version", "'X.Y'") if "min_cuda" in row else None
        rows.append(GpuFeature(name, min_cc, row["note"], row["source"], max_cc=max_cc, min_cuda=min_cuda))
    b.tables["gpu_features"] = tuple(rows)
    b.notes_of(doc)


def _bitsandbytes_torch(doc: _Doc, b: _Builder) -> None:
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


def _known_issues(doc: _Doc, b: _Builder) -> None:
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


def _pairs(doc: _Doc, b: _Builder) -> None:
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
            doc.fail(f"{where}.xformers", f"{_show(row['xformers'])} is not in xformers_torch.toml")
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


def _gpu_names(doc: _Doc, b: _Builder) -> None:
    """GPU name substrings -> compute capability, most specific first."""
    doc.check_tables({"meta", "sources", "gpu", "note"})
    seen: Dict[Any, str] = {}
    rows = []
    for where, row in doc.rows("gpu", {"pattern": ("str", True), "cc": ("str", True), "source": ("str", True)}):
        doc.unique(seen, row["pattern"].lower(), f"{where}.pattern")
        rows.append(GpuName(row["pattern"], doc.cc(f"{where}.cc", row["cc"]), row["source"]))
    b.tables["gpu_names"] = tuple(rows)
    b.notes_of(doc)


def _notes(doc: _Doc, b: _Builder) -> None:
    """Free-text facts."""
    doc.check_tables({"meta", "sources", "note"})
    b.notes_of(doc, required=True)


def _unsloth_runtime(doc: _Doc, b: _Builder) -> None:
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


_PARSERS: Dict[str, Callable[[_Doc, _Builder], None]] = {
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
}


def _read_bytes(path: Path) -> bytes:
    """One data file's bytes; a missing or unreadable file is one DoctorError line."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DoctorError(f"{_PREFIX}: {path.name}: missing") from None
    except OSError as e:
        raise DoctorError(_one_line(f"{_PREFIX}: {path.name}: unreadable ({e.strerror or e})")) from None


def _parse(name: str, raw: bytes) -> Dict[str, Any]:
    """Parse one TOML document; any decoding or syntax problem is one DoctorError line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DoctorError(f"{_PREFIX}: {name}: not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
    tomllib = _toml()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DoctorError(_one_line(f"{_PREFIX}: {name}: invalid TOML: {e}")) from None


def _read(path: Path) -> Dict[str, Any]:
    """Parse one TOML file; any read or syntax problem is one DoctorError line."""
    return _parse(path.name, _read_bytes(path))


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


def _preparsed(directory: Path, raws: Mapping[str, bytes]) -> Optional[Dict[str, Dict[str, Any]]]:
    """The parsed documents from compiled.json when it was made from exactly these bytes, else None.

    Parsing 35 KB of TOML with the pure-python tomllib is most of a cold load; json is C-accelerated.
    Validation still runs on the result, so a stale or tampered copy can only be a miss.
    """
    try:
        doc = json.loads((directory / COMPILED).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("digest") != sources_digest(raws) or not isinstance(doc.get("documents"), dict):
        return None
    docs = doc["documents"]
    return docs if set(docs) == set(raws) and all(isinstance(v, dict) for v in docs.values()) else None


def compile_data(directory: Optional[Union[Path, str]] = None) -> Path:
    """Write compiled.json (pre-parsed TOML) beside the data files, atomically; returns its path."""
    d = Path(directory) if directory is not None else DEFAULT_DIR
    raws = {name: _read_bytes(d / name) for name in FILES}
    documents = {name: _parse(name, raw) for name, raw in raws.items()}
    payload = json.dumps({"digest": sources_digest(raws), "documents": documents}, sort_keys=True, separators=(",", ":"))
    tmp = d / (COMPILED + ".tmp")
    tmp.write_text(payload + "\n", encoding="utf-8")
    os.replace(tmp, d / COMPILED)
    return d / COMPILED


def _load(directory: Path, origin: str = "") -> Matrix:
    """Read, validate and build the Matrix from one directory (no caching)."""
    if not directory.is_dir():
        raise DoctorError(_one_line(f"{_PREFIX}: {directory}: not a directory{origin}"))
    try:
        present = {p.name for p in directory.glob("*.toml")}
    except OSError as e:
        raise DoctorError(_one_line(f"{_PREFIX}: {directory}: unreadable ({e.strerror or e}){origin}")) from None
    for name in FILES:  # a missing file is reported before any content error
        if name not in present:
            raise DoctorError(f"{_PREFIX}: {name}: missing")
    extra = sorted(present - set(FILES))
    if extra:  # a stray or misspelt file would otherwise be silently ignored
        raise DoctorError(f"{_PREFIX}: {extra[0]}: unexpected file (schema {SCHEMA} has {len(FILES)} files)")

    raws = {name: _read_bytes(directory / name) for name in FILES}
    parsed = _preparsed(directory, raws)
    builder = _Builder()
    for name in FILES:
        doc = _Doc(name, parsed[name] if parsed is not None else _parse(name, raws[name]))
        try:
            builder.header(doc)
            _PARSERS[name](doc, builder)
        except DoctorError:
            raise
        except Exception as e:  # a validation gap must still be one line, never a traceback
            raise DoctorError(_one_line(f"{_PREFIX}: {name}: {type(e).__name__}: {e}")) from e
    return builder.matrix()


@functools.lru_cache(maxsize=None)
def _load_cached(directory: Path, origin: str) -> Matrix:
    """The default matrix, loaded once per process per resolved directory."""
    return _load(directory, origin)


def _resolve(path: Union[str, Path]) -> Path:
    """Absolute, symlink-free form of a data directory (the cache key)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop on older Pythons
        raise DoctorError(_one_line(f"{_PREFIX}: {path}: unreadable ({e})")) from None


def default_dir() -> Path:
    """The data directory load_matrix() uses: $DOCTOR_MATRIX_DIR if set, else the package's data/."""
    env = os.environ.get(ENV_VAR, "").strip()
    return _resolve(env) if env else DEFAULT_DIR


def load_matrix(data_dir: Optional[Union[Path, str]] = None) -> Matrix:
    """Load the validated Matrix from data_dir (default: $DOCTOR_MATRIX_DIR or the bundled data, cached)."""
    if data_dir is not None:
        return _load(_resolve(data_dir))  # explicit dirs are not cached: the refresh tool rewrites them
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _load_cached(_resolve(env), f" (from ${ENV_VAR})")
    return _load_cached(DEFAULT_DIR, "")


def clear_cache() -> None:
    """Forget cached default matrices (tests, or after the refresh tool rewrote the data)."""
    _load_cached.cache_clear()
