"""A report covers only the sections its check covered: check_imports() is about imports, not the GPU."""

from __future__ import annotations

import doctor
from doctor.findings import Category
from doctor.report.markdown import to_markdown


def test_check_imports_lists_only_the_imports_section() -> None:
    """No "GPU & driver: nothing to report" for a check that never looked at the GPU."""
    report = doctor.check_imports()
    text = str(report)
    assert report.sections == (Category.IMPORTS,)
    assert Category.IMPORTS.value in text
    for other in (Category.GPU, Category.TORCH, Category.KERNELS, Category.PACKAGES, Category.CACHES):
        assert other.value not in text
        assert f"### {other.value}" not in to_markdown(report)


def test_a_full_check_lists_every_section() -> None:
    """doctor.check() without options covers every section, empty ones included."""
    text = str(doctor.check())
    for cat in (Category.GPU, Category.TORCH, Category.KERNELS, Category.PACKAGES, Category.CACHES, Category.IMPORTS):
        assert cat.value in text
