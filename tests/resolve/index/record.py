"""Record real package metadata for the local test index (run by hand, with network; tests never run it).

    python -m tests.resolve.index.record            # record everything WORLDS and SCENARIOS name
    python -m tests.resolve.index.record --show xformers==0.0.27   # print one wheel's METADATA

For each `name==version` of each index it picks the Linux x86_64 wheel pip on CPython 3.11 would take
(cp311 manylinux, then abi3, then py3-none-any) from the index's PEP 691 JSON page, and stores its
METADATA (the PEP 658 `.metadata` file when the index advertises one, checked against its sha256; else
an HTTP Range read of the wheel's zip central directory and the METADATA member, as pip's lazy wheel
does), plus the members the doctor reads as files (xformers/cpp_lib.json, torch/version.py) and the
names of bitsandbytes' CUDA libraries. Then it closes the set over Requires-Dist (markers evaluated for
CPython 3.11 on Linux x86_64, no extras) so that pip can resolve every scenario offline, and writes the
installed worlds of the scenarios to data/scenarios.json.

Output: data/<index>/<canonical name>/<version>.json, one record per wheel (see `_record`).
"""

from __future__ import annotations

import argparse
import email.parser
import html
import html.parser
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from tests.resolve.index.worlds import DERIVED, INDEX_URLS, SCENARIOS, WORLDS

DATA = Path(__file__).resolve().parent / "data"
TIMEOUT = 60
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
# The environment the recorded closure is for: CI's CPython 3.11 on Linux x86_64.
MARKER_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.7",
    "python_version": "3.11",
    "sys_platform": "linux",
    "extra": "",
}
PY = Version("3.11.7")


def _get(url: str, headers: Optional[Dict[str, str]] = None) -> bytes:
    """GET a URL (with retries: the CDN drops the odd connection)."""
    last: Optional[Exception] = None
    for attempt in range(4):
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return bytes(resp.read())
        except Exception as exc:  # noqa: BLE001 - retried, then re-raised
            last = exc
            time.sleep(1 + attempt)
    raise RuntimeError(f"GET {url}: {last}")


class RangeFile(io.RawIOBase):
    """A read-only remote file read by HTTP Range requests in cached blocks (what zipfile needs)."""

    BLOCK = 256 * 1024

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos = url, size, 0
        self.blocks: Dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, n: int) -> bytes:
        if n not in self.blocks:
            start = n * self.BLOCK
            end = min(self.size, start + self.BLOCK) - 1
            self.blocks[n] = _get(self.url, {"Range": f"bytes={start}-{end}"})
        return self.blocks[n]

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        out = bytearray()
        while self.pos < end:
            blk, off = divmod(self.pos, self.BLOCK)
            chunk = self._block(blk)[off : off + (end - self.pos)]
            if not chunk:
                break
            out += chunk
            self.pos += len(chunk)
        return bytes(out)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def project_files(index: str, name: str) -> List[Dict[str, Any]]:
    """The file list of a project on an index, as PEP 691 JSON entries (an HTML page is converted)."""
    key = (index, canonicalize_name(name))
    if key not in _PAGES:
        url = f"{INDEX_URLS[index].rstrip('/')}/{key[1]}/"
        body = _get(url, {"Accept": f"{JSON_ACCEPT}, text/html;q=0.1"})
        try:
            _PAGES[key] = json.loads(body)["files"]
        except ValueError:
            _PAGES[key] = _html_files(body.decode("utf-8", "replace"), url)
    return list(_PAGES[key])


_PAGES: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: List[Tuple[Dict[str, Optional[str]], str]] = []
        self._cur: Optional[Dict[str, Optional[str]]] = None

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag == "a":
            self._cur = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._cur is not None:
            self.links.append((self._cur, data.strip()))
            self._cur = None


