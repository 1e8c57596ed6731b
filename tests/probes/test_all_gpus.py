"""`doctor probe --all-gpus` on the CPU: simulated GPUs (DOCTOR_GPUS with UUIDs), planted probes in real child
processes that fail, crash or dawdle only on one GPU, CUDA_VISIBLE_DEVICES read as CUDA reads it, the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from doctor.cache.own import DoctorCache
from doctor.errors import DoctorError
from doctor.facts import GPU
from doctor.findings import Severity
from doctor.inventory.gpu.override import parse_gpu_override
from doctor.probes.all_gpus import AllGpuRun, run_all_gpus
from doctor.probes.compare import BAD_GPU, SLOW_GPU, compare_gpus
from doctor.probes.gpus import Visible, device_env, gpu_choice_problem, visible_gpus
from doctor.probes.spec import ProbeSpec
from doctor.report_data import exit_code_for
from tests.conftest import REPO, run_doctor

U0 = "GPU-0a0a0a0a-0000-4000-8000-000000000000"
U1 = "GPU-1b1b1b1b-1111-4111-8111-111111111111"
U2 = "GPU-1b2c2c2c-2222-4222-8222-222222222222"  # shares "GPU-1b" with U1: a prefix that is ambiguous
H100 = "NVIDIA H100 80GB HBM3"
THREE = f"{H100}@9.0@81559@{U0},{H100}@9.0@81559@{U1},{H100}@9.0@{U2}"
P = "tests.probes.planted_gpus"


def gpus(spec: str = THREE) -> List[GPU]:
    """GPUs as DOCTOR_GPUS describes them."""
    return list(parse_gpu_override(spec))


def spec(id: str, fn: str, group: str = "g", **params) -> ProbeSpec:  # type: ignore[no-untyped-def]
    """A CPU probe running one planted body."""
    return ProbeSpec(id=id, title=fn, target=f"{P}:{fn}", needs_torch=False, needs_cuda=False, group=group,
                     timeout=20, params=params)


# --- DOCTOR_GPUS with UUIDs ------------------------------------------------------------------------------

def test_override_items_take_a_uuid_and_stay_backward_compatible() -> None:
    """NAME@CC@MEM@UUID, NAME@CC@UUID and the old forms side by side."""
    got = parse_gpu_override(f"T4@7.5@15360@{U0}, {H100}@9.0@{U1},A100@8.0@40960,L4@8.9")
    assert [(g.index, g.name, g.memory_mib, g.uuid) for g in got] == [
        (0, "T4", 15360, U0), (1, H100, None, U1), (2, "A100", 40960, None), (3, "L4", None, None)]


@pytest.mark.parametrize("value, words", [
    ("T4@7.5@GPU-123", "has UUID 'GPU-123'"),
    (f"T4@7.5@1@{U0[:-1]}g", "has UUID"),
    (f"T4@7.5@{U0},L4@8.9@{U0}", f"repeats UUID {U0}"),
    (f"T4@7.5@1@{U0}@x", "is not NAME@CC[@MEM_MIB][@UUID]"),
    ("T4@7.5@1@2", "is not NAME@CC[@MEM_MIB][@UUID]"),
    (f"T4@7.5@{U0}\nrm", "has UUID"),
])
def test_override_bad_uuid_is_one_line(value: str, words: str) -> None:
    """A malformed or repeated UUID is a one-line DoctorError naming DOCTOR_GPUS and the item."""
    with pytest.raises(DoctorError) as info:
        parse_gpu_override(value)
    assert words in str(info.value) and "DOCTOR_GPUS" in str(info.value) and "\n" not in str(info.value)


# --- CUDA_VISIBLE_DEVICES as CUDA reads it -------------------------------------------------------------------

def shown(value: "str | None", gs: "List[GPU] | None" = None, **env: str) -> Visible:
    """visible_gpus for one CUDA_VISIBLE_DEVICES value (None: unset)."""
    environ = dict(env)
    if value is not None:
        environ["CUDA_VISIBLE_DEVICES"] = value
    return visible_gpus(gs if gs is not None else gpus(), environ)


@pytest.mark.parametrize("value, indices", [
    (None, [0, 1, 2]),  # unset: every GPU
    ("2,0", [2, 0]),  # CUDA's order is the list's
    (" 1 , 2 ", [1, 2]),
    (U2, [2]),
    (f"{U2},{U0}", [2, 0]),
    ("GPU-0a", [0]),  # a unique prefix names the GPU
    ("GPU-1b2", [2]),
    (f"1,{U0[:10]}", [1, 0]),  # indices and UUIDs mixed
    ("1abc", [1]),  # read as strtoul reads it: the leading digits
    ("+2", [2]),
])
def test_visible_subsets(value: "str | None", indices: List[int]) -> None:
    """Indices, UUIDs and UUID prefixes select the GPUs, in the list's order, with nothing to note."""
    v = shown(value)
    assert [g.index for g in v.gpus] == indices and v.notes == () and v.problem == ""


