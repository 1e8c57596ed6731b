"""Known-good pins: constraints that keep a torch build and the packages coupled to it, from Facts + Matrix.

Offline and without subprocesses (another interpreter's paths come from inventory.interpreter, one child):
the pins are what the installed files and the embedded matrix already say. By default they keep the
installed torch by its exact version string with arbitrary equality (`torch===2.13.0+cpu`: a plain
`torch==2.13.0` admits another build, +cpu or +cu126, in its place) and, around it:

- triton: the pin of that torch release (torch_triton table), the installed one when it matches;
- torchvision / torchaudio / flash-attn and other installed torch-coupled packages: kept (===) when their
  own metadata admits that torch (they pin torch exactly, so torch's pin picks their builds too);
- xformers: the installed one when its extension was built for this torch (cpp_lib.json), else the
  release built for it (remedies.xformers_built_for) from the index of torch's CUDA family;
- bitsandbytes: the installed release when the matrix says it supports this torch, else the newest range
  that does;
- unsloth and unsloth_zoo in lockstep (the zoo release unsloth names as its floor), plus the ranges the
  matrix records for that unsloth release.

"Healthy" here means the metadata and build facts match the torch the pins are for; what only execution
can tell (a flash-attn `undefined symbol`) is `doctor check`'s probes' business, not a pin's.
`--torch VER --cuda VER` computes the same for another torch build, from that CUDA family's index.
"""

from __future__ import annotations

import re
import sys
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from doctor.compat_matrix import lookup
from doctor.compat_matrix.model import Matrix
from doctor.compat_matrix.versions import minor_of, parse_torch_version, parse_version, release_of
from doctor.errors import DoctorError
from doctor.facts import Distribution, Facts
from doctor.compat_matrix.stack import TORCH_COUPLED
from doctor.resolve.keep import pin as exact_pin
from doctor.resolve.pin_files import one_token
from doctor.resolve.torch_target import TorchTarget, torch_target
from doctor.rules.requirements import parsed_requires

__all__ = ["INSTALLED", "REQUESTED", "Pin", "PinSet", "Unfit", "known_good_pins", "parse_names", "pin_facts"]

INSTALLED = "installed"  # Pin.source of a pin that keeps what is installed
REQUESTED = "requested"  # Pin.source of the torch asked for with --torch/--cuda

# They pin torch exactly in their metadata: with torch's pin in force, pip picks their matching build itself.
_PINS_TORCH_EXACTLY = ("torchvision", "torchaudio")

_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")  # PEP 508 project name


class Pin(NamedTuple):
    """One constraint line: `name` + `specifier`, with why and where the fact comes from."""

    name: str  # canonical (PEP 503) name, "unsloth-zoo"
    specifier: str  # "===2.13.0+cpu", "==3.5.0", ">=0.45.5,<=0.45.5"
    reason: str  # one line: why this version and no other
    source: str  # "installed", "requested", or the matrix table and its source key ("matrix torch_triton [WHEEL]")
    index_url: Optional[str] = None  # the PyTorch CUDA-family index this build comes from; None: the default index
    kept: bool = False  # True: the installed version string, kept exactly

    @property
    def requirement(self) -> str:
        """The line pip reads: `torch===2.13.0+cpu`."""
        return f"{self.name}{self.specifier}"


class Unfit(NamedTuple):
    """A package for which no release fits the torch the pins are for, and what to do instead."""

    name: str  # canonical name
    why: str  # one line
    alternatives: Tuple[str, ...] = ()  # concrete choices, preferred first


