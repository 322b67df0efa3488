"""Reports: papermill execution and self-contained HTML (:mod:`.execute`), the embedded CJK font
(:mod:`.fonts`) and the index page (:mod:`.index`). The aggregate tables the reports show live in
:mod:`segml.summaries`."""

from segml.report.execute import (
    AUDIENCES,
    TEMPLATE_NAME,
    TEMPLATES_DIR,
    KernelNotFound,
    NotebookFailed,
    NotebookResult,
    ensure_kernel,
    external_references,
    notebook_audience,
    render_html,
    run_notebooks,
)
from segml.report.fonts import EMBEDDED_CJK_FAMILY, cjk_font_subset, embed_cjk_font, embedded_font
from segml.report.index import COMPARISON_COLUMNS, write_index

__all__ = [
    "AUDIENCES",
    "COMPARISON_COLUMNS",
    "EMBEDDED_CJK_FAMILY",
    "TEMPLATES_DIR",
    "TEMPLATE_NAME",
    "KernelNotFound",
    "NotebookFailed",
    "NotebookResult",
    "cjk_font_subset",
    "embed_cjk_font",
    "embedded_font",
    "ensure_kernel",
    "external_references",
    "notebook_audience",
    "render_html",
    "run_notebooks",
    "write_index",
]