@pytest.mark.parametrize("value, indices, words", [
    ("0,x,1", [0], "entry 'x' is not a GPU index or UUID"),
    ("1,-1,0", [1], "entry '-1' is not a GPU index or UUID"),
    ("0,3,1", [0], "entry '3' is past the last GPU (3 found)"),
    ("GPU-1b,0", [], "entry 'GPU-1b' is ambiguous (the UUIDs of GPUs 1, 2 start so)"),
    ("2,GPU-ffff", [2], "entry 'GPU-ffff' matches no GPU's UUID"),
    ("0,,1", [0], "entry ''"),
])
def test_an_invalid_entry_ends_the_list(value: str, indices: List[int], words: str) -> None:
    """CUDA stops at the first entry that names no GPU: the GPUs before it stay visible, the rest is ignored (noted)."""
    v = shown(value)
    assert [g.index for g in v.gpus] == indices
    assert len(v.notes) == 1 and words in v.notes[0] and "ignored" in v.notes[0], v.notes
    assert ("no GPU is visible" in v.notes[0]) == (not indices)


@pytest.mark.parametrize("value", ["", "  ", "0,1,0", f"{U1},1"])
def test_empty_or_repeated_shows_no_gpu(value: str) -> None:
    """Set but empty: no GPU. A GPU named twice (even once by index, once by UUID): CUDA shows none."""
    v = shown(value)
    assert v.gpus == () and v.problem == "" and len(v.notes) == 1
    assert ("named twice" in v.notes[0]) == bool(value.strip())


def test_mig_and_unknown_uuids_are_problems() -> None:
    """MIG instances are refused by name; UUID entries with no UUID known cannot be resolved."""
    assert "MIG instances" in shown("MIG-4b5c-aaaa").problem
    assert "MIG instances" in shown("0,MIG-4b5c-aaaa").problem
    assert "UUIDs are unknown" in shown(U0, gpus(f"{H100}@9.0,{H100}@9.0")).problem
    assert shown(U0, gpus(f"{H100}@9.0,{H100}@9.0")).gpus == ()


def test_mixed_models_note_the_order_unless_pci_bus_id() -> None:
    """Indices count in CUDA's order: on mixed models without CUDA_DEVICE_ORDER=PCI_BUS_ID, a note says so."""
    mixed = gpus(f"Tesla T4@7.5@{U0},{H100}@9.0@{U1}")
    v = shown("1", mixed)
    assert [g.index for g in v.gpus] == [1] and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in v.notes[0]
    assert shown("1", mixed, CUDA_DEVICE_ORDER="PCI_BUS_ID").notes == ()
    assert shown(U1, mixed).notes == ()  # UUIDs need no order
    assert shown("1").notes == ()  # one model: FASTEST_FIRST ties break by PCI bus, the same order


