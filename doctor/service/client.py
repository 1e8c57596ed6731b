"""The client of the resolution service: `--service URL` / DOCTOR_SERVICE_URL for check, pin and install.

Contract:
- The request is schema.request_document(facts): no paths, hostnames, user names or environment values.
- httpx with short timeouts (1 s to connect, 2 s per read, 5 s in all per attempt) and ONE retry, for a
  refused connection, a timeout or a 5xx. The answer is read up to 4 MiB.
- Every answer is validated and re-parsed with packaging before use (validate_answer): names, versions,
  specifiers, one-line printable text, index URLs only of the local matrix's PyTorch index. Anything else
  is a ServiceError, and the command falls back to the local matrix with ONE line saying so.
- Nothing from the network is ever run: findings come without their fix commands; pins are data (a
  constraints line is rebuilt from a parsed name and specifier); a plan is re-derived locally from the
  service's exact pins by the local planner and verified locally (doctor.resolve), never taken as is.
httpx is imported only when a service is asked: the fast path of `doctor check` never loads it.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from doctor.errors import DoctorError
from doctor.facts import Facts
from doctor.findings import Category, Finding, Severity

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0
# A plan from a service in index mode runs pip's resolver there (1.5-2 s on a local index, more on a cold real one)
PLAN_READ_TIMEOUT = 60.0
ATTEMPT_DEADLINE = 5.0  # seconds for one attempt, whatever the server trickles (a plan: its read timeout + this)
RETRIES = 1
MAX_ANSWER_BYTES = 4 << 20

_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,80}$")
_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]{0,126}[A-Za-z0-9])$")
_TAG = re.compile(r"^(cu[0-9]{2,3}|cpu|rocm[0-9]+(\.[0-9]+){0,2}|xpu)$")
_SEVERITIES = {s.label: s for s in Severity}
_CATEGORIES = {c.key: c for c in Category}


class ServiceError(Exception):
    """The service could not be used: unreachable, slow, a 4xx/5xx, or an answer that does not validate."""


class ServiceChange(NamedTuple):
    """One package move of the service's plan, re-parsed: the local planner re-derives the plan from these."""

    name: str  # canonical
    after: Optional[str]  # the exact version to install; None: the service would remove it
    index_url: Optional[str] = None  # only ever the local matrix's PyTorch index for a variant


class Answer(NamedTuple):
    """A validated answer of POST /v1/resolve."""

    url: str
    mode: str  # "offline-matrix", or "index" (a server resolving against its package index)
    matrix_version: str
    findings: Tuple[Finding, ...]  # without fix actions: the local planner makes the fixes
    pins: Tuple[Any, ...]  # doctor.resolve.pins.Pin, rebuilt from parsed names and specifiers
    unfit: Tuple[Any, ...]  # doctor.resolve.pins.Unfit
    notes: Tuple[str, ...]
    torch: Optional[str]
    cuda: Optional[str]
    requested: bool
    index_url: Optional[str]
    plan_status: str
    changes: Tuple[ServiceChange, ...]


# -- where the service is -----------------------------------------------------------------------------------


