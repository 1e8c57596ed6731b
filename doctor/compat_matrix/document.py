"""One parsed data file and the checks that turn a bad value into ONE line naming file, row and key.

`Doc.fail("requirement[3].torch", "invalid specifier '==2.0.x'")` raises
`matrix data error: xformers_torch.toml: requirement[3].torch: invalid specifier '==2.0.x'`
(row indexes are 0-based, in file order). The table loaders (doctor.compat_matrix.tables) use only these.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Set, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.compat_matrix.files import PREFIX, one_line
from doctor.compat_matrix.versions import parse_cc
from doctor.errors import DoctorError

_PIP_SPEC_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*((?:[=!<>~]=?=?\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)+)$")

# Field kinds a row may hold: (python type check, human name).
_KINDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "a boolean"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "strlist": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "strmap": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "a table of strings"),
}

Fields = Mapping[str, Tuple[str, bool]]  # key -> (kind, required)


def show(value: Any) -> str:
    """A value for a one-line message: strings quoted, newlines escaped."""
    text = f"'{value}'" if isinstance(value, str) else repr(value)
    return text.replace("\r", "\\r").replace("\n", "\\n")


def type_name(value: Any) -> str:
    """TOML-ish name of a parsed value's type, for 'expected X, got Y'."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


class Doc:
    """One parsed data file plus the helpers that turn bad values into one-line errors."""

    def __init__(self, name: str, data: Dict[str, Any]) -> None:
        self.name = name
        self.data = data
        self.sources: Dict[str, str] = {}

    def fail(self, where: str, msg: str) -> NoReturn:
        """Raise the one-line error for `where` in this file."""
        raise DoctorError(one_line(f"{PREFIX}: {self.name}: {where}: {msg}") if where else one_line(f"{PREFIX}: {self.name}: {msg}"))

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
            self.fail(name, f"expected a table, got {type_name(raw)}")
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
            self.fail(name, f"expected an array of tables ([[{name}]]), got {type_name(raw)}")
        if required and not raw:
            self.fail(name, "empty")
        out = []
        for i, row in enumerate(raw):
            where = f"{name}[{i}]"
            if not isinstance(row, dict):
                self.fail(where, f"expected a table, got {type_name(row)}")
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
                self.fail(f"{where}.{key}", f"expected {expected}, got {type_name(value)} {show(value)}")
            if kind == "str" and not value.strip() and required:
                self.fail(f"{where}.{key}", "empty")
            if key.endswith("source") and key in row:
                self.source(f"{where}.{key}", value)

    # -- values ------------------------------------------------------------------------------

    def source(self, where: str, key: str) -> str:
        """A source key that this file's [sources] defines."""
        if key not in self.sources:
            self.fail(where, f"unknown source key {show(key)} (not in [sources])")
        return key

    def version(self, where: str, raw: str) -> Version:
        """A PEP 440 version."""
        try:
            return Version(raw)
        except InvalidVersion:
            self.fail(where, f"invalid version {show(raw)}")

    def release(self, where: str, raw: str, parts: Tuple[int, ...] = (2, 3)) -> Version:
        """A plain release ('2.3' or '2.3.1'): no local label, no pre/post/dev part."""
        v = self.version(where, raw)
        if v.local or v.pre or v.post is not None or v.dev is not None or v.epoch or len(v.release) not in parts:
            want = " or ".join({2: "'X.Y'", 3: "'X.Y.Z'"}[p] for p in parts)
            self.fail(where, f"invalid release {show(raw)} (expected {want})")
        return v

    def spec(self, where: str, raw: str) -> SpecifierSet:
        """A non-empty PEP 440 specifier set."""
        if not raw.strip() or not raw.strip(", "):  # an empty set admits everything: never what a fact means
            self.fail(where, f"empty specifier {show(raw)}")
        try:
            return SpecifierSet(raw)
        except InvalidSpecifier:
            self.fail(where, f"invalid specifier {show(raw)}")

    def cc(self, where: str, raw: str) -> Tuple[int, int]:
        """A compute capability 'X.Y'."""
        try:
            return parse_cc(raw)
        except ValueError:
            self.fail(where, f"invalid compute capability {show(raw)} (expected 'X.Y')")

    def match(self, where: str, raw: str, pattern: "re.Pattern[str]", what: str, expected: str = "") -> str:
        """A string that must match `pattern` (CUDA 'X.Y', torch minor, 'cuXYZ', ids)."""
        if not pattern.match(raw):
            self.fail(where, f"invalid {what} {show(raw)}" + (f" (expected {expected})" if expected else ""))
        return raw

    def pip_spec(self, where: str, raw: str) -> str:
        """A pip requirement 'name<specifiers>' such as 'xformers==0.0.27.post2'."""
        # a regex plus SpecifierSet, not packaging.requirements: that module's marker parser
        # costs more to import than loading the whole matrix
        m = _PIP_SPEC_RE.match(raw)
        if not m:
            self.fail(where, f"invalid requirement {show(raw)}")
        try:
            SpecifierSet(m.group(2))
        except InvalidSpecifier:
            self.fail(where, f"invalid requirement {show(raw)}")
        return raw

    def canonical(self, where: str, raw: str) -> str:
        """A canonical (PEP 503) distribution name."""
        if canonicalize_name(raw) != raw:
            self.fail(where, f"not a canonical package name {show(raw)} (use {show(canonicalize_name(raw))})")
        return raw

    def unique(self, seen: Dict[Any, str], key: Any, where: str) -> None:
        """Reject a second row with the same key."""
        if key in seen:
            self.fail(where, f"duplicate of {seen[key]}")
        seen[key] = where