def test_device_env_names_the_gpu_unambiguously() -> None:
    """A child is shown its GPU by UUID; without one, by index with CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    assert device_env(gpus()[1]) == {"CUDA_VISIBLE_DEVICES": U1}
    assert device_env(GPU(3, H100)) == {"CUDA_VISIBLE_DEVICES": "3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_gpu_choice_respects_cuda_visible_devices() -> None:
    """--gpu N is nvidia-smi's index, and must be one CUDA_VISIBLE_DEVICES leaves visible."""
    g = gpus()
    assert gpu_choice_problem(g, {}, 2) == ""
    assert gpu_choice_problem(g, {"CUDA_VISIBLE_DEVICES": f"{U2},0"}, 2) == ""
    assert "no such GPU (found 0, 1, 2)" in gpu_choice_problem(g, {}, 7)
    assert "GPU 1 is not visible" in gpu_choice_problem(g, {"CUDA_VISIBLE_DEVICES": "0,2"}, 1)
    assert "shows GPU(s) none" in gpu_choice_problem(g, {"CUDA_VISIBLE_DEVICES": ""}, 0)
    assert "MIG" in gpu_choice_problem(g, {"CUDA_VISIBLE_DEVICES": "MIG-x"}, 0)
    assert gpu_choice_problem([], {"CUDA_VISIBLE_DEVICES": "0"}, 5) == ""  # nothing detected: nothing to check


# --- the suite on every GPU, planted faults ------------------------------------------------------------------

@pytest.fixture(scope="module")
def env() -> Dict[str, str]:
    """Child environment: the repo importable so the planted bodies resolve."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("CUDA_VISIBLE_DEVICES", None)
    return e


def facts_for(spec_: str):  # type: ignore[no-untyped-def]
    """Facts of this machine with simulated GPUs."""
    from doctor.inventory import gather

    return gather(environ={"DOCTOR_GPUS": spec_, "PATH": os.environ.get("PATH", "")})


SUITE = [spec("cuda.shown", "shown"), spec("matmul.planted", "wrong_on", bad=U1), spec("cuda.abort", "crash_on", bad=U1),
         spec("sdpa.planted", "always_fails", group="h")]


@pytest.fixture(scope="module")
def bad_gpu_run(env, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Three simulated H100s; two probes fail on GPU 1 alone (wrong result, crash), one fails everywhere."""
    facts = facts_for(THREE)
    cache = DoctorCache(tmp_path_factory.mktemp("cache"))
    run = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {}), catalogue=SUITE, environ=env, cache=cache)
    return facts, cache, run


def statuses(run: AllGpuRun) -> Dict[int, Dict[str, str]]:
    """GPU index -> probe id -> status."""
    return {gr.gpu.index: {r.id: r.status for r in gr.run.results} for gr in run.runs}


def test_each_gpu_runs_the_suite_seeing_itself_alone(bad_gpu_run) -> None:  # type: ignore[no-untyped-def]
    """Every child was shown its own GPU by UUID; GPU 1 alone got the planted failures."""
    _, _, run = bad_gpu_run
    assert statuses(run) == {
        0: {"cuda.shown": "pass", "matmul.planted": "pass", "cuda.abort": "pass", "sdpa.planted": "error"},
        1: {"cuda.shown": "pass", "matmul.planted": "wrong-result", "cuda.abort": "crash", "sdpa.planted": "error"},
        2: {"cuda.shown": "pass", "matmul.planted": "pass", "cuda.abort": "pass", "sdpa.planted": "error"},
    }
    for gr in run.runs:
        assert gr.run.results[0].detail == f"CUDA_VISIBLE_DEVICES={gr.gpu.uuid} CUDA_DEVICE_ORDER=None"
    assert len({gr.run.fingerprint for gr in run.runs}) == 3  # one cache entry per GPU
    assert run.ran == 12 and run.cached == 0


