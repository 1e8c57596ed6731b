"""The planner: findings -> candidates from pip's resolver -> would-be Facts -> rules again -> a verified Plan.

One finding at a time, worst first, on the environment the steps chosen so far would produce (so a step
that an earlier one made stale is never planned: the finding is gone there). For each finding the
candidates are its fixes in order, each widened into the smallest moves that could do it (patch before
minor before major, torch kept before torch moved), asked of pip's own resolver against the checked
interpreter with the keep-set as constraints. A candidate is taken when the finding is gone in the
would-be environment and nothing got worse; the whole plan is then verified against the environment
that is there. No plan beats a bad plan: when nothing verifies, the Plan says so and why.
"""

from __future__ import annotations

import time
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from doctor.actions import Action, PipInstall, PipUninstall
from doctor.compat_matrix.model import Matrix
from doctor.facts import Facts
from doctor.findings import Finding
from doctor.resolve.index_versions import VersionLister
from doctor.compat_matrix.stack import TORCH_FAMILY
from doctor.resolve.keep import keep_set
from doctor.resolve.offline import offline_install, offline_plan, pip_fixable
from doctor.resolve.options import PlanOptions
from doctor.resolve.pip_report import Resolved, ResolveFailed, Resolver, ResolverRun, environment_key
from doctor.resolve.plan import FAILED, NOTHING, UNVERIFIED, VERIFIED, Candidate, Change, Plan, Verification, finding_key
from doctor.resolve.verify import compare, package_findings, score, serious
from doctor.resolve.would_be import Install, would_be

MAX_STEPS = 8  # findings handled one after another in one plan
MAX_LINES = 4  # release lines (major.minor) tried per ranged requirement


class Choice(NamedTuple):
    """One requirement the plan asks pip for, and from where."""

    requirement: str  # "transformers==4.46.3", "xformers==0.0.27.post2"
    index_url: Optional[str] = None  # None: the default index
    rebuild: bool = False  # same version, another build: force-reinstall it alone (its dependencies stay)

    @property
    def name(self) -> str:
        return canonicalize_name(Requirement(self.requirement).name)


class State(NamedTuple):
    """The plan so far: requirements per package, packages removed, and the finding each was chosen for."""

    choices: Tuple[Choice, ...] = ()
    removals: Tuple[str, ...] = ()
    reasons: Tuple[Tuple[str, str], ...] = ()  # (package, finding key)

    def with_(self, cand: "Move", reason: str) -> "State":
        names = {c.name for c in cand.choices} | set(cand.removals)
        kept = tuple(c for c in self.choices if c.name not in names)
        return State(kept + cand.choices, tuple(sorted(set(self.removals) | set(cand.removals))),
                     self.reasons + tuple((n, reason) for n in sorted(names)))


class Move(NamedTuple):
    """One candidate for one finding."""

    description: str
    choices: Tuple[Choice, ...] = ()
    removals: Tuple[str, ...] = ()


# Consequences: an unmet requirement of a package that another fix replaces may simply vanish with it
# (a protobuf downgrade needed only by the unsloth_zoo the lockstep fix upgrades), so these come last.
_CONSEQUENCES = ("requires.unmet", "requires.missing")


def _order(f: Finding) -> Tuple[int, int]:
    """Worst first; among equals, the findings about a package before those about its requirements."""
    return (-int(f.severity), f.id in _CONSEQUENCES)


def _version(text: Optional[str]) -> Optional[Version]:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def release_lines(versions: Sequence[str], spec: str, installed: Optional[str]) -> List[str]:
    """Versions meeting `spec`, one per release line (the newest patch of each major.minor), nearest line first:
    the installed line (a patch move), then minor moves in the installed major, then major moves."""
    from packaging.specifiers import SpecifierSet

    s = SpecifierSet(spec)
    cur = _version(installed)
    lines: Dict[Tuple[int, int], Version] = {}
    for raw in versions:
        v = _version(raw)
        if v is None or v.is_prerelease or v.is_devrelease or not s.contains(v):
            continue
        key = (v.major, v.minor)
        if key not in lines or v > lines[key]:
            lines[key] = v
    if cur is None:
        return [str(v) for _, v in sorted(lines.items(), reverse=True)]  # nothing to stay near: newest first

    def distance(item: Tuple[Tuple[int, int], Version]) -> Tuple[int, int, int]:
        (major, minor), _ = item
        if major != cur.major:
            return (2, abs(major - cur.major), 0)
        if minor != cur.minor:
            return (1, abs(minor - cur.minor), 0)
        return (0, 0, 0)

    return [str(v) for _, v in sorted(lines.items(), key=distance)]


