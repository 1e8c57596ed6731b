"""What the service answers for one validated request (no FastAPI here).

Two modes, named in every answer (`mode`, `note`, and the plan's `verified_against`):
- "offline-matrix" (the default: the server has no index access): findings and pins from the matrix; the
  plan is exact pins from the matrix, checked by the rules on the would-be environment but not against
  the index;
- "index" (`doctor serve --index-url URL` or DOCTOR_INDEX_URL): the plan comes from the resolver issue's
  planner, pip's resolver run against that index for a stand-in of the client's environment
  (doctor.service.index_mode), verified by the rules. When index mode cannot answer (the index is down,
  the client's markers are not the server's), the answer is offline-matrix with a note saying why.
Either way the client never runs the plan: it re-derives it locally from the pins and verifies it there
(doctor.service.client).

`Answerer` is built once per worker: the matrix is loaded and the rule modules imported at start-up, its
ETag computed from the data files, and answers are kept in a small LRU keyed by the request's bytes
(the service is stateless and read-only: the same bytes always get the same answer from the same data).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from doctor._version import __version__
from doctor.compat_matrix.model import Matrix
from doctor.errors import DoctorError
from doctor.findings import Finding, Severity
from doctor.resolve.options import IndexConfig
from doctor.service.schema import SCHEMA_VERSION, ServiceRequest

MODE = "offline-matrix"
INDEX_MODE = "index"
INDEX_NOTE = ("the plan was resolved by pip against the service's package index for the client's Python and platform "
              "tags, with its installed distributions kept, and verified by the rules on the would-be environment "
              "(the client still re-derives it from the pins and verifies it locally)")
INDEX_ANSWER_TTL = 3600.0  # seconds an index-mode answer is reused: the index moves on (the planner's report TTL)
CACHE_BODY_LIMIT = 256 << 10  # bodies above it are answered but not kept (256 entries x 256 KiB at most = 64 MiB)
NOTE = ("the service has no index access: findings and pins come from its matrix; the plan is exact pins from the "
        "matrix, NOT verified against the index (the client re-derives it from the pins and verifies it locally)")


class MatrixInfo(NamedTuple):
    """The matrix a worker serves, as `GET /v1/matrix` shows it."""

    data_version: str
    etag: str  # strong ETag (quoted): sha256 of the data files and the overlay, the same on every replica
    origin: str  # "embedded", "embedded + refreshed overlay", or "DOCTOR_MATRIX_DIR"
    tables: Dict[str, int]  # rows per table


def matrix_info(matrix: Matrix) -> MatrixInfo:
    """Data version, ETag from the bytes of the data in force, where it comes from, rows per table."""
    import os

    from doctor.compat_matrix.files import DEFAULT_DIR, FILES
    from doctor.compat_matrix.refresh.overlay import overlay_path
    from doctor.envvars import DOCTOR_MATRIX_DIR

    h = hashlib.sha256()
    env = os.environ.get(DOCTOR_MATRIX_DIR, "").strip()
    base = Path(env) if env else Path(DEFAULT_DIR)
    for name in FILES:
        h.update(name.encode() + b"\0")
        try:
            h.update((base / name).read_bytes())
        except OSError:
            h.update(b"<unreadable>")
    origin = "DOCTOR_MATRIX_DIR" if env else "embedded"
    if not env:
        try:
            h.update(b"overlay\0" + overlay_path().read_bytes())
            origin = "embedded + refreshed overlay"
        except OSError:
            pass
    h.update(matrix.data_version.encode())
    tables = {k: len(v) for k, v in matrix._asdict().items() if isinstance(v, (tuple, dict)) or hasattr(v, "keys")}
    return MatrixInfo(matrix.data_version, f'"{h.hexdigest()[:32]}"', origin,
                      {k: n for k, n in sorted(tables.items()) if k != "sources"})


def _counts(findings: List[Finding]) -> Dict[str, int]:
    out = {s.label: 0 for s in Severity}
    for f in findings:
        out[f.severity.label] += 1
    return out


def compute(req: ServiceRequest, matrix: Matrix, index: Optional[IndexConfig] = None) -> Dict[str, Any]:
    """The answer document: findings, pins and the plan for the request (index mode when `index` names one, else
    offline-matrix). DoctorError for a request the matrix cannot serve (a --torch build it does not know): the
    caller answers 422 with that line."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from doctor.resolve.offline import offline_fixes, offline_install
    from doctor.resolve.options import PlanOptions
    from doctor.resolve.pin_files import pins_document
    from doctor.resolve.pins import known_good_pins
    from doctor.resolve.verify import package_findings

    facts = req.facts
    findings = package_findings(facts, matrix)
    names = tuple(dict.fromkeys(canonicalize_name(Requirement(p).name) for p in req.packages))
    ps = known_good_pins(facts, matrix, only=names, torch=req.torch, cuda=req.cuda)
    pins = pins_document(ps)
    for key in ("python", "prefix", "pip_version"):  # the server knows none of these: the client fills them in
        pins.pop(key, None)
    mode, note, plan_doc = MODE, NOTE, None
    if index is not None and index.index_url and req.plan:  # plan false: the cheap matrix plan, never pip
        try:
            plan_doc = _index_plan(req, matrix, findings, index)
            mode, note = INDEX_MODE, INDEX_NOTE
        except DoctorError as exc:  # index_mode.Decline, or the planner cannot run here (no pip >= 25.3)
            note = f"index mode could not answer ({' '.join(str(exc).split())[:300]}); " + NOTE
    if index is not None and index.index_url and not req.plan:
        note = ("no plan asked for (plan: false): findings and pins come from the matrix; the plan below is exact pins "
                "from the matrix, not resolved against the index")
    if plan_doc is None:
        options = PlanOptions(offline=True)
        if req.packages:
            wanted = [_narrowed(p, ps) for p in req.packages]
            plan = offline_install(facts, matrix, [Requirement(w) for w in wanted], options, before=findings)
        else:
            plan = offline_fixes(facts, matrix, findings, options)  # the findings above: the rules run once on facts
        plan_doc = dict(plan.to_dict())
    plan_doc.pop("constraints", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "service_version": __version__,
        "mode": mode,
        "note": note,
        "matrix_version": matrix.data_version,
        "summary": _counts(findings),
        "findings": [_finding(f) for f in findings],
        "pins": pins,
        "plan": plan_doc,
    }