class PinSet(NamedTuple):
    """The known-good pins for one environment and one torch build."""

    torch: Optional[str]  # the torch build the pins keep or target ("2.13.0+cpu"); None: no torch
    cuda: Optional[str]  # its CUDA ("12.8"); None for a CPU build or when unknown
    requested: bool  # True: --torch/--cuda asked for this build; False: the installed one is kept
    pins: Tuple[Pin, ...]
    unfit: Tuple[Unfit, ...] = ()
    notes: Tuple[str, ...] = ()  # what the pins do not cover, and why
    only: Tuple[str, ...] = ()  # --for: the packages asked about (canonical); empty: all
    python: str = ""  # the interpreter the pins are for
    prefix: str = ""  # its sys.prefix (the hook writes <prefix>/pip.conf)
    pip_version: Optional[str] = None  # pip installed in that environment (the hook's build-constraint needs >= 26.2)
    matrix_version: str = ""  # data_version of the matrix the pins come from
    index_url: Optional[str] = None  # the PyTorch index of torch's CUDA family when torch must come from it

    def pin_for(self, name: str) -> Optional[Pin]:
        """The first pin on `name` (any spelling), or None."""
        key = canonicalize_name(name)
        return next((p for p in self.pins if p.name == key), None)


# -- the environment, read fast ---------------------------------------------------------------------------


