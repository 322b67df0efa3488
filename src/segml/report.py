"""Execute the experiment notebooks with papermill, render self-contained HTML, write the reports index.

Notebooks are executed in order in the project kernel (``segml``), with the experiment's parameters injected
after the first code cell tagged ``parameters``. Each executed notebook is written to ``out_dir`` next to its
HTML rendering. The HTML is self-contained: CSS inlined, figures embedded as base64, no script, stylesheet or
image fetched from the network (the template ``segml_html`` removes the CDN loaders of nbconvert's lab
template), so a stakeholder can open it offline.

A notebook whose metadata says ``{"segml": {"audience": "stakeholder"}}`` is rendered without code (inputs and
prompts hidden; markdown and outputs kept). In any notebook, cells tagged ``remove-cell`` are left out of the
HTML and cells tagged ``remove-input`` show their output only.

A failing notebook stops the run with :class:`NotebookFailed`: later notebooks are not executed and the
partially executed notebook is kept in ``out_dir`` for inspection.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import io
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segml import storage
from segml.errors import SegmlError
from segml.evaluate import COMPARISON_METRICS

#: Notebook metadata flag: ``nb.metadata["segml"]["audience"]``.
AUDIENCES = ("analyst", "stakeholder")
TEMPLATE_NAME = "segml_html"
TEMPLATES_DIR = Path(__file__).parent / "resources" / "templates"

#: Columns of a comparison table shown first on the index page, in this order.
COMPARISON_COLUMNS = ("model", *COMPARISON_METRICS, "gini_diff_ci")
#: Column names that mark customer-level data, refused on the (aggregate-only) index page.
_CUSTOMER_LEVEL_COLUMNS = {"customer_id", "customer", "customerid"}

_EXTERNAL_REFERENCE = re.compile(
    r"""\b(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", flags=re.IGNORECASE
)


