"""Reports: papermill execution and self-contained HTML (:mod:`.execute`), the embedded CJK font
(:mod:`.fonts`), the index page (:mod:`.index`) and the cell formatting every report table uses
(:mod:`.formatting`). The aggregate tables the reports show live in
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
from segml.report.formatting import (
    HtmlTable,
    format_value,
    html_table,
    human_label,
    model_label,
    present,
    table,
)
from segml.report.index import AUDIENCE_HEADINGS, COMPARISON_COLUMNS, write_index

__all__ = [
    "AUDIENCES",
    "AUDIENCE_HEADINGS",
    "COMPARISON_COLUMNS",
    "EMBEDDED_CJK_FAMILY",
    "HtmlTable",
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
    "format_value",
    "html_table",
    "human_label",
    "model_label",
    "present",
    "table",
    "notebook_audience",
    "render_html",
    "run_notebooks",
    "write_index",
]