def service_url(option: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """--service, else DOCTOR_SERVICE_URL, else None; DoctorError (exit 3) for a URL that is not http(s)://host[:port][/path]."""
    from doctor.envvars import DOCTOR_SERVICE_URL

    env = os.environ if environ is None else environ
    raw = option if option is not None else env.get(DOCTOR_SERVICE_URL, "")
    raw = (raw or "").strip()
    if not raw:
        return None
    where = "--service" if option is not None else DOCTOR_SERVICE_URL
    try:
        parts = urlsplit(raw)
        port = parts.port  # ValueError for a port that is not a number
    except ValueError:
        raise DoctorError(f"{where}: not a URL: {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DoctorError(f"{where}: expected http(s)://HOST[:PORT], got {raw!r}")
    if parts.username or parts.password:
        raise DoctorError(f"{where}: no credentials in the URL (DOCTOR_SERVICE_TOKEN_FILE holds the token)")
    if parts.query or parts.fragment:
        raise DoctorError(f"{where}: no query or fragment in the URL, got {raw!r}")
    del port
    return raw.rstrip("/")


def service_token(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The bearer token from the file DOCTOR_SERVICE_TOKEN_FILE names, or None; DoctorError when unreadable."""
    from doctor.envvars import DOCTOR_SERVICE_TOKEN_FILE

    env = os.environ if environ is None else environ
    path = (env.get(DOCTOR_SERVICE_TOKEN_FILE) or "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            token = fh.read(4097).strip()
    except OSError as exc:
        raise DoctorError(f"{DOCTOR_SERVICE_TOKEN_FILE}: {path}: unreadable ({exc.strerror or exc})") from None
    if not token or len(token) > 4096 or any(c < 0x21 or c > 0x7E for c in token):
        raise DoctorError(f"{DOCTOR_SERVICE_TOKEN_FILE}: {path}: expected one token of printable ASCII")
    return token.decode("ascii")


def local_matrix_origin() -> str:
    """What the fallback uses: 'the refreshed overlay' when there is one, else 'the embedded data'."""
    from doctor.envvars import DOCTOR_MATRIX_DIR

    if os.environ.get(DOCTOR_MATRIX_DIR, "").strip():
        return f"${DOCTOR_MATRIX_DIR}"
    from doctor.compat_matrix.refresh.overlay import overlay_path

    return "the refreshed overlay" if overlay_path().is_file() else "the embedded data"


def fallback_line(url: str, error: BaseException) -> str:
    """The one line a command prints when it falls back."""
    why = " ".join(str(error).split())[:200]
    return f"doctor: service {url} not used ({why}); using the local matrix ({local_matrix_origin()})"


# -- asking ----------------------------------------------------------------------------------------------------


def ask(url: str, facts: Facts, packages: Sequence[str] = (), torch: Optional[str] = None, cuda: Optional[str] = None,
        token: Optional[str] = None, torch_index_url: Optional[str] = None, read_timeout: Optional[float] = None,
        plan: bool = True) -> Answer:
    """POST the sanitized facts to URL/v1/resolve and return the validated answer; ServiceError for any failure.

    plan=False asks for findings and pins only (`doctor check`, `doctor pin`): the answer comes within the short
    timeouts even from a server in index mode; with a plan (check --fix, install) the read timeout is longer."""
    import json

    from doctor.service.schema import request_document

    body = json.dumps(request_document(facts, packages, torch, _cuda_version(cuda), plan=plan),
                      separators=(",", ":")).encode()
    if read_timeout is None:
        read_timeout = PLAN_READ_TIMEOUT if plan else READ_TIMEOUT
    raw = _post(url + "/v1/resolve", body, token, read_timeout)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise ServiceError("its answer is not JSON") from None
    if torch_index_url is None:
        from doctor.compat_matrix.loader import load_matrix

        torch_index_url = load_matrix().torch_index_url
    return validate_answer(doc, url, torch_index_url)


def _cuda_version(cuda: Optional[str]) -> Optional[str]:
    """--cuda as the request spells it: "12.8" and "cpu" as they are, an index tag ("cu128") or "none" translated."""
    if cuda is None:
        return None
    text = cuda.strip().lower()
    m = re.fullmatch(r"cu([0-9]{1,2})([0-9])", text)
    if m:
        return f"{int(m.group(1))}.{m.group(2)}"
    return "cpu" if text == "none" else text


def _post(url: str, body: bytes, token: Optional[str], read_timeout: float) -> bytes:
    """The answer's bytes after at most 1 + RETRIES attempts; ServiceError with the last reason."""
    import httpx

    from doctor._version import __version__

    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": f"tune-doctor/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = httpx.Timeout(connect=CONNECT_TIMEOUT, read=read_timeout, write=read_timeout, pool=CONNECT_TIMEOUT)
    last = "no attempt"
    # trust_env=False: no proxy or netrc from the environment decides where the inventory goes
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for attempt in range(1 + RETRIES):
            if attempt:
                time.sleep(0.2)
            try:
                status, data = _once(client, url, body, headers, ATTEMPT_DEADLINE + max(0.0, read_timeout - READ_TIMEOUT))
            except httpx.TimeoutException:
                last = "timed out"
                continue
            except httpx.HTTPError as exc:
                last = _connect_reason(exc)
                continue
            if status >= 500:
                last = f"HTTP {status}"
                continue
            if status != 200:
                raise ServiceError(f"HTTP {status}{_detail(data)}")
            return data
    raise ServiceError(last)


def _once(client: Any, url: str, body: bytes, headers: Dict[str, str], seconds: float = ATTEMPT_DEADLINE) -> Tuple[int, bytes]:
    """One POST, the body read up to the size limit and the attempt's deadline (`seconds` from now)."""
    import httpx

    deadline = time.monotonic() + seconds
    with client.stream("POST", url, content=body, headers=headers) as r:
        chunks: List[bytes] = []
        size = 0
        for chunk in r.iter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise ServiceError(f"its answer is larger than {MAX_ANSWER_BYTES} bytes")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("deadline")
            chunks.append(chunk)
        return r.status_code, b"".join(chunks)


def _connect_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "refused" in text.lower():
        return "connection refused"
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def _detail(data: bytes) -> str:
    """': <detail>' from a JSON error body, cleaned to one printable line, or ''."""
    import json

    try:
        detail = json.loads(data).get("detail")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return f": {_printable(detail)[:160]}" if isinstance(detail, str) else ""


# -- validating the answer ----------------------------------------------------------------------------------------


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())


def _line(value: Any, where: str, limit: int = 400, empty: bool = True) -> str:
    """A one-line printable string (no control characters: nothing may move a terminal's cursor)."""
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise ServiceError(f"invalid answer: {where}")
    if not value.isprintable():
        raise ServiceError(f"invalid answer: {where} holds control characters")
    return value


def _opt_line(value: Any, where: str, limit: int = 400) -> Optional[str]:
    return None if value is None else _line(value, where, limit)


def _list(value: Any, where: str, limit: int = 500) -> List[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise ServiceError(f"invalid answer: {where}")
    return value


def _dict(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ServiceError(f"invalid answer: {where}")
    return value


def _name(value: Any, where: str) -> str:
    from packaging.utils import canonicalize_name

    if not isinstance(value, str) or not _NAME.match(value):
        raise ServiceError(f"invalid answer: {where} is not a package name")
    return canonicalize_name(value)


def _version(value: Any, where: str, nullable: bool = False) -> Optional[str]:
    from packaging.version import InvalidVersion, Version

    from doctor.resolve.pin_files import one_token

    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > 64 or not one_token(value):
        raise ServiceError(f"invalid answer: {where} is not a version")
    try:
        Version(value)
    except InvalidVersion:
        raise ServiceError(f"invalid answer: {where} is not a version") from None
    return value


def _index(value: Any, where: str, torch_index_url: str) -> Optional[str]:
    """None, or the local matrix's PyTorch index for one variant: the service never chooses where pip looks."""
    if value is None:
        return None
    base = torch_index_url.rstrip("/")
    if not isinstance(value, str) or not value.startswith(base + "/") or not _TAG.match(value[len(base) + 1:]):
        raise ServiceError(f"invalid answer: {where} is not an index of {base}")
    return value


def validate_answer(doc: Any, url: str, torch_index_url: str) -> Answer:
    """The answer re-parsed: every field checked, specifiers and versions through packaging; ServiceError otherwise."""
    try:
        return _validate(doc, url, torch_index_url)
    except ServiceError:
        raise
    except Exception as exc:  # anything the checks above did not foresee is still an invalid answer
        raise ServiceError(f"invalid answer ({type(exc).__name__})") from None


def _validate(doc: Any, url: str, torch_index_url: str) -> Answer:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from doctor.resolve.pin_files import one_token
    from doctor.resolve.pins import Pin, Unfit
    from doctor.service.schema import SCHEMA_VERSION

    top = _dict(doc, "not an object")
    if top.get("schema_version") != SCHEMA_VERSION:
        raise ServiceError(f"invalid answer: schema_version {str(top.get('schema_version'))[:20]!r}, expected {SCHEMA_VERSION}")
    mode = _line(top.get("mode"), "mode", 40, empty=False)
    matrix_version = _line(top.get("matrix_version"), "matrix_version", 40, empty=False)
    findings = []
    for i, f in enumerate(_list(top.get("findings"), "findings")):
        f = _dict(f, f"findings[{i}]")
        fid = f.get("id")
        if not isinstance(fid, str) or not _ID.match(fid):
            raise ServiceError(f"invalid answer: findings[{i}].id")
        sev = _SEVERITIES.get(f.get("severity"))  # type: ignore[arg-type]
        cat = _CATEGORIES.get(f.get("category"))  # type: ignore[arg-type]
        if sev is None or cat is None:
            raise ServiceError(f"invalid answer: findings[{i}] severity or category")
        evidence = tuple((_line(k, f"findings[{i}].evidence", 80), _line(v, f"findings[{i}].evidence", 600))
                         for k, v in _dict(f.get("evidence", {}), f"findings[{i}].evidence").items())
        findings.append(Finding(fid, sev, cat, _line(f.get("title"), f"findings[{i}].title", 400, empty=False),
                                evidence[:40], _line(f.get("explanation", ""), f"findings[{i}].explanation", 4000),
                                (), _line(f.get("subject", ""), f"findings[{i}].subject", 200)))
    pd = _dict(top.get("pins"), "pins")
    pins = []
    for i, p in enumerate(_list(pd.get("pins"), "pins.pins")):
        p = _dict(p, f"pins.pins[{i}]")
        name = _name(p.get("name"), f"pins.pins[{i}].name")
        spec = p.get("specifier")
        if not isinstance(spec, str) or not spec or len(spec) > 200:
            raise ServiceError(f"invalid answer: pins.pins[{i}].specifier")
        try:
            parsed = SpecifierSet(spec)
        except InvalidSpecifier:
            raise ServiceError(f"invalid answer: pins.pins[{i}].specifier is not a specifier") from None
        if not all(one_token(s.version) for s in parsed):
            raise ServiceError(f"invalid answer: pins.pins[{i}].specifier")
        # the line pip reads is rebuilt from what packaging parsed, never copied from the answer
        pins.append(Pin(name, str(parsed), _line(p.get("reason", ""), f"pins.pins[{i}].reason"),
                        _line(p.get("source", ""), f"pins.pins[{i}].source", 200),
                        _index(p.get("index_url"), f"pins.pins[{i}].index_url", torch_index_url), bool(p.get("kept") is True)))
    unfit = []
    for i, u in enumerate(_list(pd.get("unfit", []), "pins.unfit")):
        u = _dict(u, f"pins.unfit[{i}]")
        unfit.append(Unfit(_name(u.get("name"), f"pins.unfit[{i}].name"), _line(u.get("why", ""), f"pins.unfit[{i}].why"),
                           tuple(_line(a, f"pins.unfit[{i}].alternatives") for a in _list(u.get("alternatives", []), "alternatives", 20))))
    notes = tuple(_line(n, "pins.notes") for n in _list(pd.get("notes", []), "pins.notes", 50))
    torch = _version(pd.get("torch"), "pins.torch", nullable=True)
    cuda = pd.get("cuda")
    if cuda is not None and not (isinstance(cuda, str) and re.fullmatch(r"[0-9]{1,2}\.[0-9]{1,2}", cuda)):
        raise ServiceError("invalid answer: pins.cuda")
    plan = _dict(top.get("plan"), "plan")
    status = plan.get("status")
    if status not in ("verified", "unverified", "failed", "nothing-to-do"):
        raise ServiceError("invalid answer: plan.status")
    changes = []
    for i, c in enumerate(_list(plan.get("changes", []), "plan.changes", 100)):
        c = _dict(c, f"plan.changes[{i}]")
        changes.append(ServiceChange(_name(c.get("name"), f"plan.changes[{i}].name"),
                                     _version(c.get("after"), f"plan.changes[{i}].after", nullable=True),
                                     _index(c.get("index_url"), f"plan.changes[{i}].index_url", torch_index_url)))
    return Answer(url, mode, matrix_version, tuple(findings), tuple(pins), tuple(unfit), notes, torch, cuda,
                  bool(pd.get("requested") is True), _index(pd.get("index_url"), "pins.index_url", torch_index_url),
                  str(status), tuple(changes))


# -- what the commands do with it ------------------------------------------------------------------------------


def pin_set(answer: Answer, facts: Facts, only: Sequence[str] = ()) -> Any:
    """The service's pins as a local PinSet for `facts`' interpreter (the hook writes into its prefix)."""
    from doctor.resolve.pins import PinSet

    note = f"pins from the service {answer.url} (matrix {answer.matrix_version}, {answer.mode})"
    return PinSet(torch=answer.torch, cuda=answer.cuda, requested=answer.requested, pins=answer.pins,
                  unfit=answer.unfit, notes=answer.notes + (note,), only=tuple(only), python=facts.python.executable,
                  prefix=facts.python.prefix, pip_version=facts.version_of("pip"), matrix_version=answer.matrix_version,
                  index_url=answer.index_url)


def merged_findings(local: Sequence[Finding], answer: Answer) -> Tuple[Finding, ...]:
    """The local findings, then the service's that the local matrix did not produce (its fixes are planned locally)."""
    seen = {(f.id, f.subject) for f in local}
    extra = tuple(f._replace(evidence=f.evidence + (("reported by", f"the service {answer.url} (matrix {answer.matrix_version})"),))
                  for f in answer.findings if (f.id, f.subject) not in seen)
    return tuple(local) + extra


def exact_requirements(answer: Answer) -> Tuple[str, ...]:
    """The service plan's installs as exact `name==version` requirements for the local planner (removals and
    moves from another index are left to the local planner's own candidates)."""
    return tuple(f"{c.name}=={c.after}" for c in answer.changes if c.after is not None and c.index_url is None)


def narrowed(requirements: Sequence[str], answer: Answer) -> Tuple[str, ...]:
    """Each wanted requirement made exact by the service's pin for it when that pin is one version it admits."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    by_name = {p.name: p for p in answer.pins}
    out = []
    for text in requirements:
        r = Requirement(text)
        pin = by_name.get(canonicalize_name(r.name))
        spec = list(Requirement(pin.requirement).specifier) if pin is not None else []
        if pin is not None and len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version \
                and r.specifier.contains(spec[0].version, prereleases=True) and pin.index_url is None:
            out.append(f"{pin.name}=={spec[0].version}")
        else:
            out.append(text)
    return tuple(out)
