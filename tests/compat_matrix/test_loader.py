"""The loader: caching, the data directory override, and one-line errors for every kind of bad data."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from doctor.compat_matrix import loader
from doctor.compat_matrix import compiled, files
from doctor.compat_matrix.files import FILES
from doctor.compat_matrix.loader import load_matrix

tomllib = files.toml()
from doctor.errors import DoctorError


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first occurrence of `old` (which must be there) in a data file."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def row_index(path: Path, table: str, key: str, value: str) -> int:
    """0-based index of the row of [[table]] whose `key` is `value`."""
    rows = tomllib.loads(path.read_text(encoding="utf-8"))[table]
    return next(i for i, r in enumerate(rows) if r.get(key) == value)


def load_error(data: Path) -> str:
    """The one-line message load_matrix raises for this directory."""
    with pytest.raises(DoctorError) as info:
        load_matrix(data)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith("matrix data error: "), msg
    return msg


# -- the good path -------------------------------------------------------------------------------


def test_all_files_are_shipped() -> None:
    assert sorted(p.name for p in files.DEFAULT_DIR.glob("*.toml")) == sorted(FILES)


def test_every_file_has_meta_and_sources() -> None:
    for name in FILES:
        doc = tomllib.loads((files.DEFAULT_DIR / name).read_text(encoding="utf-8"))
        assert doc["meta"]["schema"] == 1 and doc["meta"]["data_version"] == "2026.11.22", name
        assert doc["meta"]["description"].strip() and doc["sources"], name
        assert list(doc)[:2] == ["meta", "sources"], name  # each file starts with [meta]


def test_default_load_is_cached() -> None:
    assert load_matrix() is load_matrix()
    loader.clear_cache()
    assert load_matrix() == load_matrix()


def test_explicit_dir_is_not_cached(data_copy: Path) -> None:
    first = load_matrix(data_copy)
    assert first == load_matrix() and first is not load_matrix(data_copy)
    edit(data_copy / "gpu_names.toml", 'pattern = "K80"', 'pattern = "K80 "')
    assert load_matrix(data_copy).gpu_names[-2].pattern == "K80 "


def test_env_var_overrides_and_is_cached(data_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FILES:
        edit(data_copy / name, 'data_version = "2026.11.22"', 'data_version = "2030.01.02"')
    monkeypatch.setenv(loader.ENV_VAR, str(data_copy))
    m = load_matrix()
    assert m.data_version == "2030.01.02" and load_matrix() is m
    monkeypatch.setenv(loader.ENV_VAR, "")  # empty = unset
    assert load_matrix().data_version == "2026.11.22"


def test_env_var_to_missing_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loader.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DoctorError, match=r"^matrix data error: .*nope: not a directory \(from \$DOCTOR_MATRIX_DIR\)$"):
        load_matrix()


def test_str_path_and_relative_dir(data_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data_copy.parent)
    assert load_matrix("data") == load_matrix(str(data_copy))


# -- malformed data: one line naming the file and the key ------------------------------------------


def test_toml_syntax_error(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'torch = "==2.0.1"', 'torch = "==2.0.1')
    msg = load_error(data_copy)
    assert re.match(r"^matrix data error: xformers_torch\.toml: invalid TOML: .*line \d+", msg), msg


def test_missing_file(data_copy: Path) -> None:
    (data_copy / "torch_triton.toml").unlink()
    assert load_error(data_copy) == "matrix data error: torch_triton.toml: missing"


def test_unexpected_file(data_copy: Path) -> None:
    shutil.copy(data_copy / "notes.toml", data_copy / "notes2.toml")
    assert load_error(data_copy).startswith("matrix data error: notes2.toml: unexpected file")


def test_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert load_error(f) == f"matrix data error: {f}: not a directory"


def test_file_is_a_directory(data_copy: Path) -> None:
    (data_copy / "notes.toml").unlink()
    (data_copy / "notes.toml").mkdir()
    assert load_error(data_copy).startswith("matrix data error: notes.toml: unreadable")


def test_not_utf8(data_copy: Path) -> None:
    p = data_copy / "pairs.toml"
    p.write_bytes(p.read_bytes() + b'\n# \xff\xfe\n')
    assert load_error(data_copy).startswith("matrix data error: pairs.toml: not UTF-8")


def test_wrong_schema(data_copy: Path) -> None:
    edit(data_copy / "cuda_driver.toml", "schema = 1", "schema = 2")
    assert load_error(data_copy) == (
        "matrix data error: cuda_driver.toml: meta.schema: unsupported schema 2 (this doctor reads schema 1)"
    )


def test_schema_wrong_type(data_copy: Path) -> None:
    edit(data_copy / "gpu_features.toml", "schema = 1", 'schema = "1"')
    assert load_error(data_copy) == "matrix data error: gpu_features.toml: meta.schema: expected an integer, got string '1'"


def test_missing_meta(data_copy: Path) -> None:
    edit(data_copy / "notes.toml", "[meta]\n", "[metadata]\n")
    assert load_error(data_copy) == "matrix data error: notes.toml: meta: missing"


def test_missing_sources(data_copy: Path) -> None:
    edit(data_copy / "gpu_names.toml", "[sources]\n", "[sourcez]\n")
    assert load_error(data_copy) == "matrix data error: gpu_names.toml: sources: missing"


def test_data_version_mismatch(data_copy: Path) -> None:
    edit(data_copy / "torch_cuda.toml", 'data_version = "2026.11.22"', 'data_version = "2026.11.23"')
    assert load_error(data_copy) == (
        "matrix data error: torch_cuda.toml: meta.data_version: '2026.11.23' differs from '2026.11.22' in xformers_torch.toml"
    )


def test_data_version_format(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'data_version = "2026.11.22"', 'data_version = "yesterday"')
    assert "xformers_torch.toml: meta.data_version: invalid data_version" in load_error(data_copy)


def test_missing_key(data_copy: Path) -> None:
    edit(data_copy / "torch_triton.toml", 'triton = "==2.0.0"\nsource = "WHEEL"', 'triton = "==2.0.0"')
    assert load_error(data_copy) == "matrix data error: torch_triton.toml: pin[0].source: missing"


def test_missing_required_version_key(data_copy: Path) -> None:
    edit(data_copy / "cuda_driver.toml", 'toolkit = "570.26"\n', "")
    i = row_index(data_copy / "cuda_driver.toml", "floor", "cuda", "12.8")
    assert load_error(data_copy) == f"matrix data error: cuda_driver.toml: floor[{i}].toolkit: missing"


def test_bad_specifier(data_copy: Path) -> None:
    # the example from the design: row 3 of xformers_torch is 0.0.22.post7
    edit(data_copy / "xformers_torch.toml", 'xformers = "0.0.22.post7"\ntorch = "==2.1.0"', 'xformers = "0.0.22.post7"\ntorch = "==2.0.x"')
    assert load_error(data_copy) == "matrix data error: xformers_torch.toml: requirement[3].torch: invalid specifier '==2.0.x'"


def test_empty_specifier(data_copy: Path) -> None:
    edit(data_copy / "bitsandbytes_torch.toml", 'torch = "~=2.0"', 'torch = ""')
    assert load_error(data_copy) == "matrix data error: bitsandbytes_torch.toml: requirement[0].torch: empty"


def test_garbage_version(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'xformers = "0.0.20"', 'xformers = "abc"')
    assert load_error(data_copy) == "matrix data error: xformers_torch.toml: requirement[0].xformers: invalid version 'abc'"


def test_garbage_driver_version(data_copy: Path) -> None:
    edit(data_copy / "cuda_driver.toml", 'minor_compat = "450.80.02"', 'minor_compat = "450.80.x"')
    assert load_error(data_copy) == "matrix data error: cuda_driver.toml: floor[0].minor_compat: invalid version '450.80.x'"


def test_torch_pin_must_be_a_plain_release(data_copy: Path) -> None:
    edit(data_copy / "torch_triton.toml", 'torch = "2.0.0"', 'torch = "2.0.0+cu118"')
    assert load_error(data_copy).startswith("matrix data error: torch_triton.toml: pin[0].torch: invalid release '2.0.0+cu118'")


def test_unknown_source_key(data_copy: Path) -> None:
    edit(data_copy / "bitsandbytes_torch.toml", 'source = "WHEEL"', 'source = "NOPE"')
    assert load_error(data_copy) == (
        "matrix data error: bitsandbytes_torch.toml: requirement[0].source: unknown source key 'NOPE' (not in [sources])"
    )


def test_source_defined_in_another_file_only(data_copy: Path) -> None:
    # a row may only cite sources of its own file, so each file stands alone
    edit(data_copy / "gpu_names.toml", 'source = "NV-CC"', 'source = "WHEEL"')
    assert load_error(data_copy) == "matrix data error: gpu_names.toml: gpu[0].source: unknown source key 'WHEEL' (not in [sources])"


def test_unknown_minor_compat_source(data_copy: Path) -> None:
    edit(data_copy / "cuda_driver.toml", 'minor_compat_source = "NV-T2"', 'minor_compat_source = "NV-T9"')
    assert "cuda_driver.toml: floor[0].minor_compat_source: unknown source key 'NV-T9'" in load_error(data_copy)


def test_conflicting_source_description(data_copy: Path) -> None:
    edit(data_copy / "torch_triton.toml", 'WHEEL = "Requires-Dist', 'WHEEL = "Other: Requires-Dist')
    assert load_error(data_copy) == "matrix data error: torch_triton.toml: sources.WHEEL: description differs from xformers_torch.toml"


def test_bad_source_key_name(data_copy: Path) -> None:
    edit(data_copy / "notes.toml", "SEEN = ", "seen = ")
    assert load_error(data_copy).startswith("matrix data error: notes.toml: sources.seen: invalid source key")


def test_cc_without_minor(data_copy: Path) -> None:
    p = data_copy / "gpu_names.toml"
    i = row_index(p, "gpu", "pattern", "H100")
    edit(p, 'pattern = "H100"\ncc = "9.0"', 'pattern = "H100"\ncc = "9"')
    assert load_error(data_copy) == f"matrix data error: gpu_names.toml: gpu[{i}].cc: invalid compute capability '9' (expected 'X.Y')"


def test_bad_cc_in_arch_list(data_copy: Path) -> None:
    edit(data_copy / "torch_cuda_archs.toml", 'archs = ["3.7", "5.0"', 'archs = ["3.7", "5.x"')
    assert load_error(data_copy) == (
        "matrix data error: torch_cuda_archs.toml: arch_set[0].archs[1]: invalid compute capability '5.x' (expected 'X.Y')"
    )


def test_ptx_must_be_in_archs(data_copy: Path) -> None:
    p = data_copy / "torch_cuda_archs.toml"
    i = row_index(p, "arch_set", "variant", "cu129")
    edit(p, 'ptx = ["12.0"]', 'ptx = ["12.1"]')
    assert load_error(data_copy) == f"matrix data error: torch_cuda_archs.toml: arch_set[{i}].ptx[0]: '12.1' is not in archs"


def test_arch_variant_must_exist(data_copy: Path) -> None:
    edit(data_copy / "torch_cuda_archs.toml", 'variant = "cu118"', 'variant = "cu218"')
    assert load_error(data_copy) == (
        "matrix data error: torch_cuda_archs.toml: arch_set[0].variant: 'cu218' is not a variant in torch_cuda.toml"
    )


def test_wrong_type_list(data_copy: Path) -> None:
    edit(data_copy / "torch_cuda_archs.toml", 'ptx = []', 'ptx = "none"')
    assert load_error(data_copy) == (
        "matrix data error: torch_cuda_archs.toml: arch_set[0].ptx: expected a list of strings, got string 'none'"
    )


def test_wrong_type_bool(data_copy: Path) -> None:
    p = data_copy / "torch_cuda.toml"
    i = row_index(p, "variants", "torch", "2.11")
    edit(p, "uncertain = true", 'uncertain = "yes"')
    assert load_error(data_copy) == f"matrix data error: torch_cuda.toml: variants[{i}].uncertain: expected a boolean, got string 'yes'"


def test_wrong_type_number_for_string(data_copy: Path) -> None:
    edit(data_copy / "torch_cuda.toml", 'cuda = "11.7"', "cuda = 11.7")
    assert load_error(data_copy) == "matrix data error: torch_cuda.toml: default_cuda[0].cuda: expected a string, got float 11.7"


def test_bad_variant_tag(data_copy: Path) -> None:
    edit(data_copy / "torch_cuda.toml", 'variants = ["cu117", "cu118"]', 'variants = ["cu117", "cuda118"]')
    assert load_error(data_copy) == (
        "matrix data error: torch_cuda.toml: variants[0].variants[1]: invalid CUDA variant 'cuda118' (expected 'cuXYZ')"
    )


def test_bad_cuda_version(data_copy: Path) -> None:
    edit(data_copy / "cuda_driver.toml", 'cuda = "11.8"', 'cuda = "11"')
    assert load_error(data_copy) == "matrix data error: cuda_driver.toml: floor[0].cuda: invalid CUDA version '11' (expected 'X.Y')"


def without_rows(text: str, table: str) -> str:
    """The file's text with every [[table]] row removed (the header and [sources] stay)."""
    return text.split(f"[[{table}]]")[0]