def _html_files(text: str, base: str) -> List[Dict[str, Any]]:
    """PEP 503 anchors as PEP 691 file entries (what the PyTorch index serves)."""
    parser = _Anchors()
    parser.feed(text)
    out = []
    for attrs, label in parser.links:
        href = attrs.get("href") or ""
        url, _, frag = urllib.parse.urljoin(base, href).partition("#")
        fname = urllib.parse.unquote(url.rsplit("/", 1)[-1]) or label
        hashes = dict([frag.split("=", 1)]) if "=" in frag else {}
        cm = attrs.get("data-core-metadata") or attrs.get("data-dist-info-metadata")
        entry: Dict[str, Any] = {"filename": fname, "url": url, "hashes": hashes, "yanked": "data-yanked" in attrs}
        if attrs.get("data-requires-python"):
            entry["requires-python"] = html.unescape(str(attrs["data-requires-python"]))
        if cm:
            entry["core-metadata"] = dict([cm.split("=", 1)]) if "=" in cm else True
        out.append(entry)
    return out


def _rank(filename: str) -> Optional[int]:
    """Preference of a wheel for CPython 3.11 Linux x86_64 (lower is better); None when unusable."""
    if not filename.endswith(".whl"):
        return None
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except Exception:  # noqa: BLE001 - odd file names on an index are skipped
        return None
    best: Optional[int] = None
    for tag in tags:
        plat_ok = tag.platform == "any" or (
            tag.platform.endswith("_x86_64") and (tag.platform.startswith("manylinux") or tag.platform == "linux_x86_64")
        )
        m = re.fullmatch(r"cp3(\d+)", tag.interpreter)
        if not plat_ok:
            continue
        if tag.interpreter == "cp311" and tag.abi == "cp311":
            r = 0
        elif m and int(m.group(1)) <= 11 and tag.abi == "abi3":
            r = 1
        elif tag.interpreter in ("cp311", "py3", "py311") and tag.abi == "none":
            r = 2
        else:
            continue
        r = r * 2 + (1 if tag.platform == "any" else 0)
        best = r if best is None else min(best, r)
    return best


def _file_version(filename: str) -> Optional[Version]:
    try:
        return parse_wheel_filename(filename)[1]
    except Exception:  # noqa: BLE001
        return None


def pick_wheel(index: str, name: str, version: str) -> Dict[str, Any]:
    """The index's file entry for the wheel of name==version that CPython 3.11 on Linux x86_64 takes."""
    want = Version(version)
    cands = []
    for f in project_files(index, name):
        r = _rank(f["filename"])
        v = _file_version(f["filename"])
        if r is not None and v is not None and v == want and str(v) == str(want):
            cands.append((r, f["filename"], f))
    if not cands:
        raise RuntimeError(f"{index}: no Linux x86_64 / cp311 wheel for {name}=={version}")
    return sorted(cands, key=lambda c: (c[0], c[1]))[0][2]


def best_version(index: str, name: str, spec: SpecifierSet) -> Optional[str]:
    """Highest final release on the index with a usable wheel that satisfies spec and Python 3.11."""
    best: Optional[Version] = None
    for f in project_files(index, name):
        if f.get("yanked") or _rank(f["filename"]) is None:
            continue
        v = _file_version(f["filename"])
        if v is None or v.is_prerelease or v.is_devrelease or not spec.contains(v, prereleases=False):
            continue
        rp = f.get("requires-python")
        if rp:
            try:
                if not SpecifierSet(rp).contains(PY, prereleases=True):
                    continue
            except Exception:  # noqa: BLE001 - unparsable requires-python: pip ignores the file too
                continue
        if best is None or v > best:
            best = v
    return None if best is None else str(best)


def _metadata(entry: Dict[str, Any]) -> Tuple[str, str, Optional[zipfile.ZipFile]]:
    """(METADATA text, how it was read, the Range-read zip when one was opened)."""
    cm = entry.get("core-metadata") or entry.get("data-dist-info-metadata")
    if cm:
        body = _get(entry["url"] + ".metadata")
        want = cm.get("sha256") if isinstance(cm, dict) else None
        if want and hashlib.sha256(body).hexdigest() != want:
            raise RuntimeError(f"{entry['filename']}.metadata: sha256 mismatch")
        return body.decode("utf-8"), "pep658", None
    zf = _zip(entry)
    meta = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
    if len(meta) != 1:
        raise RuntimeError(f"{entry['filename']}: {len(meta)} dist-info METADATA members")
    return zf.read(meta[0]).decode("utf-8"), "range", zf


