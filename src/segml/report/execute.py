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

import contextlib
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segml import storage
from segml.errors import SegmlError
from segml.report.fonts import embed_cjk_font

#: Notebook metadata flag: ``nb.metadata["segml"]["audience"]``.
AUDIENCES = ("analyst", "stakeholder")
TEMPLATE_NAME = "segml_html"
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "resources" / "templates"

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
        #: what the kernel process logged on its stderr (known noise left out)
        self.kernel_log: list[str] = []


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


# Execution

#: lines the kernel process logs on its own stderr that say nothing about the notebook (the default TCP
#: transport warning, the interrupt nbclient sends while shutting a finished kernel down)
_KERNEL_NOISE = re.compile(
    r"Kernel is running over TCP without encryption|KeyboardInterrupt caught in kernel"
)


def _quiet_kernel_manager(stderr_path: Path) -> type:
    """A kernel manager class whose kernel writes its own log (``[IPKernelApp] WARNING …``) to
    ``stderr_path`` instead of the console; the notebook's outputs are unaffected (they travel as messages)."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            with open(stderr_path, "ab") as log:  # the kernel process holds its own copy of the descriptor
                kw.setdefault("stderr", log)
                await super().start_kernel(**kw)

    return QuietKernelManager


def kernel_log_lines(stderr_path: Path) -> list[str]:
    """What a kernel logged on its stderr, without the known noise (:data:`_KERNEL_NOISE`)."""
    if not stderr_path.is_file():
        return []
    text = stderr_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip() and not _KERNEL_NOISE.search(line)]


_DATA_URI = re.compile(r"data:[^\s\"')]+")


def local_paths(extra: Sequence[Path | str] = ()) -> list[tuple[str, str]]:
    """``(prefix, replacement)`` pairs that turn this machine's absolute paths into relative ones: the given
    folders (e.g. the project root) and the Python environment become relative, the home folder ``~/``."""
    pairs: list[tuple[str, str]] = []
    for folder in extra:
        pairs.append((str(Path(folder).resolve()).rstrip("/") + "/", ""))
        pairs.append((str(folder).rstrip("/") + "/", ""))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        pairs.append((str(prefix).rstrip("/") + "/", ""))
    pairs.append((str(Path.home()).rstrip("/") + "/", "~/"))
    unique = {p: r for p, r in pairs if len(p) > 2}
    return sorted(unique.items(), key=lambda item: len(item[0]), reverse=True)


def hide_local_paths(text: str, folders: Sequence[Path | str] = ()) -> str:
    """``text`` with this machine's absolute paths made relative (:func:`local_paths`); embedded data URIs
    (figures, fonts) are left untouched."""
    pairs = local_paths(folders)
    pieces = []
    position = 0
    for match in _DATA_URI.finditer(text):
        pieces.append(_replace_all(text[position : match.start()], pairs))
        pieces.append(match.group(0))
        position = match.end()
    pieces.append(_replace_all(text[position:], pairs))
    return "".join(pieces)


def _replace_all(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    for prefix, replacement in pairs:
        if prefix in text:
            text = text.replace(prefix, replacement)
    return text


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
    on_cell: Callable[[int, Any], None] | None = None,
) -> list[str]:
    """Execute ``source`` into ``executed_path`` (written even when a cell fails), or raise NotebookFailed.

    ``on_cell(index, cell)`` is called as each cell starts (0-based, injected parameters cell counted). The
    kernel's own log goes to a temporary file; returns its lines other than known noise.
    """
    import tempfile

    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # papermill saves after every cell; the working copy is renamed into place once execution stops, so the
    # final name never holds a notebook that is still being written.
    working = executed_path.with_name(f".{executed_path.stem}.running.ipynb")
    failure: BaseException | None = None
    hooks: dict[str, Any] = {}
    if on_cell is not None:
        hooks["on_cell_start"] = lambda cell, cell_index: on_cell(cell_index, cell)
    with tempfile.TemporaryDirectory(prefix="segml-kernel-") as scratch:
        kernel_log = Path(scratch) / "kernel.log"
        try:
            papermill.execute_notebook(
                str(source),
                str(working),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                cwd=str(cwd),
                progress_bar=False,
                log_output=False,
                kernel_manager_class=_quiet_kernel_manager(kernel_log),
                **hooks,
            )
        except PapermillExecutionError as exc:
            failure = exc
        except KeyboardInterrupt:
            working.unlink(missing_ok=True)
            raise
        except Exception as exc:  # kernel died, timeout, missing parameter value, unreadable notebook
            failure = exc
        kernel_lines = kernel_log_lines(kernel_log)

    nb = None
    if working.exists():
        nb = nbformat.read(working, as_version=4)
        nb.metadata.setdefault("papermill", {})["output_path"] = str(executed_path)
        storage.write_text(executed_path, nbformat.writes(nb))
        working.unlink()

    if failure is None:
        return kernel_lines
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
    if kernel_lines and not isinstance(failure, PapermillExecutionError):
        evalue = f"{evalue} (kernel log: {_one_line(kernel_lines[-1])})"
    skipped = f"; not run: {', '.join(remaining)}" if remaining else ""
    message = f"notebook {source.name} failed in {where}: {ename}: {evalue}; {kept}{skipped}"
    error = NotebookFailed(
        message,
        notebook=source.name,
        cell=cell,
        ename=ename,
        evalue=evalue,
        executed_path=executed_path if nb is not None else None,
        not_run=remaining,
    )
    error.kernel_log = kernel_lines
    raise error from failure


def render_html(
    executed_notebook: Path,
    html_path: Path,
    *,
    no_input: bool | None = None,
    resources_dir: Path | None = None,
    hide_paths: Sequence[Path | str] = (),
    drop_stderr: bool | None = None,
) -> Path:
    """Render an executed notebook to a self-contained HTML file (atomic write).

    Absolute paths of this machine never reach the page (:func:`hide_local_paths`: ``hide_paths``, e.g. the
    project root, and the Python environment become relative, the home folder ``~/``).

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
    hide_paths:
        Folders written relative in the page (besides the Python environment and the home folder).
    drop_stderr:
        Leave out what cells wrote on stderr (warnings). Default: True for stakeholder notebooks.

    Returns
    -------
    Path
        ``html_path``.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed_notebook, as_version=4)
    stakeholder = notebook_audience(nb) == "stakeholder"
    if no_input is None:
        no_input = stakeholder
    if drop_stderr if drop_stderr is not None else stakeholder:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [
                    o
                    for o in cell.get("outputs", [])
                    if not (o.output_type == "stream" and o.name == "stderr")
                ]
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
    body = hide_local_paths(body, [*hide_paths, executed_notebook.parent])
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
        Show a rich progress bar (notebooks, and the cells of the running notebook) and one line per finished
        notebook on stderr. The kernels' own log lines (the TCP transport warning, the shutdown interrupt) are
        kept off the console; anything else a kernel logs is printed under its notebook.
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
        cells = bar.add_task("cells", total=1, visible=False)
        for position, source in enumerate(notebooks):
            bar.update(task, description=f"running {source.name}")
            n_cells = _cell_count(source, plain_parameters)
            bar.reset(cells, total=n_cells, visible=True, description=f"{source.name}: starting the kernel")

            def on_cell(index: int, cell: Any, name: str = source.name, total: int = n_cells) -> None:
                first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
                first = first if len(first) <= 48 else first[:45] + "..."
                label = f"{name}: cell {min(index + 1, total)}/{total}" + (f"  {first}" if first else "")
                bar.update(cells, completed=min(index, total), description=label)

            started = time.perf_counter()
            executed_path = out_dir / source.name
            html_path = out_dir / f"{source.stem}.html"
            try:
                kernel_lines = _execute_one(
                    source,
                    executed_path,
                    plain_parameters,
                    kernel_name=kernel_name,
                    cwd=Path(cwd),
                    remaining=[nb.name for nb in notebooks[position + 1 :]],
                    on_cell=on_cell,
                )
            except NotebookFailed as exc:
                html_path.unlink(missing_ok=True)  # an HTML from an earlier run would pass for this one's
                if progress:
                    console.print(f"[red]✗[/] {source.name}", highlight=False)
                    for line in exc.kernel_log[-10:]:
                        console.print(f"  kernel: {line}", highlight=False, markup=False)
                raise
            bar.update(cells, completed=n_cells, description=f"{source.name}: rendering")
            audience = notebook_audience(nbformat.read(source, as_version=4))
            render_html(
                executed_path,
                html_path,
                no_input=audience == "stakeholder",
                resources_dir=source.parent,
                hide_paths=[Path(cwd)],
            )
            seconds = time.perf_counter() - started
            results.append(NotebookResult(source.name, source, executed_path, html_path, audience, seconds))
            bar.advance(task)
            if progress:
                console.print(f"[green]✓[/] {source.name}  {seconds:.1f} s → {html_path}", highlight=False)
                for line in kernel_lines[-10:]:
                    console.print(f"  kernel: {line}", highlight=False, markup=False)
    return results


def _cell_count(source: Path, parameters: Mapping[str, Any]) -> int:
    """Cells the executed notebook will have: the source's, plus the parameters cell papermill injects."""
    import nbformat

    try:
        nb = nbformat.read(source, as_version=4)
    except Exception:  # unreadable: execution reports it
        return 1
    return max(1, len(nb.cells) + (1 if parameters else 0))