def test_a_gpu_failing_what_the_others_pass_is_an_error_naming_it(bad_gpu_run) -> None:  # type: ignore[no-untyped-def]
    """One error finding for GPU 1 with its UUID and both probes; the probe failing everywhere is the environment's."""
    facts, _, run = bad_gpu_run
    findings = compare_gpus(run, facts)
    bad = [f for f in findings if f.id == BAD_GPU]
    assert len(bad) == 1 and bad[0].severity is Severity.ERROR and bad[0].subject == "1"
    assert U1 in bad[0].title and "GPU 1" in bad[0].title and "matmul.planted, cuda.abort" in bad[0].title
    ev = dict(bad[0].evidence)
    assert ev["GPU"] == f"index 1, {H100}, cc 9.0, UUID {U1}"
    assert ev["matmul.planted"].startswith("wrong-result here, pass on GPUs 0, 2")
    assert ev["cuda.abort"].startswith("crash here, pass on GPUs 0, 2: probe process killed by SIGABRT")
    assert "differs from the GPUs" not in bad[0].explanation  # same model: the GPU itself
    assert [a.command() for a in bad[0].fix if a.kind == "set-env"] == [f"export CUDA_VISIBLE_DEVICES={U0},{U2}"]
    env_fail = [f for f in findings if f.id == "probe.sdpa.planted"]
    assert len(env_fail) == 1 and env_fail[0].title.endswith("on every GPU it ran on")
    assert dict(env_fail[0].evidence)["GPUs"] == "GPU 0: error; GPU 1: error; GPU 2: error"
    assert not [f for f in findings if f.id == SLOW_GPU]
    summary = [f for f in findings if f.id == "probe.summary"]
    assert summary[0].title == "probes on 3 GPU(s): 1 of 4 passed on every GPU they ran on, 2 failed on some GPUs only, 1 failed on every GPU"
    assert exit_code_for(findings) == 2


def test_verdicts_are_cached_per_gpu(bad_gpu_run, env) -> None:  # type: ignore[no-untyped-def]
    """A second run reuses every GPU's own verdicts (GPU 1 keeps its failures); --refresh runs them again."""
    facts, cache, first = bad_gpu_run
    again = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {}), catalogue=SUITE, environ=env, cache=cache)
    assert again.ran == 0 and again.cached == 12 and statuses(again) == statuses(first)
    one = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {"CUDA_VISIBLE_DEVICES": "1"}), catalogue=SUITE[:1],
                       environ=env, cache=cache, refresh=True)
    assert one.ran == 1 and [gr.gpu.index for gr in one.runs] == [1]


def test_text_view_and_json_document(bad_gpu_run) -> None:  # type: ignore[no-untyped-def]
    """The table names every GPU with its UUID and verdict; the JSON has the per-GPU section with the probe fields."""
    from rich.console import Console

    from doctor import dispatch
    from doctor.report.json import all_gpus_document, dumps
    from doctor.report.probe import render_all_gpus

    facts, _, run = bad_gpu_run
    findings = compare_gpus(run, facts)
    con = Console(record=True, width=200, color_system=None)
    render_all_gpus(con, run, findings, verbose=True)
    text = con.export_text()
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln[:2] in ("0 ", "1 ", "2 ")}
    assert U1 in rows["1"] and "bad GPU" in rows["1"] and "cuda.shown 1 ms" in rows["1"]
    assert "env failures" in rows["0"] and "cuda.abort 3 ms" in rows["0"]
    assert "fails 2 probe(s) that pass on other GPUs" in text and f"export CUDA_VISIBLE_DEVICES={U0},{U2}" in text
    assert "planted: max error 0.5 on this GPU" in text  # -v: the failed verdicts' details per GPU
    assert "3 GPU(s): ran 12, reused 0 cached verdicts" in text
    doc = json.loads(dumps(all_gpus_document(run, [dispatch.table(gr.run.results) for gr in run.runs], findings, 2)))
    assert doc["command"] == "probe all-gpus" and doc["schema_version"] == 2 and doc["exit_code"] == 2
    assert doc["summary"]["error"] >= 1 and doc["notes"] == []
    assert [(g["index"], g["uuid"], g["name"], g["compute_capability"], g["memory_mib"]) for g in doc["gpus"]] == [
        (0, U0, H100, "9.0", 81559), (1, U1, H100, "9.0", 81559), (2, U2, H100, "9.0", None)]
    single = {"fingerprint", "wall_s", "ran", "cached", "results", "dispatch"}
    assert all(single <= set(g) for g in doc["gpus"])
    assert [r["status"] for r in doc["gpus"][1]["results"]] == ["pass", "wrong-result", "crash", "error"]
    assert {f["subject"] for f in doc["findings"] if f["id"] == BAD_GPU} == {"1"}


