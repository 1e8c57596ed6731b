"""Liger's apply_liger_kernel_to_*() call order in a script (call order, not import order)."""

from __future__ import annotations

from doctor.rules.import_order.script import check_script


def test_liger_applied_after_the_model_is_flagged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Liger patches classes when apply_* runs: after from_pretrained the model is unpatched; model= fixes it."""
    late = tmp_path / "late.py"
    late.write_text("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                    "from liger_kernel.transformers import apply_liger_kernel_to_llama\n"
                    "tok = AutoTokenizer.from_pretrained('m')\n"
                    "model = AutoModelForCausalLM.from_pretrained('m')\n"
                    "apply_liger_kernel_to_llama()\n")
    [f] = [x for x in check_script(str(late)) if x.id == "imports.liger-order"]
    assert f.severity.name == "WARN" and dict(f.evidence)["model created"] == "line 4"
    ok = tmp_path / "ok.py"
    ok.write_text(late.read_text().replace("apply_liger_kernel_to_llama()", "apply_liger_kernel_to_llama(model=model)"))
    assert not [x for x in check_script(str(ok)) if x.id == "imports.liger-order"]
    early = tmp_path / "early.py"
    early.write_text("from liger_kernel.transformers import apply_liger_kernel_to_llama\napply_liger_kernel_to_llama()\n"
                     "from transformers import AutoModelForCausalLM\nm = AutoModelForCausalLM.from_pretrained('m')\n")
    assert not [x for x in check_script(str(early)) if x.id == "imports.liger-order"]