def _zip(entry: Dict[str, Any]) -> zipfile.ZipFile:
    size = entry.get("size")
    if not size:
        req = urllib.request.Request(entry["url"], method="HEAD")
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            size = int(resp.headers["Content-Length"])
    return zipfile.ZipFile(io.BufferedReader(RangeFile(entry["url"], int(size)), buffer_size=64 * 1024))


# Members the doctor reads as files, per project: stored with their text.
TEXT_MEMBERS = {"xformers": ["xformers/cpp_lib.json"], "torch": ["torch/version.py"]}
# Members whose names (not contents) matter: stored as a list, rebuilt as empty files.
NAME_MEMBERS = {"bitsandbytes": r"bitsandbytes/[^/]+\.so"}


def _headers_only(text: str) -> str:
    """METADATA without the long description (the body, or a Description header): pip needs none of it."""
    head = text.replace("\r\n", "\n").split("\n\n", 1)[0]
    out: List[str] = []
    skip = False
    for line in head.split("\n"):
        if line.startswith((" ", "\t")):
            if not skip:
                out.append(line)
            continue
        # The long description, and the continuation lines of a License field that holds a whole
        # licence text (scipy's is 60 kB), are dropped: pip reads neither.
        skip = line.lower().startswith(("description:", "license:"))
        if not line.lower().startswith("description:"):
            out.append(line)
    return "\n".join(out) + "\n"


def _record(index: str, name: str, version: str) -> Dict[str, Any]:
    """Fetch one wheel's facts: metadata, the text members and library names the doctor reads."""
    entry = pick_wheel(index, name, version)
    text, how, zf = _metadata(entry)
    cname = canonicalize_name(name)
    members: Dict[str, str] = {}
    names: List[str] = []
    if cname in TEXT_MEMBERS or cname in NAME_MEMBERS:
        zf = zf or _zip(entry)
        all_names = zf.namelist()
        for m in TEXT_MEMBERS.get(cname, []):
            if m in all_names:
                members[m] = zf.read(m).decode("utf-8")
        if cname in NAME_MEMBERS:
            names = sorted(n for n in all_names if re.fullmatch(NAME_MEMBERS[cname], n))
    return {
        "name": name,
        "version": version,
        "index": index,
        "filename": entry["filename"],
        "url": entry["url"],
        "sha256": (entry.get("hashes") or {}).get("sha256"),
        "requires_python": entry.get("requires-python"),
        "metadata_source": how,
        "recorded": time.strftime("%Y-%m-%d"),
        "metadata": _headers_only(text),
        "members": members,
        "empty_members": names,
    }


def _set_header(metadata: str, key: str, value: str) -> str:
    return re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", metadata, count=1)


def _derive(index: str, pin: str) -> Dict[str, Any]:
    """A record for an unreachable index built from recorded PyPI records, as DERIVED says (and says so)."""
    how = DERIVED[index][pin]
    name, _, version = pin.partition("==")
    bname, _, bver = str(how["from"]).partition("==")
    base = ensure("pypi", bname, bver)
    rec: Dict[str, Any] = json.loads(json.dumps(base))
    meta = _set_header(rec["metadata"], "Version", version)
    if "nvidia_from" in how:
        nname, _, nver = str(how["nvidia_from"]).partition("==")
        other = ensure("pypi", nname, nver)
        keep = [l for l in meta.split("\n") if l.startswith("Requires-Dist: nvidia-nccl")]
        donor = [l for l in other["metadata"].split("\n") if l.startswith("Requires-Dist: nvidia-") and "nvidia-nccl" not in l]
        lines = [l for l in meta.split("\n") if not l.startswith("Requires-Dist: nvidia-")]
        at = next(i for i, l in enumerate(lines) if l.startswith("Requires-Dist:"))
        meta = "\n".join(lines[:at] + donor + keep + lines[at:])
    rec["metadata"] = meta
    rec["version"] = version
    members = dict(rec.get("members") or {})
    if "torch/version.py" in members:
        vp = re.sub(r"__version__ = '[^']*'", f"__version__ = '{version}'", members["torch/version.py"])
        if "cuda" in how:
            vp = re.sub(r"cuda: Optional\[str\] = '[^']*'", f"cuda: Optional[str] = '{how['cuda']}'", vp)
        members["torch/version.py"] = vp
    if "cpp_lib" in how and "xformers/cpp_lib.json" in members:
        cpp = json.loads(members["xformers/cpp_lib.json"])
        cpp["version"].update(dict(how["cpp_lib"]))  # type: ignore[call-overload]
        members["xformers/cpp_lib.json"] = json.dumps(cpp)
    rec["members"] = members
    rec["index"] = index
    rec["metadata_source"] = f"derived from pypi {how['from']}: {how['why']}"
    rec["url"] = None
    rec["sha256"] = None
    rec["recorded"] = time.strftime("%Y-%m-%d")
    return rec