class _Planner:
    """One planning run (its resolver cache, version lists, clocks)."""

    def __init__(self, facts: Facts, matrix: Matrix, options: PlanOptions) -> None:
        self.started = time.monotonic()  # the doctor's own time counts from here (pip's is subtracted)
        self.facts = facts
        self.matrix = matrix
        self.options = options
        self.resolver = Resolver(options.python, options.indexes.pip_env, options.max_resolver_runs,
                                 environment_key=environment_key(facts.distributions), disk_cache=options.cache)
        self.lister = VersionLister()
        self.tried: List[Candidate] = []
        self.findings0 = package_findings(facts, matrix)

    # -- indexes -----------------------------------------------------------------------------------------

    def torch_index(self) -> str:
        return (self.options.indexes.torch_index_url or self.matrix.torch_index_url).rstrip("/")

    def index_for(self, action_index: Optional[str]) -> Optional[str]:
        """The index a fix names, moved onto the configured PyTorch index base when it is a variant of it."""
        if not action_index:
            return self.options.indexes.index_url
        base = self.matrix.torch_index_url.rstrip("/")
        if action_index.startswith(base + "/") and self.options.indexes.torch_index_url:
            return self.torch_index() + action_index[len(base):]
        return action_index

    # -- candidates ----------------------------------------------------------------------------------------

    def moves(self, f: Finding, current: Facts) -> Iterator[Move]:
        """Candidates for one finding: its fixes in order, ranges widened into release lines; last, dropping the
        package when nothing installed needs it to run."""
        for a in f.fix:
            if isinstance(a, PipUninstall):
                yield Move("remove " + " ".join(a.names), removals=a.packages())
            elif isinstance(a, PipInstall):
                yield from self._install_moves(a, current)
        if any(isinstance(a, PipUninstall) for a in f.fix):
            return
        for name in dict.fromkeys(p for a in f.fix if isinstance(a, PipInstall) for p in a.packages()):
            why = self._droppable(name, current)
            if why:
                yield Move(f"remove {name} ({why})", removals=(name,))

    def _droppable(self, name: str, current: Facts) -> str:
        """Why `name` can go ('' when it cannot): nothing installed requires it, or only requirers the matrix
        records as running without it. torch and packages named by nobody's fix are never dropped."""
        from doctor.compat_matrix import lookup
        from doctor.rules.requirements import parsed_requires

        if name == "torch" or current.dist(name) is None:
            return ""
        needing = [d for d in current.distributions.values() if d.name != name
                   and any(canonicalize_name(r.name) == name for _, r in parsed_requires(d, current.markers))]
        if not needing:
            return "nothing installed requires it"
        if all(lookup.optional_at_runtime(self.matrix, d.name, name, d.version) for d in needing):
            return "optional at run time for " + ", ".join(d.name for d in needing)
        return ""

    def _install_moves(self, a: PipInstall, current: Facts) -> Iterator[Move]:
        index = self.index_for(a.index_url)
        reqs = []
        for text in a.requirements:
            try:
                reqs.append(Requirement(text))
            except InvalidRequirement:
                return
        if a.force_reinstall and len(reqs) == 1:
            r = reqs[0]
            yield Move(f"rebuild {r} from {index or 'the default index'}", (Choice(str(r), index, rebuild=True),))
            return
        if len(reqs) != 1:
            yield Move("install " + " ".join(map(str, reqs)), tuple(Choice(str(r), index) for r in reqs))
            return
        r = reqs[0]
        name = canonicalize_name(r.name)
        exact = [s for s in r.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if exact or not str(r.specifier):
            yield self._with_torch_family(Move(f"install {r}", (Choice(str(r), index),)), name, current, index)
            return
        installed = current.version_of(name)
        try:
            versions = self.lister.versions(name, index)
        except ResolveFailed as exc:
            self.tried.append(Candidate(f"list {name}", str(exc)))
            yield Move(f"install {r}", (Choice(str(r), index),))
            return
        for v in release_lines(versions, str(r.specifier), installed)[:MAX_LINES]:
            yield Move(f"install {name}=={v}", (Choice(f"{name}=={v}", index),))

    def _with_torch_family(self, move: Move, name: str, current: Facts, index: Optional[str]) -> Move:
        """Moving torch moves the installed torch-family packages with it, from the same index (pip picks
        the builds that match: they pin torch exactly)."""
        if name != "torch":
            return move
        extra = tuple(Choice(n, index) for n in TORCH_FAMILY if n != "torch" and current.dist(n) is not None
                      and n not in ("triton", "pytorch-triton"))  # torch pins its own triton
        return move._replace(choices=move.choices + extra, description=move.description
                             + "".join(f" + {c.requirement}" for c in extra))

    # -- resolving a state ---------------------------------------------------------------------------------

    def resolve(self, state: State) -> List[Install]:
        """pip's answer for the whole state: one run per index (rebuilds alone), torch kept unless it moves."""
        moving = {c.name for c in state.choices}
        constraints = keep_set(self.facts, self.findings0, moving=moving | set(state.removals))
        groups: Dict[Tuple[Optional[str], bool], List[Choice]] = {}
        for c in state.choices:
            groups.setdefault((c.index_url, c.rebuild), []).append(c)
        installs: Dict[str, Install] = {}
        for (index, rebuild), choices in groups.items():
            run = ResolverRun(tuple(c.requirement for c in choices), constraints, index,
                              force_reinstall=rebuild, no_deps=rebuild)
            report = self.resolver.resolve(run)
            for r in report.install:
                installs[r.name] = Install(r, index)
        return list(installs.values())

    def evaluate(self, state: State) -> Tuple[Facts, List[Finding], List[Install]]:
        installs = self.resolve(state)
        facts = would_be(self.facts, self.matrix, installs, state.removals)
        return facts, package_findings(facts, self.matrix), installs

    # -- the plan ------------------------------------------------------------------------------------------

    def plan(self, targets: Sequence[Finding]) -> Plan:
        state = State()
        current_facts, current, installs = self.facts, self.findings0, []  # type: Facts, List[Finding], List[Install]
        given_up: Dict[str, str] = {}
        target_keys = {finding_key(t) for t in targets}
        for _ in range(MAX_STEPS):
            open_ = [f for f in serious(current) if pip_fixable(f) and finding_key(f) not in given_up
                     and (finding_key(f) in target_keys or finding_key(f) not in {finding_key(b) for b in serious(self.findings0)})]
            if not open_:
                break
            f = min(open_, key=_order)
            key = finding_key(f)
            taken = False
            reasons: List[str] = []
            for move in self.moves(f, current_facts):
                trial = state.with_(move, key)
                try:
                    t_facts, t_findings, t_installs = self.evaluate(trial)
                except ResolveFailed as exc:
                    self.tried.append(Candidate(move.description, f"pip: {exc}"))
                    reasons.append(f"{move.description}: {exc}")
                    continue
                still = key in {finding_key(x) for x in serious(t_findings)}
                if still:
                    self.tried.append(Candidate(move.description, "does not fix it"))
                    reasons.append(f"{move.description}: does not fix it")
                    continue
                worse = self._worse(current, t_findings)
                if worse:
                    self.tried.append(Candidate(move.description, worse))
                    reasons.append(f"{move.description}: {worse}")
                    continue
                self.tried.append(Candidate(move.description, "taken"))
                state, current_facts, current, installs = trial, t_facts, t_findings, t_installs
                taken = True
                break
            if not taken:
                given_up[key] = "; ".join(reasons) or "no fix the index can provide"
            if self.resolver.runs >= self.options.max_resolver_runs:
                break
        return self._finish(targets, state, current, installs, given_up, time.monotonic() - self.started)

    def _worse(self, current: Sequence[Finding], after: Sequence[Finding]) -> str:
        """Why a candidate makes things worse (new findings not accepted, or a worse score), else ''."""
        cmp = compare(current, after, (), self.matrix, facts=self.facts)
        if cmp.new:
            news = ", ".join(finding_key(f) for f in cmp.new[:3])
            if score(after) >= score(current):
                return f"adds {news}"
        return ""

    def _finish(self, targets: Sequence[Finding], state: State, after: Sequence[Finding], installs: List[Install],
                given_up: Dict[str, str], elapsed: float) -> Plan:
        cmp = compare(self.findings0, after, targets, self.matrix, facts=self.facts)
        unfixable = tuple((t, given_up.get(finding_key(t), "not fixed by the plan")) for t in cmp.remaining)
        doctor_seconds = max(elapsed - self.resolver.seconds, 0.0)
        base = dict(tried=tuple(self.tried), resolver_runs=self.resolver.runs, resolver_seconds=self.resolver.seconds,
                    doctor_seconds=doctor_seconds, fixed=cmp.fixed, remaining=cmp.remaining, new=cmp.new,
                    accepted=cmp.accepted)
        if not cmp.fixed or cmp.new or not (state.choices or state.removals):
            why = "no candidate fixed a finding without adding another"
            if cmp.new:
                why = "the plan would add " + ", ".join(finding_key(f) for f in cmp.new)
            elif given_up:
                why = "; ".join(f"{k}: {v}" for k, v in given_up.items())
            return Plan(tuple(targets), verification=Verification(FAILED, reason=why, **base),  # type: ignore[arg-type]
                        unfixable=unfixable, python=self.options.python)
        changes, actions = self._actions(state, installs, after)
        notes = tuple(f"`pip check` will list {finding_key(f)}: {why}" for f, why in cmp.accepted)
        moving = {c.name for c in state.choices} | set(state.removals)
        keeps = keep_set(self.facts, self.findings0, moving=moving)
        return Plan(tuple(cmp.fixed), changes, actions, keeps, keeps,
                    Verification(VERIFIED, **base), unfixable, notes, self.options.python)  # type: ignore[arg-type]

    def _actions(self, state: State, installs: List[Install], after: Sequence[Finding]) -> Tuple[Tuple[Change, ...], Tuple[Action, ...]]:
        """Changes and the fewest pip invocations: one uninstall, then one install per index, exact pins."""
        reasons = dict(state.reasons)
        rebuilds = {c.name for c in state.choices if c.rebuild}
        changes: List[Change] = []
        for name in state.removals:
            d = self.facts.dist(name)
            if d is not None:
                changes.append(Change(name, d.version, None, None, reasons.get(name, "")))
        groups: Dict[Tuple[Optional[str], bool], List[Resolved]] = {}
        for inst in installs:
            r = inst.resolved
            before = self.facts.version_of(r.name)
            rebuild = r.name in rebuilds
            if before == r.version and not rebuild:
                continue  # pip listed what is there (a forced run): nothing changes
            changes.append(Change(r.name, before, r.version, inst.index_url,
                                  reasons.get(r.name, "required by the packages above"), rebuild))
            groups.setdefault((inst.index_url, rebuild), []).append(r)
        unmet = {f.subject for f in serious(after) if f.id in ("requires.missing", "requires.unmet")}
        actions: List[Action] = []
        if state.removals:
            actions.append(PipUninstall(tuple(state.removals), description="remove " + ", ".join(state.removals)))
        for (index, rebuild), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] is not None, kv[0][1])):
            pins = tuple(f"{r.name}=={r.version}" for r in sorted(rs, key=lambda r: r.name))
            # every dependency is in this list or already installed (pip's report): --no-deps keeps pip from
            # re-deciding anything; when the would-be environment still misses one, let pip resolve
            satisfied = not any(s.split("->")[0] in {r.name for r in rs} for s in unmet)
            actions.append(PipInstall(
                pins, description=("rebuild " if rebuild else "install ") + ", ".join(p for p in pins),
                index_url=index, no_deps=satisfied,
                no_deps_why="pip's report: every dependency is in this command or already installed" if satisfied else "",
                force_reinstall=rebuild,
                force_reinstall_why="same version, the build for torch's CUDA family: pip would call the installed one satisfied" if rebuild else "",
                only_binary=True))
        return tuple(changes), tuple(actions)