def _index_plan(req: ServiceRequest, matrix: Matrix, findings: List[Finding], index: IndexConfig) -> Dict[str, Any]:
    """The planner's verified plan for the request, resolved by pip against `index` for a stand-in of the client's
    environment (doctor.service.index_mode); Decline (a DoctorError) when this mode cannot answer it."""
    from pathlib import Path

    from doctor.resolve.options import PlanOptions
    from doctor.resolve.planner import plan_fixes, plan_install
    from doctor.service import index_mode

    try:
        index_mode.check_markers(req.facts)
        index_mode.probe(str(index.index_url))
    except index_mode.Decline as exc:
        raise DoctorError(str(exc)) from None
    config = index._replace(pip_env=tuple(index.pip_env) + index_mode.pip_tags_env(req.facts))
    try:
        with index_mode.workdir() as tmp:
            python = index_mode.stand_in(req.facts, Path(tmp) / "env")
            options = PlanOptions(python=str(python), indexes=config, torch=req.torch, cuda=req.cuda,
                                  cache=False)  # stateless: no report kept on the server's disk
            if req.packages:
                plan = plan_install(req.facts, matrix, list(req.packages), options)
            else:
                plan = plan_fixes(req.facts, matrix, findings, options)
    except OSError as exc:  # no room or no rights for the stand-in: the server's problem, answered offline
        raise DoctorError(f"the stand-in environment could not be made ({exc.strerror or exc})") from None
    doc: Dict[str, Any] = dict(plan.to_dict())
    doc.pop("actions", None)  # commands naming the server's own indexes: the client derives its own
    for change in doc.get("changes") or []:
        change["index_url"] = index_mode.public_index(change.get("index_url"), index.index_url, index.torch_index_url,
                                                      matrix.torch_index_url)
    return doc