def test_rows_not_an_array_of_tables(data_copy: Path) -> None:
    p = data_copy / "notes.toml"
    # top-level keys must precede the first table header
    p.write_text('note = "text"\n' + without_rows(p.read_text(encoding="utf-8"), "note"), encoding="utf-8")
    assert load_error(data_copy) == "matrix data error: notes.toml: note: expected an array of tables ([[note]]), got string"


def test_unknown_key_typo(data_copy: Path) -> None:
    edit(data_copy / "pairs.toml", 'source = "UNSLOTH-PY"', 'sourse = "UNSLOTH-PY"')
    assert load_error(data_copy) == "matrix data error: pairs.toml: pair[0].sourse: unknown key"


def test_unknown_table(data_copy: Path) -> None:
    p = data_copy / "gpu_features.toml"
    p.write_text(p.read_text(encoding="utf-8") + '\n[[featur]]\nname = "x"\n', encoding="utf-8")
    assert load_error(data_copy) == "matrix data error: gpu_features.toml: featur: unknown table"


def test_empty_table(data_copy: Path) -> None:
    p = data_copy / "gpu_names.toml"
    p.write_text("gpu = []\n" + without_rows(p.read_text(encoding="utf-8"), "gpu"), encoding="utf-8")
    assert load_error(data_copy) == "matrix data error: gpu_names.toml: gpu: empty"


