"""Rendered reports are self-contained: no external URL, Chinese grade names present and covered by the
embedded font, no customer-level rows."""

from __future__ import annotations

import io
import re

import nbformat
import pytest
from fontTools.ttLib import TTFont
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from test_run import smoke_run

from segml import report
from segml.policy import default_policy_mapping

GRADE_NAMES = [g["name"] for g in default_policy_mapping()["grades"]]


def _cjk(text: str) -> set[str]:
    return {ch for ch in text if ord(ch) > 0x2E7F}


def assert_font_covers_page(html_text: str) -> None:
    font = report.embedded_font(html_text)
    assert font is not None, "page with Chinese text has no embedded CJK font"
    cmap = TTFont(io.BytesIO(font)).getBestCmap()
    missing = sorted(ch for ch in _cjk(html_text) if ord(ch) not in cmap)
    assert not missing, f"characters without a glyph in the embedded font: {''.join(missing)}"


def test_embedded_font_renders_rendered_notebook(tmp_path) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "segml", "display_name": "segml", "language": "python"}
    nb.metadata["segml"] = {"audience": "stakeholder"}
    nb.cells = [new_markdown_cell("# 客户分级 高净值客户"), new_code_cell("secret_code = 1")]
    nb.cells[1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="VIP客户 普通客户 潜力客户\n")
    ]
    path = tmp_path / "07_x.ipynb"
    nbformat.write(nb, path)
    html_text = report.render_html(path, tmp_path / "07_x.html").read_text(encoding="utf-8")
    assert report.external_references(html_text) == []
    assert "secret_code" not in html_text  # stakeholder: no code
    for name in ("高净值客户", "VIP客户", "普通客户", "潜力客户"):
        assert name in html_text
    assert_font_covers_page(html_text)
    assert report.embed_cjk_font(html_text) == html_text  # idempotent
    plain = "<html><head></head><body>only ASCII</body></html>"
    assert report.embed_cjk_font(plain) == plain


@pytest.mark.slow
def test_every_rendered_report_is_offline_and_shows_grade_names() -> None:
    run = smoke_run()
    pages = sorted((run.root / "reports" / "smoke").glob("*.html"))
    assert len(pages) >= 8  # 8 notebooks + index
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert report.external_references(text) == [], page.name
        assert not re.search(r"<script[^>]+src=", text), page.name
        assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", text), page.name
        if page.name in ("index.html", "01_data_quality.html", "07_grading_report.html"):
            # stakeholder pages: aggregates only, no table with a customer id column
            assert not re.search(r"<th[^>]*>\s*customer_id\s*</th>", text), page.name
        if _cjk(text):
            assert_font_covers_page(text)
    for name in ("index.html", "07_grading_report.html"):
        text = (run.root / "reports" / "smoke" / name).read_text(encoding="utf-8")
        for grade_name in GRADE_NAMES:
            assert grade_name in text, (name, grade_name)
    stakeholder = (run.root / "reports" / "smoke" / "07_grading_report.html").read_text(encoding="utf-8")
    assert "train.grade_customers" not in stakeholder  # rendered without code
    assert "data:image/png;base64," in stakeholder
