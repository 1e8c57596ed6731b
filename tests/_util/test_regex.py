"""doctor._util.regex.lazy: the same answers as re.compile, compiled on first use only."""

from __future__ import annotations

import re
import subprocess
import sys

from doctor._util.regex import LazyPattern, lazy


def test_answers_equal_re_compile() -> None:
    src = r"(?P<major>\d+)\.(?P<minor>\d+)"
    lz, rc = lazy(src), re.compile(src)
    text = "torch 2.13 and cuda 12.8"
    assert lz.pattern == src
    m1, m2 = lz.search(text), rc.search(text)
    assert m1 is not None and m2 is not None and m1.groupdict() == m2.groupdict()
    assert lz.match(text) is None and lz.match(text, 6) is not None
    assert lz.fullmatch("2.13") is not None
    assert lz.findall(text) == rc.findall(text)
    assert [m.span() for m in lz.finditer(text)] == [m.span() for m in rc.finditer(text)]
    assert lz.sub("X", text) == rc.sub("X", text)
    assert lz.subn(lambda m: m.group("major"), text) == rc.subn(lambda m: m.group("major"), text)
    assert lz.split(text, 1) == rc.split(text, 1)
    assert lz.flags == rc.flags


def test_flags_and_bytes() -> None:
    assert lazy("ABC", re.IGNORECASE).match("abc") is not None
    assert lazy(rb"\x00+").sub(b"", b"a\x00\x00b") == b"ab"


def test_nothing_is_compiled_until_used() -> None:
    p: LazyPattern[str] = lazy(r"a+")
    assert p._compiled is None
    assert "lazy(" in repr(p) and p.pattern == "a+"
    assert p._compiled is None
    p.match("aa")
    assert isinstance(p._compiled, re.Pattern)


def test_importing_the_gpu_sources_compiles_nothing() -> None:
    code = ("import re._compiler as c, sys, doctor.facts, doctor._util.files\n"  # their imports compile their own
            "n = [0]\norig = c.compile\n"
            "def counted(*a, **k):\n    n[0] += 1\n    return orig(*a, **k)\n"
            "c.compile = counted\n"
            "import doctor.inventory.gpu.detection, doctor.inventory.gpu.procfs\n"
            "print(n[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "re._compiler" in out.stderr:  # Python < 3.11 names it sre_compile
        code = code.replace("re._compiler", "sre_compile")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