def test_duplicate_row(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'xformers = "0.0.21"', 'xformers = "0.0.20"')
    assert load_error(data_copy) == "matrix data error: xformers_torch.toml: requirement[1].xformers: duplicate of requirement[0].xformers"


def test_duplicate_note_key_across_files(data_copy: Path) -> None:
    edit(data_copy / "notes.toml", 'key = "observed.machine"', 'key = "flash_attn.pypi"')
    assert re.match(
        r"^matrix data error: notes\.toml: note\[\d+\]\.key: duplicate note key 'flash_attn\.pypi' \(also in known_issues\.toml\)$",
        load_error(data_copy),
    )


def test_bad_note_key(data_copy: Path) -> None:
    edit(data_copy / "notes.toml", 'key = "observed.machine"', 'key = "machine"')
    assert re.match(r"^matrix data error: notes\.toml: note\[\d+\]\.key: invalid note key 'machine' \(expected 'table\.fact'\)$", load_error(data_copy))


def test_pair_must_name_a_known_xformers(data_copy: Path) -> None:
    edit(data_copy / "pairs.toml", 'xformers = "0.0.26.post1"', 'xformers = "0.0.26"')
    assert load_error(data_copy) == "matrix data error: pairs.toml: pair[0].xformers: '0.0.26' is not in xformers_torch.toml"