def test_a_slow_gpu_is_a_warning_naming_it(env, tmp_path: Path) -> None:
    """A probe ten times slower on GPU 2 than on the others (same model): a warning naming GPU 2, no error."""
    facts = facts_for(THREE)
    suite = [spec("sdpa.sleepy", "slow_on", on=U2, slow_s=0.12, fast_s=0.012)]
    run = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {}), catalogue=suite, environ=env,
                       cache=DoctorCache(tmp_path))
    findings = compare_gpus(run, facts)
    slow = [f for f in findings if f.id == SLOW_GPU]
    assert len(slow) == 1 and slow[0].subject == "2" and slow[0].severity is Severity.WARN
    assert U2 in slow[0].title and "worst sdpa.sleepy" in slow[0].title, slow[0].title
    assert "median" in dict(slow[0].evidence)["sdpa.sleepy"] and "on GPUs 0, 1" in dict(slow[0].evidence)["sdpa.sleepy"]
    assert not [f for f in findings if f.id == BAD_GPU] and exit_code_for(findings) == 1


def test_slowness_is_compared_within_a_model_and_above_noise(env, tmp_path: Path) -> None:
    """A T4 slower than two H100s is its model, not a fault; a difference under the floor is noise."""
    facts = facts_for(f"Tesla T4@7.5@{U0},{H100}@9.0@{U1},{H100}@9.0@{U2}")
    suite = [spec("sdpa.sleepy", "slow_on", on=U0, slow_s=0.2, fast_s=0.05)]  # 50 ms: a loaded box's jitter stays << 1.5x
    run = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {}), catalogue=suite, environ=env, cache=DoctorCache(tmp_path))
    findings = compare_gpus(run, facts)
    assert not [f for f in findings if f.id in (SLOW_GPU, BAD_GPU)] and exit_code_for(findings) == 0
    # recorded timings, no children: 0.3 ms vs 0.1 ms is 3x but under the 0.5 ms floor; 1.0 vs 0.4 ms is over both
    base = run.runs[1]
    for t_slow, flagged in ((0.3, False), (1.0, True)):
        runs = tuple(base._replace(gpu=g, run=base.run._replace(results=(base.run.results[0]._replace(time_ms=t),)))
                     for g, t in zip(gpus(THREE), (0.4 if flagged else 0.1, 0.4 if flagged else 0.1, t_slow)))
        got = [f.subject for f in compare_gpus(AllGpuRun(runs, (), 0.0), facts) if f.id == SLOW_GPU]
        assert got == (["2"] if flagged else []), (t_slow, got)