def plan_fixes(facts: Facts, matrix: Matrix, findings: Sequence[Finding], options: PlanOptions = PlanOptions()) -> Plan:
    """The smallest verified package change that fixes the package findings at warn or worse (or why none)."""
    targets = [f for f in findings if pip_fixable(f)]
    if not targets:
        return Plan((), verification=Verification(NOTHING, reason="no finding a package change fixes"), python=options.python)
    if options.offline:
        return offline_plan(facts, matrix, targets, options)
    planner = _Planner(facts, matrix, options)
    current_keys = {finding_key(f) for f in serious(planner.findings0)}
    # findings the check had but the package rules do not reproduce (probe verdicts) stay targets by key
    return planner.plan([t for t in targets if finding_key(t) in current_keys] or targets)


def plan_install(facts: Facts, matrix: Matrix, requirements: Sequence[str], options: PlanOptions = PlanOptions()) -> Plan:
    """`doctor install PKG...`: the requested packages, resolved keeping torch, verified like any fix."""
    from doctor.errors import DoctorError

    reqs: List[Requirement] = []
    for text in requirements:
        try:
            reqs.append(Requirement(text))
        except InvalidRequirement as exc:
            raise DoctorError(f"not a requirement: {text!r} ({exc})") from None
    if options.offline:
        return offline_install(facts, matrix, reqs, options)
    planner = _Planner(facts, matrix, options)
    choices = []
    for r in reqs:
        name = canonicalize_name(r.name)
        index = options.indexes.index_url
        if name in TORCH_FAMILY and options.cuda:  # --cuda: the torch family from that family's index only
            from doctor.compat_matrix.versions import cuda_tag

            index = f"{planner.torch_index()}/{'cpu' if options.cuda == 'cpu' else cuda_tag(options.cuda)}"
        choices.append(Choice(str(r), index))
    state = State(tuple(choices), (), tuple((c.name, "requested") for c in choices))
    try:
        after_facts, after, installs = planner.evaluate(state)
    except ResolveFailed as exc:
        planner.tried.append(Candidate(" ".join(map(str, reqs)), f"pip: {exc}"))
        return Plan((), verification=Verification(FAILED, reason=str(exc), tried=tuple(planner.tried),
                                                  resolver_runs=planner.resolver.runs,
                                                  resolver_seconds=planner.resolver.seconds), python=options.python)
    cmp = compare(planner.findings0, after, (), matrix, facts=facts)
    elapsed = time.monotonic() - planner.started
    base = dict(tried=tuple(planner.tried) + (Candidate(" ".join(map(str, reqs)), "resolved"),),
                resolver_runs=planner.resolver.runs, resolver_seconds=planner.resolver.seconds,
                doctor_seconds=max(elapsed - planner.resolver.seconds, 0.0), new=cmp.new, accepted=cmp.accepted)
    if cmp.new:
        why = "installing it would add " + ", ".join(f"{finding_key(f)} ({f.title})" for f in cmp.new)
        return Plan((), verification=Verification(FAILED, reason=why, **base), python=options.python)  # type: ignore[arg-type]
    changes, actions = planner._actions(state, installs, after)
    if not actions:
        return Plan((), verification=Verification(NOTHING, reason="already installed", **base), python=options.python)  # type: ignore[arg-type]
    moving = {c.name for c in choices}
    keeps = keep_set(facts, planner.findings0, moving=moving)
    notes = tuple(f"`pip check` will list {finding_key(f)}: {why}" for f, why in cmp.accepted)
    return Plan((), changes, actions, keeps, keeps, Verification(VERIFIED, **base), (), notes, options.python)  # type: ignore[arg-type]


__all__ = ["plan_fixes", "plan_install", "release_lines", "UNVERIFIED"]