def test_invalid_fix_requirement(data_copy: Path) -> None:
    edit(data_copy / "known_issues.toml", 'fix = ["xformers==0.0.27.post2"', 'fix = ["xformers 0.0.27.post2"')
    assert load_error(data_copy) == "matrix data error: known_issues.toml: issue[0].fix[0]: invalid requirement 'xformers 0.0.27.post2'"


def test_non_canonical_package(data_copy: Path) -> None:
    edit(data_copy / "pairs.toml", 'package = "unsloth-zoo"', 'package = "unsloth_zoo"')
    assert "pairs.toml: unsloth_requires[0].package: not a canonical package name 'unsloth_zoo' (use 'unsloth-zoo')" in load_error(data_copy)


def test_bad_requires_specifier(data_copy: Path) -> None:
    edit(data_copy / "known_issues.toml", "requires = {}", 'requires = { torch = "2.3" }')
    assert load_error(data_copy) == "matrix data error: known_issues.toml: issue[0].requires.torch: invalid specifier '2.3'"


def test_feature_max_below_min(data_copy: Path) -> None:
    p = data_copy / "gpu_features.toml"
    i = row_index(p, "feature", "name", "flash_attn_3")
    edit(p, 'max_cc = "9.0"', 'max_cc = "8.0"')
    assert load_error(data_copy) == f"matrix data error: gpu_features.toml: feature[{i}].max_cc: '8.0' is below min_cc '9.0'"