class NotebookFailed(SegmlError):
    """A notebook raised during execution; the partial executed notebook is kept."""

    def __init__(
        self,
        message: str,
        *,
        notebook: str,
        cell: int | None,
        ename: str,
        evalue: str,
        executed_path: Path | None,
        not_run: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        #: 1-based position of the failing cell in the source notebook (injected parameters cell not counted)
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        self.executed_path = executed_path
        self.not_run = list(not_run)


class KernelNotFound(SegmlError):
    """The Jupyter kernel the notebooks run in is not registered."""


@dataclass(frozen=True)
class NotebookResult:
    """One executed notebook."""

    name: str  #: file name of the source notebook, e.g. ``03_models.ipynb``
    source: Path
    executed_path: Path  #: executed notebook in ``out_dir``
    html_path: Path  #: rendered HTML in ``out_dir``
    audience: str  #: ``analyst`` (code shown) or ``stakeholder`` (no code)
    seconds: float  #: wall time of execution + rendering


# --------------------------------------------------------------------------------------------------------------
# Kernel and parameters


def ensure_kernel(kernel_name: str = "segml") -> None:
    """Raise :class:`KernelNotFound` with the command that registers ``kernel_name`` if it is missing."""
    from jupyter_client.kernelspec import find_kernel_specs

    specs = find_kernel_specs()
    if kernel_name not in specs:
        raise KernelNotFound(
            f"Jupyter kernel {kernel_name!r} is not registered (found: {', '.join(sorted(specs)) or 'none'}): "
            f"run `python -m ipykernel install --sys-prefix --name {kernel_name}` in the project venv "
            "(`make venv` does it)"
        )


def _plain_parameter(value: Any) -> Any:
    """Turn a parameter into something papermill writes as a Python literal (str, number, list, dict)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain_parameter(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_plain_parameter(v) for v in items]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def _register_readable_translator() -> None:
    """Inject string parameters as ``repr`` literals: papermill's default writes non-ASCII text as ``\\uXXXX``
    escapes, which makes Chinese grade names unreadable in the executed notebook."""
    from papermill.translators import PythonTranslator, papermill_translators

    class ReadablePythonTranslator(PythonTranslator):
        @classmethod
        def translate_escaped_str(cls, str_val: Any) -> str:
            return repr(str_val) if isinstance(str_val, str) else f'"{str_val}"'

    papermill_translators.register("python", ReadablePythonTranslator)


def notebook_audience(nb: Any) -> str:
    """``"stakeholder"`` or ``"analyst"`` (default) from ``nb.metadata["segml"]["audience"]``."""
    audience = (nb.metadata.get("segml") or {}).get("audience", "analyst")
    if audience not in AUDIENCES:
        raise SegmlError(f"notebook metadata segml.audience must be one of {AUDIENCES}, got {audience!r}")
    return audience


@contextlib.contextmanager
def _kernel_environment(env: Mapping[str, str | None] | None) -> Iterator[None]:
    """Temporarily apply ``env`` to ``os.environ`` (a kernel inherits the environment at start).

    A value of None removes the variable. The previous environment is restored afterwards.
    """
    if not env:
        yield
        return
    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------------------------------------------
# CJK text in HTML: an embedded font subset

#: family name of the embedded font subset (added to the page's font stacks, before the generic family)
EMBEDDED_CJK_FAMILY = "segml CJK"
_FONT_STACK_SANS = (
    f'system-ui, -apple-system, blinkmacsystemfont, "Segoe UI", helvetica, arial, "{EMBEDDED_CJK_FAMILY}", '
    '"Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif'
)
_FONT_STACK_MONO = f'menlo, consolas, "DejaVu Sans Mono", "{EMBEDDED_CJK_FAMILY}", monospace'
_FONT_STYLE_ID = "segml-cjk-font"


def _cjk_font_path() -> Path | None:
    from segml.plots import _mplfonts_font_path

    return _mplfonts_font_path()


def cjk_font_subset(text: str) -> bytes | None:
    """An OpenType subset of Noto Sans CJK SC holding the glyphs of every non-ASCII character of ``text`` it
    covers (a few kB for a page of Chinese grade names), or None if there is none or no font."""
    path = _cjk_font_path()
    if path is None:
        return None
    from fontTools import subset

    wanted = {ord(ch) for ch in set(text) if ord(ch) > 0x2E7F}  # CJK radicals onward; Latin stays system
    if not wanted:
        return None
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = subset.load_font(str(path), options, lazy=True)
    cmap = font.getBestCmap()
    covered = sorted(wanted & set(cmap))
    if not covered:
        return None
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=covered)
    subsetter.subset(font)
    buffer = io.BytesIO()
    subset.save_font(font, buffer, options)
    return buffer.getvalue()


def embed_cjk_font(html_text: str) -> str:
    """Embed a CJK font subset in an HTML page so Chinese text renders on machines without a CJK font.

    The subset is a ``data:`` URI (nothing is fetched) declared as ``@font-face`` family
    :data:`EMBEDDED_CJK_FAMILY` and added to the page's sans-serif and monospace font stacks (nbconvert's
    ``--jp-*-font-family`` variables and ``body``). Pages without CJK characters are returned unchanged;
    a page that already has the font is returned unchanged.
    """
    if f'id="{_FONT_STYLE_ID}"' in html_text or "</head>" not in html_text:
        return html_text
    font = cjk_font_subset(html_text)
    if font is None:
        return html_text
    encoded = base64.b64encode(font).decode("ascii")
    style = (
        f'<style id="{_FONT_STYLE_ID}">'
        f'@font-face {{ font-family: "{EMBEDDED_CJK_FAMILY}"; '
        f'src: url(data:font/otf;base64,{encoded}) format("opentype"); }}\n'
        f":root {{ --jp-ui-font-family: {_FONT_STACK_SANS}; --jp-content-font-family: {_FONT_STACK_SANS}; "
        f"--jp-code-font-family: {_FONT_STACK_MONO}; --jp-code-font-family-default: {_FONT_STACK_MONO}; }}\n"
        f"body {{ font-family: {_FONT_STACK_SANS}; }}"
        "</style>"
    )
    head_end = html_text.index("</head>")
    page = html_text[:head_end] + style + html_text[head_end:]
    # Chromium lays out the first text run that needs a web font before the font is ready and can keep the
    # fallback (missing-glyph boxes) for that run; an off-screen run takes that hit instead of real text.
    body = re.search(r"<body[^>]*>", page)
    if body is None:
        return page
    sample = "".join(sorted({ch for ch in html_text if ord(ch) > 0x2E7F}))[:64]
    warm_up = (
        f'<span aria-hidden="true" style="position:absolute;left:-9999px;top:0;'
        f"font-family:'{EMBEDDED_CJK_FAMILY}'\">{html.escape(sample)}</span>"
    )
    return page[: body.end()] + warm_up + page[body.end() :]


def embedded_font(html_text: str) -> bytes | None:
    """The font subset :func:`embed_cjk_font` put into a page (None if the page has none)."""
    match = re.search(r"font/otf;base64,([A-Za-z0-9+/=]+)\)", html_text)
    return base64.b64decode(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------------------------
# Execution


def _failing_cell(nb: Any, papermill_cell_index: int | None) -> tuple[int | None, str]:
    """1-based source position (injected parameters cell not counted) and first source line of a cell.

    ``papermill_cell_index`` indexes the executed notebook *before* papermill inserted its two error-marker
    cells (tag ``papermill-error-cell-tag``); it counts the injected parameters cell.
    """
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    if papermill_cell_index is None or not 0 <= papermill_cell_index < len(cells):
        return None, ""
    injected_before = sum(
        1
        for cell in cells[:papermill_cell_index]
        if "injected-parameters" in cell.get("metadata", {}).get("tags", [])
    )
    source = cells[papermill_cell_index].source
    first_line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    if len(first_line) > 60:
        first_line = first_line[:57] + "..."
    return papermill_cell_index - injected_before + 1, first_line


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _execute_one(
    source: Path,
    executed_path: Path,
    parameters: Mapping[str, Any],
    *,
    kernel_name: str,
    cwd: Path,
    remaining: Sequence[str],
) -> None:
    """Execute ``source`` into ``executed_path`` (written even when a cell fails), or raise NotebookFailed."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # papermill saves after every cell; the working copy is renamed into place once execution stops, so the
    # final name never holds a notebook that is still being written.
    working = executed_path.with_name(f".{executed_path.stem}.running.ipynb")
    failure: BaseException | None = None
    try:
        papermill.execute_notebook(
            str(source),
            str(working),
            parameters=dict(parameters),
            kernel_name=kernel_name,
            cwd=str(cwd),
            progress_bar=False,
            log_output=False,
        )
    except PapermillExecutionError as exc:
        failure = exc
    except KeyboardInterrupt:
        working.unlink(missing_ok=True)
        raise
    except Exception as exc:  # kernel died, timeout, missing parameter cell value, unreadable notebook ...
        failure = exc

    nb = None
    if working.exists():
        nb = nbformat.read(working, as_version=4)
        nb.metadata.setdefault("papermill", {})["output_path"] = str(executed_path)
        storage.write_text(executed_path, nbformat.writes(nb))
        working.unlink()

    if failure is None:
        return
    if isinstance(failure, PapermillExecutionError):
        cell, first_line = _failing_cell(nb, failure.cell_index) if nb is not None else (None, "")
        ename, evalue = failure.ename, _one_line(failure.evalue)
    else:
        cell, first_line = None, ""
        ename, evalue = type(failure).__name__, _one_line(str(failure))
    where = (
        f"cell {cell} (1-based position in the notebook, injected parameters cell not counted"
        + (f': "{first_line}"' if first_line else "")
        + ")"
        if cell is not None
        else "before or outside a cell"
    )
    kept = f"partial output: {executed_path}" if nb is not None else "no output written"
    skipped = f"; not run: {', '.join(remaining)}" if remaining else ""
    message = f"notebook {source.name} failed in {where}: {ename}: {evalue}; {kept}{skipped}"
    raise NotebookFailed(
        message,
        notebook=source.name,
        cell=cell,
        ename=ename,
        evalue=evalue,
        executed_path=executed_path if nb is not None else None,
        not_run=remaining,
    ) from failure


