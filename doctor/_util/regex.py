"""Regular expressions compiled on first use, not at import.

A module-level `re.compile` runs on every import of its module, whether or not the pattern is ever
used in that run: on `doctor check`'s path that was dozens of patterns for rules, GPU sources and
renderers that had nothing to match. `lazy(pattern)` keeps the module-level constant and its call sites
(`PATTERN.match(text)`) and compiles on the first call; `re`'s own cache makes a second LazyPattern of the
same text free.
"""

from __future__ import annotations

import re
from re import Match, Pattern
from typing import Any, AnyStr, Callable, Generic, Iterator, List, Optional, Tuple, Union


class LazyPattern(Generic[AnyStr]):
    """A compiled pattern's face (match, search, sub...), compiled the first time one of them is called."""

    __slots__ = ("_source", "_flags", "_compiled")

    def __init__(self, source: AnyStr, flags: int = 0) -> None:
        self._source: AnyStr = source
        self._flags: int = flags
        self._compiled: Optional[Pattern[AnyStr]] = None

    @property
    def compiled(self) -> Pattern[AnyStr]:
        """The re.Pattern (compiled now if it was not yet)."""
        if self._compiled is None:
            self._compiled = re.compile(self._source, self._flags)
        return self._compiled

    @property
    def pattern(self) -> AnyStr:
        """The source text, as re.Pattern.pattern (no compile)."""
        return self._source

    @property
    def flags(self) -> int:
        """re.Pattern.flags (compiles: the compiled flags include the implied ones)."""
        return self.compiled.flags

    def match(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> Optional[Match[AnyStr]]:
        """re.Pattern.match."""
        return self.compiled.match(string, pos, endpos)

    def fullmatch(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> Optional[Match[AnyStr]]:
        """re.Pattern.fullmatch."""
        return self.compiled.fullmatch(string, pos, endpos)

    def search(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> Optional[Match[AnyStr]]:
        """re.Pattern.search."""
        return self.compiled.search(string, pos, endpos)

    def findall(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> List[Any]:
        """re.Pattern.findall."""
        return self.compiled.findall(string, pos, endpos)

    def finditer(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> Iterator[Match[AnyStr]]:
        """re.Pattern.finditer."""
        return self.compiled.finditer(string, pos, endpos)

    def split(self, string: AnyStr, maxsplit: int = 0) -> List[Union[AnyStr, Any]]:
        """re.Pattern.split."""
        return self.compiled.split(string, maxsplit)

    def sub(self, repl: Union[AnyStr, Callable[[Match[AnyStr]], AnyStr]], string: AnyStr, count: int = 0) -> AnyStr:
        """re.Pattern.sub."""
        return self.compiled.sub(repl, string, count)

    def subn(self, repl: Union[AnyStr, Callable[[Match[AnyStr]], AnyStr]], string: AnyStr,
             count: int = 0) -> Tuple[AnyStr, int]:
        """re.Pattern.subn."""
        return self.compiled.subn(repl, string, count)

    def __repr__(self) -> str:
        """Like re.Pattern's, marked lazy."""
        return f"lazy({self._source!r}{', ' + str(self._flags) if self._flags else ''})"


def lazy(source: AnyStr, flags: int = 0) -> LazyPattern[AnyStr]:
    """A pattern compiled on first use: `NAME = lazy(r"...")` instead of `NAME = re.compile(r"...")`."""
    return LazyPattern(source, flags)