def test_newline_in_value_stays_one_line(data_copy: Path) -> None:
    edit(data_copy / "xformers_torch.toml", 'xformers = "0.0.20"', 'xformers = "0.0.20\\nabc"')
    assert load_error(data_copy) == "matrix data error: xformers_torch.toml: requirement[0].xformers: invalid version '0.0.20\\nabc'"


@pytest.mark.parametrize("name", FILES)
def test_each_file_checked_for_toml_errors(data_copy: Path, name: str) -> None:
    p = data_copy / name
    p.write_text(p.read_text(encoding="utf-8") + "\n= broken\n", encoding="utf-8")
    assert load_error(data_copy).startswith(f"matrix data error: {name}: invalid TOML: ")


@pytest.mark.parametrize("name", FILES)
def test_each_file_checked_for_schema(data_copy: Path, name: str) -> None:
    edit(data_copy / name, "schema = 1", "schema = 0")
    assert load_error(data_copy).startswith(f"matrix data error: {name}: meta.schema: unsupported schema 0")


def test_no_matrix_from_a_broken_dir_even_after_a_good_load(data_copy: Path) -> None:
    good = load_matrix(data_copy)
    edit(data_copy / "notes.toml", "schema = 1", "schema = 9")
    load_error(data_copy)  # raises; the earlier good result is not reused for an explicit dir
    assert good.data_version == "2026.11.22"


def test_compiled_copy_is_current_and_equivalent(tmp_path: Path) -> None:
    """compiled.json matches the TOML bytes (regenerate: python -c 'from doctor.compat_matrix.compiled import compile_data; compile_data()')."""
    import json
    import shutil

    raws = {n: (files.DEFAULT_DIR / n).read_bytes() for n in FILES}
    doc = json.loads((files.DEFAULT_DIR / compiled.COMPILED).read_text())
    assert doc["digest"] == compiled.sources_digest(raws), "compiled.json is stale: run compile_data()"
    # without the compiled copy the TOML path gives the same matrix
    plain = tmp_path / "plain"
    shutil.copytree(files.DEFAULT_DIR, plain)
    (plain / compiled.COMPILED).unlink()
    assert load_matrix(plain) == load_matrix(files.DEFAULT_DIR)


def test_stale_or_garbage_compiled_copy_is_a_miss(tmp_path: Path) -> None:
    """A compiled.json from other bytes, or garbage, is ignored: the TOML files decide."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(files.DEFAULT_DIR, d)
    toml = d / "torch_triton.toml"
    toml.write_text(toml.read_text().replace('"==3.6.0"', '"==3.6.1"', 1))
    m = load_matrix(d)
    assert any(str(r.spec) == "==3.6.1" for r in m.torch_triton)
    (d / compiled.COMPILED).write_text("{not json")
    assert any(str(r.spec) == "==3.6.1" for r in load_matrix(d).torch_triton)


def test_bad_cache_fallback_version(data_copy: Path) -> None:
    edit(data_copy / "unsloth_runtime.toml", 'since = "2025.3.8"', 'since = "2025.3.x"')
    assert load_error(data_copy) == "matrix data error: unsloth_runtime.toml: cache_fallback.since: invalid version '2025.3.x'"


def test_cache_fallback_unknown_source(data_copy: Path) -> None:
    edit(data_copy / "unsloth_runtime.toml", 'history_source = "ZOO-GIT"', 'history_source = "NOPE"')
    assert load_error(data_copy) == ("matrix data error: unsloth_runtime.toml: cache_fallback.history_source: "
                                     "unknown source key 'NOPE' (not in [sources])")


def test_compiled_json_nested_past_the_decoder_reads_the_toml(data_copy: Path) -> None:
    """A compiled.json of `[[[[...` (RecursionError in json) is a cache miss: the TOML files are read instead."""
    (data_copy / compiled.COMPILED).write_text("[" * 200000)
    assert load_matrix(data_copy).data_version
