"""`doctor pin`: known-good pins from real installed distributions (small wheels installed by pip) and the matrix.

Each test builds a world on disk (stand-in torch with a real torch/version.py, xformers with a real
cpp_lib.json, real dist-infos) and asks for its pins; the CLI tests run `python -m doctor pin` as a user
would. The pins file is also handed to the real pip, which must accept every line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from packaging.requirements import Requirement

from doctor.compat_matrix.loader import load_matrix
from doctor.errors import DoctorError
from doctor.resolve.pin_files import constraint_lines, pins_document
from doctor.resolve.pins import PinSet, known_good_pins
from tests.conftest import Env, run_doctor
from tests.wheels import build_wheel


def cpp_lib(torch: str, cuda: int) -> str:
    """xformers/cpp_lib.json as real wheels ship it."""
    return json.dumps({"version": {"cuda": cuda, "hip": None, "torch": torch, "python": "3.11.7"},
                       "env": {"TORCH_CUDA_ARCH_LIST": "8.0 9.0"}})


def pins_of(env: Env, **kw) -> PinSet:  # type: ignore[no-untyped-def]
    """The pins for the world in `env` (its site folder alone)."""
    return known_good_pins(env.facts(), load_matrix(), **kw)


def by_name(ps: PinSet) -> Dict[str, str]:
    """name -> specifier (first pin of each)."""
    out: Dict[str, str] = {}
    for p in ps.pins:
        out.setdefault(p.name, p.specifier)
    return out


def test_healthy_cuda_stack_is_kept_exactly(env: Env) -> None:
    """torch 2.4.1+cu121 with its triton, its xformers build, torchvision, bitsandbytes: every one kept with ===."""
    env.torch("2.4.1+cu121", "12.1", ["triton==3.0.0"]).wheel("triton", "3.0.0")
    env.wheel("xformers", "0.0.28.post1", ["torch==2.4.1"], {"xformers/cpp_lib.json": cpp_lib("2.4.1+cu121", 1201)})
    env.wheel("torchvision", "0.19.1+cu121", ["torch==2.4.1"]).wheel("bitsandbytes", "0.45.5", ["torch<3,>=2.0"])
    ps = pins_of(env)
    assert by_name(ps) == {"torch": "===2.4.1+cu121", "triton": "===3.0.0", "xformers": "===0.0.28.post1",
                           "bitsandbytes": "===0.45.5", "torchvision": "===0.19.1+cu121"}
    assert all(p.kept and p.source == "installed" for p in ps.pins)
    assert ps.torch == "2.4.1+cu121" and ps.cuda == "12.1" and not ps.unfit
    torch = ps.pin_for("torch")
    assert torch is not None and "no other build" in torch.reason
    assert torch.index_url == "https://download.pytorch.org/whl/cu121"


def test_plain_equality_would_admit_another_build() -> None:
    """Why ===: `torch==2.4.1` admits 2.4.1+cpu in place of 2.4.1+cu121; `torch===2.4.1+cu121` does not."""
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet("==2.4.1").contains("2.4.1+cpu")
    assert not SpecifierSet("===2.4.1+cu121").contains("2.4.1+cpu")
    assert SpecifierSet("===2.4.1+cu121").contains("2.4.1+cu121")


def test_xformers_built_for_another_torch_is_replaced_by_the_one_built_for_this(env: Env) -> None:
    """An xformers whose extension was compiled for torch 2.4.0 is not kept on 2.4.1: the pin names 0.0.28.post1."""
    env.torch("2.4.1+cu121", "12.1")
    env.wheel("xformers", "0.0.27.post2", ["torch==2.4.0"], {"xformers/cpp_lib.json": cpp_lib("2.4.0+cu121", 1201)})
    ps = pins_of(env)
    xf = ps.pin_for("xformers")
    assert xf is not None and xf.specifier == "==0.0.28.post1" and not xf.kept
    assert "built for torch 2.4.1" in xf.reason and "0.0.27.post2 is not" in xf.reason
    assert xf.source.startswith("matrix xformers_torch")
    assert xf.index_url is None  # CUDA 12.1 is torch 2.4's default: the default index has it


def test_xformers_for_a_non_default_cuda_comes_from_that_familys_index(env: Env) -> None:
    """torch 2.4.1+cu124: the xformers built for it lives on the cu124 PyTorch index."""
    env.torch("2.4.1+cu124", "12.4")
    xf = pins_of(env, only=["xformers"]).pin_for("xformers")
    assert xf is not None and xf.index_url == "https://download.pytorch.org/whl/cu124"


def test_cpu_torch_with_xformers_is_unfit_with_alternatives(env: Env) -> None:
    """No xformers runs on a CPU torch: said so, with SDPA and a CUDA torch as the alternatives; torch still kept."""
    env.torch("2.13.0+cpu", None).wheel("xformers", "0.0.35", ["torch>=2.10"])
    ps = pins_of(env)
    assert by_name(ps)["torch"] == "===2.13.0+cpu"
    assert "xformers" not in by_name(ps) and "triton" not in by_name(ps)  # CPU wheels carry no triton
    (u,) = [u for u in ps.unfit if u.name == "xformers"]
    assert "CPU build" in u.why and any("SDPA" in a for a in u.alternatives)


def test_for_limits_the_pins_and_keeps_torchs_own(env: Env) -> None:
    """--for bitsandbytes: its pin and torch's, nothing else; an unknown name not installed is a note, not a pin."""
    env.torch("2.4.1+cu121", "12.1").wheel("triton", "3.0.0")
    ps = pins_of(env, only=["bitsandbytes", "some-package"])
    assert set(by_name(ps)) == {"torch", "bitsandbytes"}
    assert by_name(ps)["bitsandbytes"] == "<=0.50.2,>=0.50.0"
    assert any("some-package is not installed" in n for n in ps.notes)
    assert ps.only == ("bitsandbytes", "some-package")