def _mirror(index: str, name: str, version: str) -> Dict[str, Any]:
    """A PyPI record copied onto a PyTorch index that this recorder cannot reach (it mirrors these deps)."""
    rec = dict(ensure("pypi", name, version))
    rec["index"] = index
    rec["metadata_source"] = f"mirrored: PyPI's {name}=={version} ({rec['metadata_source']}); the PyTorch index serves torch's dependencies too"
    return rec


_UNREACHABLE: Dict[str, bool] = {}


def reachable(index: str) -> bool:
    """Whether an index answers from here (the PyTorch indexes may not: then DERIVED records are used)."""
    if index not in _UNREACHABLE:
        try:
            urllib.request.urlopen(INDEX_URLS[index].rstrip("/") + "/", timeout=20).close()
            _UNREACHABLE[index] = False
        except Exception as exc:  # noqa: BLE001 - any failure means: not from here
            print(f"  {index} unreachable ({exc}): derived/mirrored records", file=sys.stderr)
            _UNREACHABLE[index] = True
    return not _UNREACHABLE[index]


# Members the doctor reads as files, per project: stored with their text.
TEXT_MEMBERS = {"xformers": ["xformers/cpp_lib.json"], "torch": ["torch/version.py"]}
# Members whose names (not contents) matter: stored as a list, rebuilt as empty files.
NAME_MEMBERS = {"bitsandbytes": r"bitsandbytes/[^/]+\.so"}


def record_path(index: str, name: str, version: str) -> Path:
    """Where the record of name==version on index lives."""
    return DATA / index / canonicalize_name(name) / f"{version}.json"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def load(index: str, name: str, version: str) -> Optional[Dict[str, Any]]:
    """The stored record, or None."""
    p = record_path(index, name, version)
    return dict(json.loads(p.read_text())) if p.is_file() else None


def ensure(index: str, name: str, version: str) -> Dict[str, Any]:
    """The record of name==version on index, fetched (or derived) and written when not already on disk."""
    rec = load(index, name, version)
    if rec is None:
        pin = f"{name}=={version}"
        if index == "pypi" or reachable(index):
            print(f"  fetch {index}: {pin}", file=sys.stderr)
            rec = _record(index, name, version)
        elif pin in DERIVED.get(index, {}):
            rec = _derive(index, pin)
        else:
            rec = _mirror(index, name, version)
        _write_json(record_path(index, name, version), rec)
    return rec


def requirements(rec: Dict[str, Any], extras: Iterable[str] = ()) -> List[Requirement]:
    """Requires-Dist of a record that apply on CPython 3.11 Linux x86_64 (with the given extras)."""
    msg = email.parser.Parser().parsestr(rec["metadata"], headersonly=True)
    out = []
    for line in msg.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate(dict(MARKER_ENV, extra=e)) for e in ["", *extras]):
            out.append(req)
    return out


def recorded_versions(index: str, name: str) -> List[str]:
    """Versions of a project recorded for an index, ascending."""
    d = DATA / index / canonicalize_name(name)
    return sorted((p.name[: -len(".json")] for p in d.glob("*.json")), key=Version) if d.is_dir() else []


def _satisfying(index: str, req: Requirement) -> List[str]:
    return [v for v in recorded_versions(index, req.name) if req.specifier.contains(Version(v), prereleases=True)]