def test_every_gpu_failing_is_the_environment_not_a_bad_gpu(env, tmp_path: Path) -> None:
    """The same probe failing on all GPUs: `doctor probe`'s finding for it, no GPU pointed at."""
    facts = facts_for(THREE)
    suite = [spec("matmul.broken", "always_fails"), spec("cuda.shown", "shown")]
    run = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {}), catalogue=suite, environ=env, cache=DoctorCache(tmp_path))
    findings = compare_gpus(run, facts)
    assert not [f for f in findings if f.id in (BAD_GPU, SLOW_GPU)]
    env_fail = [f for f in findings if f.id == "probe.matmul.broken"]
    assert len(env_fail) == 1 and env_fail[0].severity is Severity.ERROR and "No operator found" in dict(env_fail[0].evidence)["detail"]
    assert exit_code_for(findings) == 2


def test_gpus_without_uuids_are_shown_by_index_in_pci_order(env, tmp_path: Path) -> None:
    """No UUID known: the child gets the nvidia-smi index with CUDA_DEVICE_ORDER=PCI_BUS_ID; the bad GPU is still named."""
    facts = facts_for(f"{H100}@9.0,{H100}@9.0")
    suite = [spec("cuda.shown", "shown"), spec("matmul.planted", "wrong_on", bad="1")]
    run = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {"CUDA_VISIBLE_DEVICES": "1,0"}), catalogue=suite,
                       environ=env, cache=DoctorCache(tmp_path))
    assert [gr.gpu.index for gr in run.runs] == [1, 0]
    assert [gr.run.results[0].detail for gr in run.runs] == [
        "CUDA_VISIBLE_DEVICES=1 CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=0 CUDA_DEVICE_ORDER=PCI_BUS_ID"]
    bad = [f for f in compare_gpus(run, facts) if f.id == BAD_GPU]
    assert len(bad) == 1 and "GPU 1 (UUID unknown)" in bad[0].title
    assert [a.command() for a in bad[0].fix if a.kind == "set-env"] == ["export CUDA_VISIBLE_DEVICES=0"]


def test_a_model_that_differs_is_said_to_maybe_be_the_cause(env, tmp_path: Path) -> None:
    """A probe failing on the one T4 and passing on the H100s: still an error naming the T4, saying its model differs."""
    facts = facts_for(f"{H100}@9.0@{U0},Tesla T4@7.5@{U1}")
    run = run_all_gpus(facts, visible_gpus(facts.hardware.gpus, {}), catalogue=[spec("matmul.planted", "wrong_on", bad=U1)],
                       environ=env, cache=DoctorCache(tmp_path))
    bad = [f for f in compare_gpus(run, facts) if f.id == BAD_GPU]
    assert len(bad) == 1 and bad[0].subject == "1" and "model (Tesla T4, cc 7.5) differs" in bad[0].explanation


def recorded(verdicts: Dict[int, Dict[str, str]]) -> AllGpuRun:
    """An AllGpuRun from recorded statuses (GPU index -> probe id -> status) over the three simulated H100s."""
    from doctor.probes.all_gpus import GpuRun
    from doctor.probes.session import ProbeRun
    from doctor.verdicts import ProbeResult

    g = {x.index: x for x in gpus()}
    return AllGpuRun(tuple(GpuRun(g[i], ProbeRun(tuple(ProbeResult(pid, "", st, time_ms=1.0) for pid, st in v.items()),
                                                 f"fp{i}", (), (), 0.0)) for i, v in verdicts.items()), (), 0.0)