def test_for_xformers_when_no_release_fits_this_torch(env: Env) -> None:
    """torch 2.3.1: the known-good xformers (0.0.26.post1) requires torch==2.3.0: no fit, alternatives given."""
    env.torch("2.3.1+cu121", "12.1")
    ps = pins_of(env, only=["xformers"])
    (u,) = ps.unfit
    assert u.name == "xformers" and "requires torch==2.3.0" in u.why
    assert any("--no-deps" in a for a in u.alternatives) and any(a.startswith("torch ") for a in u.alternatives)
    lines = constraint_lines(ps)
    assert "# xformers: no release fits: xformers 0.0.26.post1 requires torch==2.3.0, not torch 2.3.1" in lines


def test_unsloth_and_its_zoo_move_in_lockstep(env: Env) -> None:
    """unsloth 2026.10.9 needs unsloth_zoo>=2026.10.10: an older zoo is pinned to that floor, unsloth kept."""
    env.torch("2.8.0+cu128", "12.8").wheel("unsloth", "2026.10.9", ["unsloth_zoo>=2026.10.10", "torch<2.15.0,>=2.4.0"])
    env.wheel("unsloth_zoo", "2026.10.1")
    ps = pins_of(env)
    names = by_name(ps)
    assert names["unsloth"] == "===2026.10.9" and names["unsloth-zoo"] == "==2026.10.10"
    zoo = ps.pin_for("unsloth-zoo")
    assert zoo is not None and "floor" in zoo.reason and "2026.10.1 does not meet" in zoo.reason
    # the ranges the matrix records for that unsloth release come along, with their source
    tr = ps.pin_for("transformers")
    assert tr is not None and "!=4.53.0" in tr.specifier and tr.source.startswith("matrix pairs")


def test_unsloth_with_a_matching_zoo_keeps_both(env: Env) -> None:
    env.torch("2.8.0+cu128", "12.8").wheel("unsloth", "2026.10.9", ["unsloth_zoo>=2026.10.10"])
    env.wheel("unsloth_zoo", "2026.10.10")
    names = by_name(pins_of(env))
    assert names["unsloth"] == "===2026.10.9" and names["unsloth-zoo"] == "===2026.10.10"


def test_installed_package_that_requires_another_torch_is_not_kept(env: Env) -> None:
    """torchvision built for torch 2.4.0 next to torch 2.4.1: not kept; the fix is the one torch's pin picks."""
    env.torch("2.4.1+cu121", "12.1").wheel("torchvision", "0.19.0", ["torch==2.4.0"])
    ps = pins_of(env)
    assert "torchvision" not in by_name(ps)
    (u,) = [u for u in ps.unfit if u.name == "torchvision"]
    assert "requires torch==2.4.0" in u.why and "--index-url https://download.pytorch.org/whl/cu121" in u.alternatives[0]


def test_no_torch_installed(env: Env) -> None:
    env.wheel("transformers", "4.46.0")
    ps = pins_of(env)
    assert ps.pins == () and ps.torch is None
    assert any("no torch is installed" in n for n in ps.notes)


def test_another_torch_build_on_purpose(env: Env) -> None:
    """--torch 2.4.1 --cuda 12.4: that build from its CUDA family's index, with its triton and xformers."""
    env.torch("2.13.0+cpu", None)
    ps = pins_of(env, torch="2.4.1", cuda="12.4")
    t = ps.pin_for("torch")
    assert t is not None and t.specifier == "===2.4.1+cu124" and t.source == "requested" and not t.kept
    assert t.index_url == ps.index_url == "https://download.pytorch.org/whl/cu124"
    assert by_name(ps)["triton"] == "==3.0.0" and by_name(ps)["xformers"] == "==0.0.28.post1"
    # --torch alone: the plain wheel of the default index (no local label, nothing but that exact string)
    plain = pins_of(env, torch="2.10.0")
    assert by_name(plain)["torch"] == "===2.10.0" and plain.cuda == "12.8" and plain.index_url is None
    # --cuda alone: the installed release, built for that CUDA
    assert by_name(pins_of(env, cuda="cu130"))["torch"] == "===2.13.0+cu130"
    assert by_name(pins_of(env, torch="2.13.0", cuda="cpu"))["torch"] == "===2.13.0+cpu"