def pin_facts(python: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Facts:
    """Facts enough for pins: interpreter, distributions, torch and xformers builds; no GPU detection.

    `python`: another interpreter's environment (a stdlib-only child of it reports its sys.path);
    DoctorError (exit 3) when it is not a working Python.
    """
    from doctor.inventory.builds import torch_build, xformers_build
    from doctor.inventory.distributions import scan_distributions
    from doctor.inventory.platform_info import platform_info, python_info

    info, markers = python_info(), {}  # type: ignore[var-annotated]
    paths: List[str] = list(sys.path)
    if python is not None:
        from doctor.inventory.interpreter import ask_interpreter

        target = ask_interpreter(python, environ=environ)
        info, markers, paths = target.python, dict(target.markers), list(target.path)
    scan = scan_distributions(paths)
    dists = scan.distributions
    return Facts(python=info, platform=platform_info(), distributions=dists, torch=torch_build(paths, dists.get("torch")),
                 xformers=xformers_build(paths, dists.get("xformers")), notes=scan.notes, markers=markers)


# -- argument checks (bad input is a DoctorError: exit 3) ----------------------------------------------------


def parse_names(names: Iterable[str]) -> Tuple[str, ...]:
    """Canonical project names for --for, in order, without repeats; DoctorError for anything that is not a name."""
    out: List[str] = []
    for raw in names:
        for part in str(raw).replace(",", " ").split():
            if not _NAME.match(part):
                raise DoctorError(f"--for {part!r}: not a package name")
            key = canonicalize_name(part)
            if key not in out:
                out.append(key)
    return tuple(out)


# -- the pins ---------------------------------------------------------------------------------------------


def known_good_pins(facts: Facts, matrix: Matrix, only: Sequence[str] = (), torch: Optional[str] = None,
                    cuda: Optional[str] = None) -> PinSet:
    """The pins that keep (or, with torch/cuda, target) one torch build and what is coupled to it.

    `only` (--for) limits the pins to those packages, plus torch's own pin: the others are only good with it.
    A package in `only` that no release fits becomes an Unfit with alternatives. DoctorError for bad input.
    """
    wanted = parse_names(only)
    notes: List[str] = []
    t = torch_target(facts, matrix, torch, cuda, notes)
    b = _Builder(facts, matrix, t, notes)
    b.torch_pin()
    if t.version is not None:
        b.triton()
        b.xformers(asked="xformers" in wanted)
        b.bitsandbytes(asked="bitsandbytes" in wanted)
        b.coupled(wanted)
    elif facts.version_of("torch") is None and not t.requested:
        notes.append("no torch is installed: nothing torch-coupled to keep (pass --torch VER [--cuda VER] to pin for "
                     "a torch you are about to install)")
    b.unsloth(asked="unsloth" in wanted or "unsloth-zoo" in wanted)
    b.asked_for(wanted)
    pins, unfit = b.pins, b.unfit
    if wanted:
        pins = [p for p in pins if p.name in wanted or p.name == "torch"]
        unfit = [u for u in unfit if u.name in wanted]
    index_url = f"{matrix.torch_index_url}/{t.tag}" if t.tag else None
    pip = facts.version_of("pip")
    return PinSet(torch=t.text, cuda=t.cuda, requested=t.requested, pins=tuple(_dedupe(pins)), unfit=tuple(unfit),
                  notes=tuple(dict.fromkeys(notes)), only=wanted, python=facts.python.executable,
                  prefix=facts.python.prefix, pip_version=pip, matrix_version=matrix.data_version, index_url=index_url)


def _dedupe(pins: Iterable[Pin]) -> List[Pin]:
    """The same line twice says nothing new: keep the first."""
    seen, out = set(), []
    for p in pins:
        if p.requirement not in seen:
            seen.add(p.requirement)
            out.append(p)
    return out


class _Builder:
    """Collects pins, unfit packages and notes for one target torch."""

    def __init__(self, facts: Facts, matrix: Matrix, target: TorchTarget, notes: List[str]) -> None:
        self.facts, self.m, self.t, self.notes = facts, matrix, target, notes
        self.pins: List[Pin] = []
        self.unfit: List[Unfit] = []
        self.decided: Dict[str, str] = {}  # name -> what was decided (pinned / unfit / noted), so coupled() skips it
        # the release the pins are for; the builders below run only when there is a torch target
        self.rel: Version = release_of(target.version) if target.version is not None else Version("0")

    # helpers

    def _source(self, table: str, key: str) -> str:
        return f"matrix {table} [{key}]"

    def _index(self, tag: Optional[str]) -> Optional[str]:
        return f"{self.m.torch_index_url}/{tag}" if tag else None

    def _keep(self, dist: Distribution, reason: str) -> None:
        """Pin the installed version string exactly."""
        v = parse_version(dist.version)
        if v is None or not one_token(dist.version):
            self.notes.append(f"{dist.name}: its installed version {dist.version!r} is unreadable, so it is not pinned")
            return
        self.pins.append(Pin(dist.name, _exactly(dist.name, str(v)), reason, INSTALLED, kept=True))
        self.decided[dist.name] = "kept"

    def _installed(self, name: str) -> Optional[Distribution]:
        d = self.facts.dist(name)
        return d if d is not None and not d.error else None

    def _torch_spec_of(self, dist: Distribution) -> Optional[SpecifierSet]:
        """What `dist`'s own Requires-Dist asks of torch here (markers evaluated), or None when nothing."""
        return _requirement_on(dist, "torch", self.facts.markers)

    # torch and what its wheel pins

    def torch_pin(self) -> None:
        t = self.t
        if t.text is None:
            return
        if t.requested:
            where = f"from {self._index(t.tag)}" if t.tag else "the plain wheel of the default index"
            cuda = f"CUDA {t.cuda}" if t.cuda else ("CPU" if t.tag == "cpu" else "its default CUDA")
            self.pins.append(Pin("torch", _exactly("torch", t.text), f"torch {t.text} for {cuda} ({where}), asked for with --torch/--cuda",
                                 REQUESTED, index_url=self._index(t.tag)))
        else:
            self.pins.append(Pin("torch", _exactly("torch", t.text), "the installed torch build, kept exactly (=== admits no other "
                                 "build of the same release, such as +cpu or +cu126)", INSTALLED,
                                 index_url=self._index(t.tag), kept=True))
        self.decided["torch"] = "pinned"

    def triton(self) -> None:
        """The triton torch's wheel pins (Linux CUDA builds; CPU wheels carry no triton)."""
        if self.t.cpu or not self._linux():
            return
        req = lookup.triton_pin_for_torch(self.m, self.rel)
        have = self._installed("triton")
        if req is None:
            self.notes.append(f"the matrix has no triton pin for torch {self.rel}")
            return
        hv = parse_version(have.version) if have else None
        if have is not None and hv is not None and req.spec.contains(hv, prereleases=True):
            self._keep(have, f"installed triton {have.version} is the one torch {self.rel} pins ({req.spec})")
            return
        self.pins.append(Pin("triton", str(req.spec), f"torch {self.rel} pins triton{req.spec} in its wheel's Requires-Dist",
                             self._source("torch_triton", req.source)))
        self.decided["triton"] = "pinned"

    def _linux(self) -> bool:
        system = self.facts.markers.get("platform_system") or self.facts.platform.system
        return system == "Linux"

    # xformers

    def xformers(self, asked: bool) -> None:
        from doctor.remedies import xformers_built_for, xformers_install

        have = self._installed("xformers")
        if have is None and not asked:
            if self.t.cpu:
                return  # nothing installed, nothing asked, and no xformers runs on a CPU torch
        alternatives = ("remove xformers: torch SDPA covers attention for transformers and Unsloth",)
        if self.t.cpu:
            self._unfit_or_note("xformers", have, asked, f"xformers needs a CUDA torch; torch {self.t.text} is a CPU build",
                                alternatives + ("a CUDA build of torch: doctor pin --torch VER --cuda VER",))
            return
        if have is not None and self._xformers_healthy(have):
            self._keep(have, f"installed xformers {have.version}, its extension built for torch {self.rel}")
            return
        pick = xformers_built_for(self.m, self.rel)
        req = lookup.torch_requirement_of_xformers(self.m, pick) if pick else None
        if pick is None or (req is not None and not req.spec.contains(self.rel, prereleases=True)):
            why = (f"xformers {pick} requires torch{req.spec}, not torch {self.rel}" if pick and req
                   else f"the matrix knows no xformers built for torch {self.rel}")
            alt = list(alternatives)
            if pick and req:
                alt.append(f"xformers=={pick} with --no-deps (built for torch{req.spec}: a patch release apart; "
                           "the GPU probe of `doctor check` decides)")
            newer = self._newest_pair()
            if newer:
                alt.append(f"torch {newer[0]} with xformers {newer[1]}: doctor pin --torch {newer[0]}")
            self._unfit_or_note("xformers", have, asked, why, tuple(alt))
            return
        install = xformers_install(self.m, self.rel, None, self.t.cuda if self.t.cuda_known else "")
        index_url = install.index_url if install is not None else None
        src = self._source("xformers_torch", req.source) if req else "matrix pairs"
        why = f"xformers {pick} is built for torch {self.rel}" + (f" / CUDA {self.t.cuda}" if self.t.cuda else "")
        if have is not None:
            why += f" (the installed {have.version} is not)"
        self.pins.append(Pin("xformers", f"=={pick}", why, src, index_url=index_url))
        self.decided["xformers"] = "pinned"

    def _xformers_healthy(self, have: Distribution) -> bool:
        """Its extension's build (cpp_lib.json) is this torch release and CUDA; without that file, its metadata admits torch."""
        xb = self.facts.xformers
        if xb is not None and xb.torch_version and not xb.error:
            built = parse_torch_version(xb.torch_version)
            if built is None or release_of(built) != self.rel:
                return False
            if xb.cuda_version and self.t.cuda:
                try:
                    return lookup.cuda_from_int(xb.cuda_version) == self.t.cuda
                except ValueError:
                    return False
            return True
        spec = self._torch_spec_of(have)
        return spec is not None and spec.contains(self.t.version or self.rel, prereleases=True)  # type: ignore[arg-type]

    def _newest_pair(self) -> Optional[Tuple[str, str]]:
        """(torch release, xformers) of the newest known-good pair (a minor's pair holds for its .0 release)."""
        best: Optional[Tuple[Version, str]] = None
        for key, xf in self.m.torch_xformers_pairs.items():
            v = parse_version(key if key.count(".") >= 2 else f"{key}.0")
            if v is not None and (best is None or v > best[0]):
                best = (v, xf)
        return (str(best[0]), best[1]) if best else None

    # bitsandbytes

    def bitsandbytes(self, asked: bool) -> None:
        have = self._installed("bitsandbytes")
        if have is not None:
            row = lookup.bnb_requirement(self.m, have.version)
            ok = row.spec.contains(self.rel, prereleases=True) if row else None
            if ok is None:  # a release the matrix does not list: its own metadata decides
                spec = self._torch_spec_of(have)
                ok = spec is None or spec.contains(self.rel, prereleases=True)
                src = "its Requires-Dist"
            else:
                src = f"matrix bitsandbytes_torch [{row.source}]" if row else ""
            if ok:
                self._keep(have, f"installed bitsandbytes {have.version} supports torch {self.rel} ({src})")
                return
        py = parse_version(self.facts.python.version)
        fits = [r for r in self.m.bitsandbytes_torch if r.spec.contains(self.rel, prereleases=True)
                and (r.python is None or py is None or r.python.contains(py, prereleases=True))]
        if not fits:
            if have is not None or asked:
                self._unfit_or_note("bitsandbytes", have, asked, f"no bitsandbytes release in the matrix supports torch {self.rel}",
                                    ("remove bitsandbytes if you do not quantize", "a newer torch"))
            return
        best = max(fits, key=lambda r: max((v for v in (parse_version(s.version) for s in r.versions) if v),
                                          default=Version("0")))
        why = f"bitsandbytes {best.versions} supports torch{best.spec}" + (f" and python{best.python}" if best.python else "")
        if have is not None:
            why += f" (the installed {have.version} does not support torch {self.rel})"
        self.pins.append(Pin("bitsandbytes", str(best.versions), why, self._source("bitsandbytes_torch", best.source)))
        self.decided["bitsandbytes"] = "pinned"

    # the other installed torch-coupled packages

    def coupled(self, wanted: Sequence[str]) -> None:
        for name in TORCH_COUPLED:
            if name == "torch" or name in self.decided:  # torch: its own pin, above
                continue
            have = self._installed(name)
            if have is None:
                if name in wanted and name in _PINS_TORCH_EXACTLY:
                    where = f" from {self._index(self.t.tag)}" if self.t.tag else ""
                    self.notes.append(f"{name} is not installed; it pins torch exactly, so with torch's pin in force pip "
                                      f"picks the {name} built for torch {self.t.text}{where}")
                    self.decided[name] = "noted"
                continue
            spec = self._torch_spec_of(have)
            assert self.t.version is not None
            if spec is None or spec.contains(self.t.version, prereleases=True):
                what = f"its torch requirement {spec or '(any)'} admits torch {self.t.text}" if spec is not None else \
                    "it declares no torch requirement"
                extra = "; its binary is verified by `doctor check` probes, not by a pin" if name == "flash-attn" else ""
                self._keep(have, f"installed {name} {have.version}: {what}{extra}")
                continue
            alt = [f"pip uninstall {name}"]
            if name in _PINS_TORCH_EXACTLY:
                where = f" --index-url {self._index(self.t.tag)}" if self.t.tag else ""
                alt.insert(0, f"the {name} built for torch {self.t.text}: pip install {name}{where} (torch's pin picks it)")
            self._unfit_or_note(name, have, name in wanted, f"installed {name} {have.version} requires torch{spec}, "
                                f"not torch {self.t.text}", tuple(alt))

    # unsloth and unsloth_zoo move together

    def unsloth(self, asked: bool) -> None:
        un, zoo = self._installed("unsloth"), self._installed("unsloth-zoo")
        if un is None:
            if zoo is not None:
                self._keep(zoo, f"installed unsloth_zoo {zoo.version} (no unsloth installed to move with it)")
            elif asked:
                self.notes.append("unsloth is not installed: with torch's pin in force pip picks an unsloth release that "
                                  "admits it (unsloth and unsloth_zoo must then be installed together)")
            return
        zoo_spec, zoo_src = self._unsloth_needs(un, "unsloth-zoo")
        torch_spec, torch_src = self._unsloth_needs(un, "torch")
        if self.t.version is not None and torch_spec is not None and not torch_spec.contains(self.t.version, prereleases=True):
            self.unfit.append(Unfit("unsloth", f"unsloth {un.version} requires torch{torch_spec} ({torch_src}), not torch {self.t.text}",
                                    (f"an unsloth release that supports torch {self.t.text}: pip install unsloth unsloth_zoo "
                                     "with these pins in force", "keep the torch unsloth supports")))
            self.decided["unsloth"] = "unfit"
        else:
            self._keep(un, f"installed unsloth {un.version}; unsloth and unsloth_zoo move together")
        zv = parse_version(zoo.version) if zoo else None
        if zoo is not None and (zoo_spec is None or (zv is not None and zoo_spec.contains(zv, prereleases=True))):
            self._keep(zoo, f"installed unsloth_zoo {zoo.version}" + (f" meets unsloth {un.version}'s unsloth_zoo{zoo_spec}"
                                                                        if zoo_spec is not None else "") + " (lockstep)")
        elif zoo_spec is not None:
            floors = [s.version for s in zoo_spec if s.operator == ">="]
            spec = f"=={floors[0]}" if len(floors) == 1 else str(zoo_spec)
            why = (f"the unsloth_zoo release unsloth {un.version} names as its floor (released with it; the newest zoo may "
                   f"expect a newer unsloth)")
            if zoo is not None:
                why += f"; the installed {zoo.version} does not meet unsloth_zoo{zoo_spec}"
            self.pins.append(Pin("unsloth-zoo", spec, why, zoo_src))
            self.decided["unsloth-zoo"] = "pinned"
        for pkg in self.m.unsloth_requires:
            if pkg in ("unsloth-zoo", "torch"):
                continue
            row = lookup.unsloth_requirement(self.m, un.version, pkg)
            if row is not None and str(row.spec):
                self.pins.append(Pin(pkg, str(row.spec), f"what unsloth {un.version} requires of {pkg}",
                                     self._source("pairs", row.source)))

    def _unsloth_needs(self, un: Distribution, pkg: str) -> Tuple[Optional[SpecifierSet], str]:
        """What this unsloth release requires of `pkg`: the matrix's record first, else its own Requires-Dist."""
        row = lookup.unsloth_requirement(self.m, un.version, pkg)
        if row is not None:
            return row.spec, self._source("pairs", row.source)
        spec = _requirement_on(un, pkg, self.facts.markers)
        return (spec, f"unsloth {un.version} Requires-Dist") if spec is not None and str(spec) else (None, "")

    # --for names nothing above decided

    def asked_for(self, wanted: Sequence[str]) -> None:
        for name in wanted:
            if name in self.decided or name == "torch":
                continue
            if any(p.name == name for p in self.pins):
                continue
            have = self._installed(name)
            if name == "flash-attn":
                prebuilt = self.m.notes.get("flash_attn.prebuilt", "")
                self.unfit.append(Unfit("flash-attn", "the matrix records no flash-attn wheels per torch build"
                                        + (f" ({prebuilt})" if prebuilt else ""),
                                        ("`doctor install flash-attn`: resolved and verified against this torch",
                                         f"a release wheel built for torch "
                                         f"{minor_of(self.rel) if self.t.version is not None else 'X.Y'}"
                                         + (f" + CUDA {self.t.cuda}" if self.t.cuda else ""),
                                         "attn_implementation='sdpa' (nothing to install)")))
            elif have is not None:
                self._keep(have, f"installed {name} {have.version}, kept as it is (the matrix has no facts against it)")
            else:
                self.notes.append(f"{name} is not installed and the matrix has no facts about it: nothing to pin (pip picks "
                                  "a release that fits the other pins)")

    def _unfit_or_note(self, name: str, have: Optional[Distribution], asked: bool, why: str,
                       alternatives: Tuple[str, ...]) -> None:
        """Installed or asked for: an Unfit (the user must choose); otherwise only a note."""
        if have is not None or asked:
            self.unfit.append(Unfit(name, why, alternatives))
        else:
            self.notes.append(f"{name}: {why}")
        self.decided[name] = "unfit"


def _requirement_on(dist: Distribution, name: str, markers: Mapping[str, str]) -> Optional[SpecifierSet]:
    """The specifier `dist` puts on `name` where its markers apply (empty set: any version), or None."""
    key = canonicalize_name(name)
    # an odd marker counts as applying (rules.requirements reads them so): the safer reading for a keep decision
    return next((req.specifier for _line, req in parsed_requires(dist, markers) if canonicalize_name(req.name) == key),
                None)


def _exactly(name: str, version: str) -> str:
    """The keep-set's specifier (keep.pin): arbitrary equality with the whole version string, local label included."""
    return exact_pin(name, version)[len(name):]