def test_recorded_verdicts_skips_timeouts_and_many_failures() -> None:
    """Skipped GPUs are left out of the comparison; a timeout points at its GPU; a probe that ran on one GPU only and
    failed there is the environment's; a long list of failed probes is cut in the title (all are in the evidence)."""
    many = {f"matmul.p{k}": "timeout" for k in range(8)}
    run = recorded({0: {"bnb.x": "skipped", "sdpa.y": "skipped", **{k: "pass" for k in many}},
                    1: {"bnb.x": "crash", "sdpa.y": "error", **many},
                    2: {"bnb.x": "pass", "sdpa.y": "skipped", **{k: "pass" for k in many}}})
    findings = compare_gpus(run, facts_for(THREE))
    bad = [f for f in findings if f.id == BAD_GPU]
    assert len(bad) == 1 and bad[0].subject == "1"
    assert bad[0].title.endswith("bnb.x, matmul.p0, matmul.p1, matmul.p2, matmul.p3, matmul.p4, ... (+3 more)"), bad[0].title
    ev = dict(bad[0].evidence)
    assert ev["bnb.x"] == "crash here, pass on GPU 2" and ev["matmul.p7"] == "timeout here, pass on GPUs 0, 2"
    assert "sdpa.y" not in ev and [f.id for f in findings if f.id == "probe.sdpa.y"] == ["probe.sdpa.y"]
    assert dict([f for f in findings if f.id == "probe.sdpa.y"][0].evidence)["GPUs"] == "GPU 1: error"
    assert "fail on more GPUs than they pass on" not in bad[0].explanation
    # failing on two GPUs, passing on one: both are named, and the finding says the majority fails
    two = compare_gpus(recorded({0: {"matmul.q": "error"}, 1: {"matmul.q": "error"}, 2: {"matmul.q": "pass"}}), facts_for(THREE))
    named = [f for f in two if f.id == BAD_GPU]
    assert [f.subject for f in named] == ["0", "1"] and all("fail on more GPUs than they pass on" in f.explanation for f in named)


# --- the command ----------------------------------------------------------------------------------------------