@pytest.mark.parametrize("kw, message", [
    ({"torch": "abc"}, "not a torch version"),
    ({"torch": "2.4"}, "give the full release"),
    ({"torch": "2.4.1", "cuda": "12.9"}, "has no cu129 build"),
    ({"torch": "2.4.1", "cuda": "twelve"}, "not a CUDA version"),
    ({"torch": "2.4.1+cu121", "cuda": "12.4"}, "disagree"),
    ({"torch": "2.4.1+cu121.post3"}, "not a torch version"),
    ({"only": ["not a name!"]}, "not a package name"),
])
def test_bad_input_is_one_line(env: Env, kw, message: str) -> None:  # type: ignore[no-untyped-def]
    env.torch("2.4.1+cu121", "12.1")
    with pytest.raises(DoctorError, match=message):
        pins_of(env, **kw)


def test_cuda_alone_without_a_torch_is_bad_input(env: Env) -> None:
    env.wheel("numpy", "2.0.0")
    with pytest.raises(DoctorError, match="--cuda needs --torch"):
        pins_of(env, cuda="12.8")


def test_real_pip_accepts_every_constraint_line(env: Env, tmp_path: Path) -> None:
    """The constraints file (comments, ===, ranges) is read by pip itself: a dry run with it resolves nothing wrong."""
    env.torch("2.4.1+cu121", "12.1").wheel("triton", "3.0.0").wheel("unsloth", "2026.10.9", ["unsloth_zoo>=2026.10.10"])
    ps = pins_of(env)
    lines = constraint_lines(ps, ["header"])
    for line in lines:
        code = line.split("  #", 1)[0].strip()
        if code and not code.startswith("#"):
            Requirement(code)  # a line packaging (and so pip) parses
    cfile = tmp_path / "c.txt"
    cfile.write_text("\n".join(lines) + "\n")
    links = tmp_path / "links"
    build_wheel(links, "dummy", "1.0")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--isolated",
                          "--find-links", str(links), "-c", str(cfile), "dummy"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Would install dummy-1.0" in res.stdout


def test_json_document(env: Env) -> None:
    env.torch("2.4.1+cu121", "12.1")
    doc = pins_document(pins_of(env))
    assert doc["schema_version"] == 1 and doc["torch"] == "2.4.1+cu121"
    assert doc["pins"][0] == {"name": "torch", "specifier": "===2.4.1+cu121", "requirement": "torch===2.4.1+cu121",
                              "reason": doc["pins"][0]["reason"], "source": "installed",
                              "index_url": "https://download.pytorch.org/whl/cu121", "kept": True}
    json.dumps(doc)


# -- the command ------------------------------------------------------------------------------------------


def _venv(tmp_path: Path, env: Env) -> str:
    """A python whose sys.path holds env's site (PYTHONPATH would leak into pip; a .pth in a venv does not)."""
    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python*/site-packages"))
    (site / "world.pth").write_text(str(env.site) + "\n")
    return str(root / "bin" / "python")


def test_cli_writes_constraints_file_atomically(env: Env, tmp_path: Path) -> None:
    env.torch("2.4.1+cu121", "12.1").wheel("triton", "3.0.0")
    py = _venv(tmp_path, env)
    out = tmp_path / "pins.txt"
    res = run_doctor("pin", "--python", py, "-o", str(out))
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "torch===2.4.1+cu121  # the installed torch build" in text and "triton===3.0.0" in text
    assert f"wrote 4 pins to {out}" in res.stdout, res.stdout[-400:]  # torch, triton, xformers, bitsandbytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pins.txt.")]  # no temp left behind
    js = run_doctor("pin", "--python", py, "--format", "json")
    assert js.returncode == 0 and json.loads(js.stdout)["pins"][0]["requirement"] == "torch===2.4.1+cu121"
    req = run_doctor("pin", "--python", py, "--format", "requirements")
    assert req.stdout.splitlines()[1].startswith("torch===2.4.1+cu121  #")


def test_cli_exit_codes(env: Env, tmp_path: Path) -> None:
    """1 when an asked-for package has no fitting release; 3 (one line, nothing written) for bad input."""
    env.torch("2.13.0+cpu", None)
    py = _venv(tmp_path, env)
    unfit = run_doctor("pin", "--python", py, "--for", "xformers")
    assert unfit.returncode == 1 and "# xformers: no release fits" in unfit.stdout
    bad: List[List[str]] = [["--torch", "abc"], ["--cuda", "12.99"], ["--shell"], ["--status", "--for", "x"],
                            ["--hook", "-o", "f"], ["-o", str(tmp_path / "missing" / "f.txt")]]
    for args in bad:
        res = run_doctor("pin", "--python", py, *args)
        assert res.returncode == 3, (args, res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("doctor: error:"), res.stderr
    assert not (tmp_path / "missing").exists()