def render_html(
    executed_notebook: Path,
    html_path: Path,
    *,
    no_input: bool | None = None,
    resources_dir: Path | None = None,
) -> Path:
    """Render an executed notebook to a self-contained HTML file (atomic write).

    Parameters
    ----------
    executed_notebook:
        The ``.ipynb`` to render.
    html_path:
        Output file.
    no_input:
        Hide code cells' input and prompts. Default: True for stakeholder notebooks
        (``metadata.segml.audience``).
    resources_dir:
        Folder against which relative image paths in markdown are embedded (default: the notebook's folder).

    Returns
    -------
    Path
        ``html_path``.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed_notebook, as_version=4)
    if no_input is None:
        no_input = notebook_audience(nb) == "stakeholder"
    exporter = HTMLExporter(
        template_name=TEMPLATE_NAME,
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        embed_images=True,
        exclude_input=no_input,
        exclude_input_prompt=no_input,
        exclude_output_prompt=no_input,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(
            remove_cell_tags={"remove-cell"},
            remove_input_tags={"remove-input"},
            enabled=True,
        ),
        enabled=True,
    )
    body, _ = exporter.from_notebook_node(
        nb,
        resources={
            "metadata": {
                "name": executed_notebook.stem,
                "path": str(resources_dir or executed_notebook.parent),
            }
        },
    )
    return storage.write_text(html_path, embed_cjk_font(body))


def external_references(html_text: str) -> list[str]:
    """URLs in ``src=`` / ``href=`` attributes that point to another host (``http(s)://`` or ``//``)."""
    return _EXTERNAL_REFERENCE.findall(html_text)


def run_notebooks(
    notebooks: Sequence[Path],
    out_dir: Path,
    parameters: Mapping[str, Any],
    *,
    kernel_name: str = "segml",
    cwd: Path,
    progress: bool = True,
    env: Mapping[str, str | None] | None = None,
) -> list[NotebookResult]:
    """Execute notebooks in order and render each to HTML.

    Parameters
    ----------
    notebooks:
        Source notebooks, executed in the given order. Each names the kernel in its metadata and has a first
        code cell tagged ``parameters``.
    out_dir:
        Receives ``<name>.ipynb`` (executed) and ``<name>.html`` per notebook (usually ``reports/<experiment>``).
    parameters:
        Injected into every notebook (papermill adds a cell after the ``parameters`` cell). Paths and dates
        are passed as strings.
    kernel_name:
        Registered Jupyter kernel to run in.
    cwd:
        Working directory of the kernel (the project root, so relative paths resolve like the CLI's).
    progress:
        Show a rich progress bar and one line per finished notebook on stderr.
    env:
        Environment variables for the kernels (e.g. :func:`segml.tracking.child_env`); None values unset a
        variable. Applied to this process's environment only while the kernels start.

    Returns
    -------
    list[NotebookResult]
        One per notebook, in order.

    Raises
    ------
    KernelNotFound
        ``kernel_name`` is not registered.
    NotebookFailed
        A cell raised: the message names the notebook, the cell and the error; the partially executed notebook
        is in ``out_dir`` and later notebooks were not run.
    """
    import nbformat

    _register_readable_translator()
    notebooks = [Path(nb) for nb in notebooks]
    missing = [str(nb) for nb in notebooks if not nb.is_file()]
    if missing:
        raise SegmlError(f"notebook file not found: {', '.join(missing)}")
    ensure_kernel(kernel_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain_parameters = _plain_parameter(dict(parameters))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    results: list[NotebookResult] = []
    with bar, _kernel_environment(env):
        task = bar.add_task("notebooks", total=len(notebooks))
        for position, source in enumerate(notebooks):
            bar.update(task, description=f"running {source.name}")
            started = time.perf_counter()
            executed_path = out_dir / source.name
            html_path = out_dir / f"{source.stem}.html"
            try:
                _execute_one(
                    source,
                    executed_path,
                    plain_parameters,
                    kernel_name=kernel_name,
                    cwd=Path(cwd),
                    remaining=[nb.name for nb in notebooks[position + 1 :]],
                )
            except NotebookFailed:
                html_path.unlink(missing_ok=True)  # an HTML from an earlier run would pass for this one's
                if progress:
                    console.print(f"[red]✗[/] {source.name}", highlight=False)
                raise
            audience = notebook_audience(nbformat.read(source, as_version=4))
            render_html(
                executed_path, html_path, no_input=audience == "stakeholder", resources_dir=source.parent
            )
            seconds = time.perf_counter() - started
            results.append(NotebookResult(source.name, source, executed_path, html_path, audience, seconds))
            bar.advance(task)
            if progress:
                console.print(f"[green]✓[/] {source.name}  {seconds:.1f} s → {html_path}", highlight=False)
    return results


# --------------------------------------------------------------------------------------------------------------
# Aggregates for the stakeholder reports (never customer rows)


def monthly_activity(transactions_path: Path) -> Any:
    """Net spend, rows and distinct customers per calendar month of a clean transactions parquet.

    Returns
    -------
    pandas.DataFrame
        ``month`` (first day), ``spend``, ``transactions``, ``customers``, sorted by month.
    """
    import duckdb

    con = duckdb.connect()
    try:
        frame = con.execute(
            "SELECT CAST(date_trunc('month', timestamp) AS DATE) AS month, SUM(amount) AS spend, "
            "COUNT(*) AS transactions, COUNT(DISTINCT customer_id) AS customers "
            "FROM read_parquet(?) GROUP BY 1 ORDER BY 1",
            [str(transactions_path)],
        ).df()
    finally:
        con.close()
    return frame


def top_reasons_per_grade(grades: Any, order: Sequence[str] | None = None, top: int = 3) -> Any:
    """The most frequent first reason per grade: which feature most often decides a customer's value.

    Parameters
    ----------
    grades:
        ``grades.parquet`` rows (``grade``, ``grade_name``, ``reason_1_feature``, ``reason_1_contribution``).
    order:
        Grade codes in display order (default: sorted).
    top:
        Reasons per grade.

    Returns
    -------
    pandas.DataFrame
        ``grade, grade_name, rank, feature, meaning, share_of_grade, effect`` where ``effect`` says whether the
        reason mostly raises or lowers predicted value. Aggregates only.
    """
    import pandas as pd

    from segml.features import describe_feature

    rows = []
    present = [
        g for g in (order or sorted(grades["grade"].dropna().unique())) if (grades["grade"] == g).any()
    ]
    for code in present:
        part = grades[(grades["grade"] == code) & grades["reason_1_feature"].notna()]
        if part.empty:
            continue
        counts = part.groupby("reason_1_feature")["reason_1_contribution"].agg(["size", "mean"])
        counts = counts.sort_values("size", ascending=False, kind="stable").head(top)
        for rank, (feature, stats) in enumerate(counts.iterrows(), start=1):
            rows.append(
                {
                    "grade": code,
                    "grade_name": str(part["grade_name"].iloc[0]),
                    "rank": rank,
                    "feature": str(feature),
                    "meaning": describe_feature(str(feature)),
                    "share_of_grade": float(stats["size"]) / len(part),
                    "effect": "raises value" if stats["mean"] > 0 else "lowers value",
                }
            )
    return pd.DataFrame(
        rows, columns=["grade", "grade_name", "rank", "feature", "meaning", "share_of_grade", "effect"]
    )


def resource_table(summary: Any) -> Any:
    """Service cost against expected value per grade (from :func:`segml.policy.grade_summary` with predicted
    value as future value and the policy's ``cost_per_customer``).

    Returns
    -------
    pandas.DataFrame
        ``grade, grade_name, n, cost_per_customer, cost_total, expected_value_total, expected_value_mean,
        value_per_cost`` (expected value over the forecast horizon ÷ service cost), ``net_value``.
    """
    import numpy as np
    import pandas as pd

    table = pd.DataFrame(
        {
            "grade": summary["grade"],
            "grade_name": summary["grade_name"],
            "n": summary["n"],
            "cost_per_customer": summary.get("cost_per_customer", np.nan),
            "cost_total": summary.get("cost_total", np.nan),
            "expected_value_total": summary.get("future_value_total", np.nan),
            "expected_value_mean": summary.get("future_value_mean", np.nan),
        }
    )
    cost = table["cost_total"].where(table["cost_total"] > 0)
    table["value_per_cost"] = table["expected_value_total"] / cost
    table["net_value"] = table["expected_value_total"] - table["cost_total"]
    return table


# --------------------------------------------------------------------------------------------------------------
# Index page

_INDEX_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, "segml CJK", "Noto Sans CJK SC",
       "PingFang SC", "Microsoft YaHei", sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #f4f5f7; } td:first-child, th:first-child { text-align: left; }
ul.reports li { margin: 0.25rem 0; } .missing { color: #a33; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #eee; } figcaption { font-size: 0.85rem; color: #555; }
.muted { color: #666; font-size: 0.85rem; }
"""


def _records(table: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame or a list of mappings, as dicts."""
    if table is None:
        return []
    if hasattr(table, "to_dict"):
        return table.to_dict(orient="records")
    return [dict(row) for row in table]


def _format_cell(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_cell(column, v) for v in value) + "]"
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if column.endswith(("_share", "share", "_capture", "capture", "_pct")):
            return f"{value:.1%}"
        if column.endswith(("_total", "_cost", "cost_per_customer")):  # money amounts
            return f"{value:,.0f}"
        if column.endswith(("_mean", "_per_cost")):
            return f"{value:,.2f}"
        return f"{value:,.3f}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _html_table(rows: list[dict[str, Any]], preferred: Sequence[str] = ()) -> str:
    columns = [c for c in preferred if any(c in row for row in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    refused = [c for c in columns if c.lower() in _CUSTOMER_LEVEL_COLUMNS]
    if refused:
        raise SegmlError(
            f"reports index shows aggregates only: table has customer-level column {refused[0]!r} "
            f"({len(rows)} rows)"
        )
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_format_cell(str(c), row.get(c)))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_index(
    out_dir: Path,
    experiment_name: str,
    headline: Mapping[str, Any],
    reports: Sequence[tuple[str, Path]],
) -> Path:
    """Write ``out_dir/index.html``: the experiment's headline numbers and links to every report.

    The page is self-contained (inline CSS, charts as base64 PNG, no external asset) and holds aggregates
    only: a table with a customer-id column is refused.

    Parameters
    ----------
    out_dir:
        ``reports/<experiment>``; links to reports are written relative to it.
    experiment_name:
        Shown as the title.
    headline:
        Optional keys:

        - ``"summary"``: mapping label → value (cutoff, customers, run id, data fingerprint, …);
        - ``"grades"``: rows (DataFrame or list of dicts) with ``grade``, ``n``, ``value_share`` (+ any
          other aggregate columns);
        - ``"comparison"``: rows of ``comparison.json`` (``model``, ``normalized_gini``, ``spearman``,
          ``top10_capture``, ``top20_capture``, ``decile_mape``, ``total_error``, ``gini_diff_ci``; extra
          columns shown after these);
        - ``"charts"``: mapping title → base64 PNG (:func:`segml.plots.fig_to_base64_png`).
    reports:
        ``(title, html_path)`` pairs, in display order.

    Returns
    -------
    Path
        The written ``index.html``.
    """
    out_dir = Path(out_dir)
    title = f"segml · {experiment_name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_INDEX_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="muted">Aggregates only; customer-level outputs stay under data/processed.</p>',
    ]
    summary = headline.get("summary") or {}
    if summary:
        parts.append("<h2>Summary</h2><table><tbody>")
        parts += [
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format_cell(str(k), v))}</td></tr>"
            for k, v in summary.items()
        ]
        parts.append("</tbody></table>")
    grades = _records(headline.get("grades"))
    if grades:
        parts += ["<h2>Grades: size and value share</h2>", _html_table(grades, ("grade", "n", "value_share"))]
    comparison = _records(headline.get("comparison"))
    if comparison:
        parts += ["<h2>Model comparison (holdout)</h2>", _html_table(comparison, COMPARISON_COLUMNS)]
    charts = headline.get("charts") or {}
    if charts:
        parts.append("<h2>Charts</h2>")
        for caption, png_b64 in charts.items():
            parts.append(
                f'<figure><img alt="{html.escape(str(caption))}" src="data:image/png;base64,{png_b64}">'
                f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
            )
    parts.append('<h2>Reports</h2><ul class="reports">')
    for report_title, report_path in reports:
        report_path = Path(report_path)
        href = Path(os.path.relpath(report_path.resolve(), out_dir.resolve())).as_posix()
        missing = "" if report_path.exists() else ' <span class="missing">(not generated)</span>'
        parts.append(
            f'<li><a href="{html.escape(href, quote=True)}">{html.escape(str(report_title))}</a>{missing}</li>'
        )
    parts += ["</ul>", "</body>", "</html>", ""]
    return storage.write_text(out_dir / "index.html", embed_cjk_font("\n".join(parts)))
