"""Knowledge lives once, in compat_matrix: GPU floors come from gpu_features.toml, the training stack from one list.

The floors are proven by editing a copy of the data (DOCTOR_MATRIX_DIR) and watching the rules follow it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from doctor.compat_matrix import files, loader
from doctor.compat_matrix.stack import TRAINING_STACK
from tests.conftest import Env, ids

T4 = "Tesla T4@7.5@15360"
DRIVER = "580.159.04"


@pytest.fixture
def edited_floors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A data copy where FA2 works from cc 7.5 and LLM.int8() needs cc 8.0 (the opposite of the real floors)."""
    data = tmp_path / "data"
    shutil.copytree(files.DEFAULT_DIR, data)
    p = data / "gpu_features.toml"
    text = p.read_text(encoding="utf-8")
    for name, old, new in (("flash_attn_2", 'min_cc = "8.0"', 'min_cc = "7.5"'), ("bitsandbytes_int8", 'min_cc = "7.5"', 'min_cc = "8.0"')):
        head, sep, rest = text.partition(f'name = "{name}"\n')
        assert sep and old in rest.split("[[feature]]", 1)[0], name
        text = head + sep + rest.replace(old, new, 1)
    p.write_text(text, encoding="utf-8")
    monkeypatch.setenv(loader.ENV_VAR, str(data))
    loader.clear_cache()
    yield data
    loader.clear_cache()


def _t4_world(env: Env) -> Env:
    """torch 2.8 cu128 with flash-attn 2 and bitsandbytes, on a T4 (cc 7.5)."""
    return env.torch("2.8.0+cu128", "12.8").wheel("flash-attn", "2.8.3").wheel("bitsandbytes", "0.47.0")


def test_real_floors_on_a_t4(env: Env) -> None:
    """The shipped data: FA2 needs cc 8.0 (error on a T4); LLM.int8() needs 7.5 (a T4 has it)."""
    loader.clear_cache()
    found = ids(_t4_world(env).check(gpus=T4, driver=DRIVER))
    assert "flash-attn.arch" in found and "bitsandbytes.no-int8" not in found


def test_rules_follow_the_floors_in_the_data(env: Env, edited_floors: Path) -> None:
    """With the floors swapped in the data, the rules swap their verdicts: nothing is hard-coded."""
    found = ids(_t4_world(env).check(gpus=T4, driver=DRIVER))
    assert "flash-attn.arch" not in found and "bitsandbytes.no-int8" in found


def test_one_training_stack_list() -> None:
    """The requirements rule, the report's facts and the probe fingerprint read the same list (the fingerprint adds extras)."""
    from doctor.probes.fingerprint import RELEVANT

    assert RELEVANT[:len(TRAINING_STACK)] == TRAINING_STACK and set(RELEVANT) - set(TRAINING_STACK) == {"pytorch-triton", "numpy"}
    assert len(set(TRAINING_STACK)) == len(TRAINING_STACK)