def _pick(index: str, req: Requirement) -> str:
    """A version to record for an unmet requirement: the highest the index has (PyPI's for an unreachable index)."""
    source = index if index == "pypi" or reachable(index) else "pypi"
    have = _satisfying(source, req) if source != index else []
    pick = have[-1] if have else best_version(source, req.name, req.specifier)
    if pick is None:
        raise RuntimeError(f"{index}: nothing satisfies {req}")
    return pick


def close(index: str) -> None:
    """Add, for every requirement no recorded version satisfies, the highest index version that does.
    Extras asked for by a requirement (`fsspec[http]`) bring in that project's extra requirements."""
    extras: Dict[str, Set[str]] = {}
    changed = True
    while changed:
        changed = False
        for pdir in sorted((DATA / index).iterdir()):
            for ver in recorded_versions(index, pdir.name):
                rec = load(index, pdir.name, ver)
                assert rec is not None
                for req in requirements(rec, extras.get(pdir.name, set())):
                    cname = canonicalize_name(req.name)
                    if req.extras and not set(req.extras) <= extras.get(cname, set()):
                        extras.setdefault(cname, set()).update(req.extras)
                        changed = True
                    if _satisfying(index, req):
                        continue
                    pick = _pick(index, req)
                    print(f"  closure {index}: {req} (for {pdir.name}=={ver}) -> {pick}", file=sys.stderr)
                    ensure(index, req.name, pick)
                    changed = True


def _split(pin: str, default_index: str) -> Tuple[str, str, str]:
    index, _, rest = pin.rpartition(":")
    name, _, version = rest.partition("==")
    return index or default_index, name, version


def installed_world(sid: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    """A scenario's installed set: pip's resolution of `resolve` against the local index (a consistent set),
    with `force` put on top; and the requirements that set leaves unmet (the breakage, stated)."""
    import subprocess

    from tests.resolve.index.server import LocalIndex

    with tempfile.TemporaryDirectory() as tmp, LocalIndex(Path(tmp) / "wheels") as idx:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--only-binary", ":all:",
               "--report", str(report), "--index-url", idx.url("pypi"), *spec["resolve"]]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"{sid}: pip could not resolve {spec['resolve']} offline:\n{res.stdout}\n{res.stderr}")
        got = {canonicalize_name(i["metadata"]["name"]): ("pypi", i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]}
    for pin in spec.get("force", []):
        index, name, version = _split(pin, "pypi")
        got[canonicalize_name(name)] = (index, version)
    unmet = []
    for name, (index, version) in sorted(got.items()):
        rec = load(index, name, version)
        assert rec is not None, f"{sid}: {index}:{name}=={version} not recorded"
        for req in requirements(rec):
            have = got.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(Version(have[1]), prereleases=True):
                unmet.append(f"{name}=={version} requires {req} (installed: {have[1] if have else 'nothing'})")
    installed = [f"{name}=={ver}" if index == "pypi" else f"{index}:{name}=={ver}" for name, (index, ver) in sorted(got.items())]
    return {"about": spec["about"], "installed": installed, "unmet": unmet}


def main(argv: Optional[List[str]] = None) -> int:
    """Record WORLDS, close each index over its requirements, write data/scenarios.json."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--show", metavar="NAME==VER", help="print one wheel's METADATA (and members) and exit")
    ap.add_argument("--index", default="pypi")
    args = ap.parse_args(argv)
    if args.show:
        name, _, ver = args.show.partition("==")
        rec = _record(args.index, name, ver)
        print(rec["filename"], rec["metadata_source"])
        print(rec["metadata"])
        for k, v in rec["members"].items():
            print(f"--- {k}\n{v}")
        print(rec["empty_members"])
        return 0
    for index, pins in WORLDS.items():
        for pin in pins:
            name, _, ver = pin.partition("==")
            ensure(index, name, ver)
    for index in WORLDS:
        close(index)
    scen = {sid: installed_world(sid, dict(spec)) for sid, spec in SCENARIOS.items()}
    _write_json(DATA / "scenarios.json", scen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