def _narrowed(requirement: str, ps: Any) -> str:
    """A wanted requirement made exact by the pin the matrix has for it, when that pin is exact and admitted."""
    from packaging.requirements import Requirement

    r = Requirement(requirement)
    pin = ps.pin_for(r.name)
    if pin is not None:
        specs = list(Requirement(pin.requirement).specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version \
                and r.specifier.contains(specs[0].version, prereleases=True):
            return f"{pin.name}=={specs[0].version}"
    return requirement


def _finding(f: Finding) -> Dict[str, Any]:
    """A finding without its fix commands: the client never takes a command from the network."""
    d = f.to_dict()
    d["fix"] = [{"kind": a.kind, "description": a.description} for a in f.fix]
    return d


class Answerer:
    """One worker's matrix, its ETag and the answer cache."""

    def __init__(self, matrix: Optional[Matrix] = None, cache_size: int = 256, index: Optional[IndexConfig] = None) -> None:
        from doctor.compat_matrix.loader import load_matrix
        from doctor.rules import all_rules

        self.index = index if index is not None and index.index_url else None
        self.mode = INDEX_MODE if self.index is not None else MODE  # the mode it answers in when nothing fails
        self.matrix = matrix if matrix is not None else load_matrix()
        self.info = matrix_info(self.matrix)
        all_rules()  # import every rule module now, not on the first request
        self._warm_up()
        self.cache_size = max(0, int(cache_size))
        self._cache: "OrderedDict[Any, Tuple[bytes, bytes, float]]" = OrderedDict()  # key -> (body, answer, when)
        self.ttl = INDEX_ANSWER_TTL if self.index is not None else float("inf")  # the matrix does not move
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _warm_up(self) -> None:
        """Answer one small request now: the planner's and the pins' modules load here, not in the first request."""
        from doctor.service.schema import parse_request

        facts = {"python": {"version": "3.11.9"}, "platform": {"system": "Linux", "machine": "x86_64"},
                 "distributions": [{"name": "torch", "version": "2.4.0+cu121", "requires": ["filelock"]},
                                   {"name": "xformers", "version": "0.0.27", "requires": ["torch==2.3.1"]}],
                 "torch_build": {"version": "2.4.0+cu121", "cuda": "12.1"},
                 "gpus": [{"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}], "driver": "550.54.15"}
        for packages in ([], ["xformers"]):
            try:
                compute(parse_request({"facts": facts, "packages": packages}), self.matrix)
            except DoctorError:
                pass  # a matrix without these rows still serves; the first real request pays the imports

    def matrix_document(self) -> bytes:
        """`GET /v1/matrix`'s body."""
        i = self.info
        return json.dumps({"schema_version": SCHEMA_VERSION, "data_version": i.data_version, "etag": i.etag,
                           "origin": i.origin, "mode": self.mode, "tables": i.tables}).encode()

    def cached(self, body: bytes) -> Tuple[Any, Optional[bytes]]:
        """(cache key, the answer given for these exact bytes before, or None).

        The key is Python's own hash of the bytes (SipHash, keyed per process: ~4x cheaper than sha256 on a 76 KB
        document); a hit also compares the stored body, so a collision can never hand out another's answer."""
        key = (len(body), hash(body))
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and time.monotonic() - entry[2] >= self.ttl:
                del self._cache[key]
                entry = None
            if entry is not None and entry[0] == body:
                self._cache.move_to_end(key)
                self.hits += 1
                return key, entry[1]
            self.misses += 1
        return key, None

    def answer(self, key: Any, req: ServiceRequest, body: bytes = b"") -> bytes:
        """Compute, serialise and remember the answer for `body` (DoctorError passes through: a 422)."""
        doc = compute(req, self.matrix, self.index)
        answer = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        # a fallback answer is not kept: the index may answer the same request the next time
        if self.cache_size and len(body) <= CACHE_BODY_LIMIT and doc["mode"] == self.mode:
            with self._lock:
                self._cache[key] = (body, answer, time.monotonic())
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return answer


__all__ = ["Answerer", "DoctorError", "INDEX_MODE", "INDEX_NOTE", "MODE", "NOTE", "compute", "matrix_info"]
