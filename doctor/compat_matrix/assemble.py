"""Assembling the Matrix across files: the [meta] and [sources] every file starts with, notes, the tables.

Data versions must agree between files, a source key means the same in every file that defines it,
and note keys are unique across files; the Matrix is built only after every file passed.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from doctor.compat_matrix.document import Doc, Fields, show, type_name
from doctor.compat_matrix.files import SCHEMA
from doctor.compat_matrix.model import Matrix

_SOURCE_KEY_RE = re.compile(r"^[A-Z][A-Z0-9-]*$")
_DATA_VERSION_RE = re.compile(r"^\d{4}\.\d{2}\.\d{2}$")
_NOTE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_.-]+)+$")
_NOTE_FIELDS: Fields = {"key": ("str", True), "text": ("str", True), "source": ("str", True)}


class Builder:
    """Accumulates the tables of all files; `matrix()` builds the Matrix at the very end."""

    def __init__(self) -> None:
        self.data_version: Optional[Tuple[str, str]] = None  # (value, file it came from)
        self.sources: Dict[str, str] = {}
        self.source_origin: Dict[str, str] = {}
        self.notes: Dict[str, str] = {}
        self.note_origin: Dict[str, str] = {}
        self.tables: Dict[str, Any] = {}

    def header(self, doc: Doc) -> None:
        """[meta] and [sources] of one file, checked against the files before it."""
        meta = doc.table("meta", {"schema": ("int", True), "data_version": ("str", True), "description": ("str", True)})
        if meta["schema"] != SCHEMA:
            doc.fail("meta.schema", f"unsupported schema {meta['schema']!r} (this doctor reads schema {SCHEMA})")
        dv = doc.match("meta.data_version", meta["data_version"], _DATA_VERSION_RE, "data_version", "'YYYY.MM.DD'")
        if self.data_version is None:
            self.data_version = (dv, doc.name)
        elif dv != self.data_version[0]:
            doc.fail("meta.data_version", f"{show(dv)} differs from {show(self.data_version[0])} in {self.data_version[1]}")

        sources = doc.data.get("sources")
        if sources is None:
            doc.fail("sources", "missing")
        if not isinstance(sources, dict) or not sources:
            doc.fail("sources", "expected a non-empty table of KEY = \"description\"")
        for key, desc in sources.items():
            doc.match(f"sources.{key}", key, _SOURCE_KEY_RE, "source key", "upper-case like 'NV-T3'")
            if not isinstance(desc, str) or not desc.strip():
                doc.fail(f"sources.{key}", f"expected a non-empty string, got {type_name(desc)} {show(desc)}")
            if key in self.sources and self.sources[key] != desc:
                doc.fail(f"sources.{key}", f"description differs from {self.source_origin[key]}")
            self.sources.setdefault(key, desc)
            self.source_origin.setdefault(key, doc.name)
        doc.sources = dict(sources)

    def note(self, doc: Doc, where: str, key: str, text: str) -> None:
        """Add one free-text note; keys are unique across all files."""
        doc.match(where, key, _NOTE_KEY_RE, "note key", "'table.fact'")
        if key in self.notes:
            doc.fail(where, f"duplicate note key {show(key)} (also in {self.note_origin[key]})")
        self.notes[key] = text
        self.note_origin[key] = doc.name

    def notes_of(self, doc: Doc, required: bool = False) -> None:
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