def probe(*args: str, **env: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """`doctor probe ARGS` with three simulated GPUs (override with DOCTOR_GPUS=...) and a private cache."""
    e = {"DOCTOR_GPUS": THREE, "NO_COLOR": "1", "COLUMNS": "200"}
    e.update(env)
    return run_doctor("probe", *args, env=e)


def test_cli_json_shape_with_a_subset(tmp_path: Path) -> None:
    """--json under CUDA_VISIBLE_DEVICES=UUID-prefix,index,junk: the two GPUs it shows, in its order, the note; exit 0."""
    proc = probe("--all-gpus", "--json", CUDA_VISIBLE_DEVICES="GPU-1b2,0,junk,1", DOCTOR_CACHE_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["command"] == "probe all-gpus" and doc["exit_code"] == 0 and doc["status"] == "healthy"
    assert [(g["index"], g["uuid"]) for g in doc["gpus"]] == [(2, U2), (0, U0)]
    assert "entry 'junk' is not a GPU index or UUID" in doc["notes"][0]
    assert all(r["status"] == "skipped" for g in doc["gpus"] for r in g["results"])  # simulated GPUs: no real probe runs
    assert [f["id"] for f in doc["findings"]] == ["probe.summary"]


@pytest.mark.parametrize("env, words", [
    ({"CUDA_VISIBLE_DEVICES": ""}, "no GPU visible: CUDA_VISIBLE_DEVICES='': CUDA shows no GPU"),
    ({"CUDA_VISIBLE_DEVICES": "1,1"}, "named twice"),
    ({"DOCTOR_GPUS": "none"}, "no GPU visible: no NVIDIA GPU found"),
])
def test_cli_no_gpu_visible_is_one_line_exit_0(env: Dict[str, str], words: str, tmp_path: Path) -> None:
    """As `doctor probe` without a GPU (exit 0): one clear line; --json says it in notes with no GPUs."""
    proc = probe("--all-gpus", DOCTOR_CACHE_DIR=str(tmp_path), **env)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines() == [proc.stdout.strip()] and words in proc.stdout
    doc = json.loads(probe("--all-gpus", "--json", DOCTOR_CACHE_DIR=str(tmp_path), **env).stdout)
    assert doc["gpus"] == [] and doc["exit_code"] == 0 and words in doc["notes"][0]


@pytest.mark.parametrize("args, env, words", [
    (["--all-gpus", "--gpu", "0"], {}, "--all-gpus does not combine with --gpu"),
    (["--all-gpus", "--list"], {}, "--all-gpus does not combine with --list"),
    (["--all-gpus", "--distributed"], {}, "--distributed does not combine with --all-gpus"),
    (["--all-gpus", "--nproc", "2"], {}, "--nproc needs --distributed"),
    (["--all-gpus", "--only", "nosuch"], {}, "no probe matches nosuch"),
    (["--all-gpus"], {"CUDA_VISIBLE_DEVICES": "MIG-4b5c"}, "names MIG instances"),
    (["--all-gpus"], {"CUDA_VISIBLE_DEVICES": U0, "DOCTOR_GPUS": f"{H100}@9.0"}, "UUIDs are unknown"),
    (["--all-gpus"], {"DOCTOR_GPUS": f"{H100}@9.0@GPU-zz"}, "has UUID 'GPU-zz'"),
    (["--gpu", "1"], {"CUDA_VISIBLE_DEVICES": "0,2"}, "--gpu 1: GPU 1 is not visible"),
    (["--gpu", "5"], {}, "--gpu 5: no such GPU (found 0, 1, 2)"),
])
def test_cli_bad_input_is_exit_3_in_one_line(args: List[str], env: Dict[str, str], words: str) -> None:
    """Conflicting options and what cannot be probed: exit 3, one line on stderr, nothing on stdout."""
    proc = probe(*args, **env)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_gpu_n_inside_cuda_visible_devices_runs(tmp_path: Path) -> None:
    """--gpu 2 under CUDA_VISIBLE_DEVICES=2,0 is allowed (it is visible); the run's fingerprint is GPU 2's own."""
    proc = probe("--gpu", "2", "--json", CUDA_VISIBLE_DEVICES="2,0", DOCTOR_CACHE_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    other = probe("--gpu", "0", "--json", DOCTOR_CACHE_DIR=str(tmp_path))
    assert json.loads(proc.stdout)["fingerprint"] != json.loads(other.stdout)["fingerprint"]


def test_cli_help_documents_gpu_and_all_gpus() -> None:
    """--help says what --gpu N counts and what --all-gpus does, and the exit codes of --all-gpus."""
    text = " ".join(run_doctor("probe", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "by its nvidia-smi index" in text and "must be one that leaves visible" in text
    assert "--all-gpus" in text and "2 when a GPU fails probes that pass on the others" in text


def test_cli_end_to_end_with_planted_probes(tmp_path: Path) -> None:
    """The command as a user runs it, the catalogue swapped for planted probes (the real ones need a GPU): the
    table, the error naming GPU 1 and its UUID, exit 2; progress lines on stderr off a terminal."""
    code = (
        "import sys\n"
        "import doctor.probes.catalogue as c\n"
        "from doctor.probes.spec import ProbeSpec\n"
        f"c.CATALOGUE = (ProbeSpec('cuda.shown', 't', '{P}:shown', needs_torch=False, needs_cuda=False, group='g'),\n"
        f"               ProbeSpec('matmul.planted', 't', '{P}:wrong_on', needs_torch=False, needs_cuda=False, group='g',\n"
        f"                         params={{'bad': '{U1}'}}))\n"
        "from doctor.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    e = {**os.environ, "DOCTOR_GPUS": THREE, "NO_COLOR": "1", "COLUMNS": "200", "DOCTOR_CACHE_DIR": str(tmp_path),
         "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    e.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-c", code, "probe", "--all-gpus"], capture_output=True, text=True,
                          timeout=120, env=e, cwd=str(REPO))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"GPU 1 ({U1}) fails 1 probe(s) that pass on other GPUs: matmul.planted" in proc.stdout
    assert "probe matmul.planted on GPU 1: wrong-result" in proc.stderr and "probe cuda.shown on GPU 2: pass" in proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(("0 ", "1 ", "2 "))]
    assert [r.split()[1] for r in rows] == ["ok", "bad", "ok"] and U1 in rows[1]
