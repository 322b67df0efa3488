"""Notebook execution (papermill), self-contained HTML (nbconvert) and the reports index, on dummy notebooks."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from segml import report
from segml.errors import SegmlError

KERNEL = "segml"
KERNELSPEC = {"name": KERNEL, "language": "python", "display_name": KERNEL}


@pytest.fixture(scope="session")
def segml_kernel() -> str:
    """The project kernel, registered in the venv exactly as the Makefile does if it is missing."""
    from jupyter_client.kernelspec import find_kernel_specs

    if KERNEL not in find_kernel_specs():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ipykernel",
                "install",
                "--sys-prefix",
                "--name",
                KERNEL,
                "--display-name",
                KERNEL,
            ],
            check=True,
            capture_output=True,
        )
    return KERNEL


def _notebook(cells: list, *, audience: str | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    if audience:
        nb.metadata["segml"] = {"audience": audience}
    nb.cells = cells
    return nb


def _parameters_cell(source: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def _write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


ANALYST_CODE = "print(f\"greeting={greeting} cutoff={cutoff} marker={os.environ.get('SEGML_TEST_MARKER')}\")"
STAKEHOLDER_CODE = 'print(f"grades for {greeting}: " + " / ".join(grade_names))'


@pytest.fixture(scope="module")
def passing_run(tmp_path_factory, segml_kernel):
    """Two notebooks executed once for the module: an analyst one (code + figure) and a stakeholder one."""
    root = tmp_path_factory.mktemp("passing")
    analyst = _notebook(
        [
            nbformat.v4.new_markdown_cell("# Analyst notebook\n客户分级"),
            _parameters_cell('greeting = "hello"\ncutoff = "2000-01-01"\ngrade_names = []'),
            nbformat.v4.new_code_cell("import os"),
            nbformat.v4.new_code_cell(ANALYST_CODE),
            nbformat.v4.new_code_cell(
                "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
                "import matplotlib.pyplot as plt\n"
                "fig, ax = plt.subplots(figsize=(2, 2))\nax.bar([0, 1], [1, 2])\nplt.show()"
            ),
        ]
    )
    stakeholder = _notebook(
        [
            nbformat.v4.new_markdown_cell("# Stakeholder summary"),
            _parameters_cell('greeting = "hello"\ngrade_names = []'),
            nbformat.v4.new_code_cell(STAKEHOLDER_CODE),
        ],
        audience="stakeholder",
    )
    sources = [
        _write(analyst, root / "nb" / "01_analyst.ipynb"),
        _write(stakeholder, root / "nb" / "02_summary.ipynb"),
    ]
    out_dir = root / "reports" / "smoke"
    before = os.environ.get("SEGML_TEST_MARKER")
    results = report.run_notebooks(
        sources,
        out_dir,
        {
            "greeting": "你好",
            "cutoff": dt.date(2025, 6, 30),
            "grade_names": ("高净值客户", "VIP客户", "普通客户"),
        },
        kernel_name=segml_kernel,
        cwd=root,
        progress=False,
        env={"SEGML_TEST_MARKER": "from-parent"},
    )
    assert os.environ.get("SEGML_TEST_MARKER") == before  # kernel env applied only while running
    return results, out_dir


def test_passing_run_writes_executed_notebooks_and_html(passing_run):
    results, out_dir = passing_run
    assert [r.name for r in results] == ["01_analyst.ipynb", "02_summary.ipynb"]
    assert [r.audience for r in results] == ["analyst", "stakeholder"]
    for result in results:
        assert result.executed_path == out_dir / result.name and result.executed_path.is_file()
        assert result.html_path == out_dir / f"{Path(result.name).stem}.html" and result.html_path.is_file()
    assert not list(out_dir.glob(".*"))  # no working copies left behind
    executed = nbformat.read(results[0].executed_path, as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "greeting=你好 cutoff=2025-06-30 marker=from-parent" in outputs
    assert executed.metadata.papermill.output_path == str(results[0].executed_path)


def test_html_is_self_contained_and_utf8(passing_run):
    results, _ = passing_run
    for result in results:
        text = result.html_path.read_text(encoding="utf-8")
        assert report.external_references(text) == [], result.name
        assert '<meta charset="utf-8"' in text.lower()
        assert "cdnjs" not in text and "require.min.js" not in text and "mathjax" not in text.lower()
    analyst = results[0].html_path.read_text(encoding="utf-8")
    assert "greeting=你好 cutoff=2025-06-30" in analyst  # parameter values visible
    assert "客户分级" in analyst
    assert 'src="data:image/png;base64,' in analyst  # figure embedded
    # injected parameters readable (not \\u-escaped) in the analyst view
    assert "&#39;你好&#39;" in analyst or "'你好'" in analyst


def test_stakeholder_html_has_no_code(passing_run):
    results, _ = passing_run
    # the inlined CSS names every class: look at the markup only
    stakeholder = results[1].html_path.read_text(encoding="utf-8").split("<body", 1)[1]
    analyst = results[0].html_path.read_text(encoding="utf-8").split("<body", 1)[1]
    assert "grades for 你好: 高净值客户 / VIP客户 / 普通客户" in stakeholder
    assert "Stakeholder summary" in stakeholder
    assert "hl-ipython3" not in stakeholder and "jp-InputPrompt" not in stakeholder  # no code, no prompts
    assert "join" not in stakeholder and "grade_names" not in stakeholder
    assert "hl-ipython3" in analyst and "jp-InputPrompt" in analyst  # analyst reports keep the code


def test_failing_notebook_stops_the_run(tmp_path, segml_kernel):
    failing = _notebook(
        [
            nbformat.v4.new_markdown_cell("# Fails"),
            _parameters_cell("threshold = 1"),
            nbformat.v4.new_code_cell("x = threshold"),
            nbformat.v4.new_code_cell('raise ValueError(f"no customers in grade 高净值客户 (x={x})")'),
            nbformat.v4.new_code_cell("print('never')"),
        ]
    )
    later = _notebook([_parameters_cell("threshold = 1"), nbformat.v4.new_code_cell("print('later')")])
    sources = [
        _write(failing, tmp_path / "nb" / "03_fails.ipynb"),
        _write(later, tmp_path / "nb" / "04_later.ipynb"),
    ]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "03_fails.html").write_text("stale report from an earlier run", encoding="utf-8")
    with pytest.raises(report.NotebookFailed) as info:
        report.run_notebooks(
            sources, out_dir, {"threshold": 5}, kernel_name=segml_kernel, cwd=tmp_path, progress=True
        )
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert "03_fails.ipynb" in message
    # the raising cell is the 4th cell of the source notebook (the injected parameters cell is not counted)
    assert "cell 4 (1-based position in the notebook, injected parameters cell not counted" in message
    assert 'raise ValueError(f"no customers in grade 高净值客户' in message
    assert "ValueError: no customers in grade 高净值客户 (x=5)" in message
    assert "not run: 04_later.ipynb" in message
    assert isinstance(err, SegmlError)
    assert (err.notebook, err.cell, err.ename, err.not_run) == (
        "03_fails.ipynb",
        4,
        "ValueError",
        ["04_later.ipynb"],
    )

    partial = nbformat.read(out_dir / "03_fails.ipynb", as_version=4)
    assert partial.metadata.papermill.exception is True
    assert err.executed_path == out_dir / "03_fails.ipynb"
    assert not (out_dir / "04_later.ipynb").exists()
    assert not (out_dir / "03_fails.html").exists()
    assert not list(out_dir.glob(".*"))


def test_missing_kernel_is_a_user_error():
    with pytest.raises(report.KernelNotFound, match="ipykernel install --sys-prefix --name no-such-kernel"):
        report.ensure_kernel("no-such-kernel")


def test_missing_notebook_is_a_user_error(tmp_path):
    with pytest.raises(SegmlError, match="notebook file not found"):
        report.run_notebooks([tmp_path / "nope.ipynb"], tmp_path / "out", {}, cwd=tmp_path, progress=False)


def test_external_references_detects_remote_assets():
    page = (
        '<script src="https://cdn.example.com/x.js"></script><link href=//cdn.example.com/a.css>'
        '<img SRC=\'http://example.com/i.png\'><a href="other.html">ok</a><img src="data:image/png;base64,AA">'
        '<a href="#section">anchor</a>'
    )
    assert report.external_references(page) == [
        "https://cdn.example.com/x.js",
        "//cdn.example.com/a.css",
        "http://example.com/i.png",
    ]


# ------------------------------------------------------------------------------------------------------------
# Index page


def _headline() -> dict:
    grades = pd.DataFrame(
        {
            "grade": ["高净值客户", "VIP客户", "普通客户", "潜力客户"],
            "n": [50, 150, 600, 200],
            "value_share": [0.41, 0.30, 0.19, 0.10],
        }
    )
    comparison = [
        {
            "model": "lightgbm",
            "normalized_gini": 0.612,
            "spearman": 0.55,
            "top10_capture": 0.42,
            "top20_capture": 0.61,
            "decile_mape": 0.18,
            "total_error": -0.03,
            "gini_diff_ci": [0.012, 0.048],
        },
        {
            "model": "rfm",
            "normalized_gini": 0.52,
            "spearman": 0.47,
            "top10_capture": 0.35,
            "gini_diff_ci": None,
        },
    ]
    return {
        "summary": {"cutoff": "2025-06-30", "customers": 1000},
        "grades": grades,
        "comparison": comparison,
        "charts": {"Gain 增益": "iVBORw0KGgo="},
    }


def test_write_index_tables_links_and_chinese(tmp_path):
    out_dir = tmp_path / "reports" / "smoke"
    out_dir.mkdir(parents=True)
    (out_dir / "01_data_quality.html").write_text("<html></html>", encoding="utf-8")
    path = report.write_index(
        out_dir,
        "smoke",
        _headline(),
        [("Data quality 数据质量", out_dir / "01_data_quality.html"), ("Models", out_dir / "03_models.html")],
    )
    assert path == out_dir / "index.html"
    text = path.read_text(encoding="utf-8")
    assert report.external_references(text) == []
    assert '<meta charset="utf-8">' in text
    for grade in ("高净值客户", "VIP客户", "普通客户", "潜力客户"):
        assert re.search(f"<td[^>]*>{grade}</td>", text)
    assert "<td>41.0%</td>" in text and "<td>600</td>" in text
    assert "<th>Ranking quality (normalized Gini)</th>" in text and "<td>0.61</td>" in text
    assert "<td>61.0%</td>" in text  # top20 capture as a percentage
    assert "<td>[0.01, 0.05]</td>" in text  # the CI with two decimals
    assert re.search('<td[^>]*title="rfm"[^>]*>RFM score</td>', text)  # in words; the name as tooltip
    assert 'href="01_data_quality.html">Data quality 数据质量</a>' in text
    assert 'href="03_models.html">Models</a> <span class="missing">(not generated)</span>' in text
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in text
    # column order: preferred comparison columns first
    header = text.split("Model comparison")[1].split("</tr>")[0]
    assert header.index("Model") < header.index("normalized Gini") < header.index("95 % interval")
    assert not re.search(r"<t[hd][^>]*>\s*(nan|None|NaN)\s*</t[hd]>", text)


def test_write_index_groups_reports_by_audience(tmp_path):
    reports = [
        ("01 · Data quality", tmp_path / "01_data_quality.html", "stakeholder"),
        ("03 · Clustering", tmp_path / "03_clustering.html", "analyst"),
        ("07 · Grading", tmp_path / "07_grading_report.html", "stakeholder"),
    ]
    text = report.write_index(tmp_path, "smoke", {}, reports, currency="CNY").read_text(encoding="utf-8")
    managers, analysts = text.split("For sales and management")[1].split("For analysts")
    assert "Data quality" in managers and "Grading" in managers and "Clustering" not in managers
    assert "Clustering" in analysts and "Grading" not in analysts


def test_write_index_refuses_customer_level_rows(tmp_path):
    headline = {"grades": pd.DataFrame({"customer_id": ["c1"], "grade": ["A"]})}
    with pytest.raises(SegmlError, match="customer-level column 'customer_id'"):
        report.write_index(tmp_path, "smoke", headline, [])
    assert not (tmp_path / "index.html").exists()


def test_write_index_minimal(tmp_path):
    text = report.write_index(tmp_path, "empty", {}, []).read_text(encoding="utf-8")
    assert "segml · empty" in text and "<h2>Reports</h2>" in text


@pytest.mark.slow
def test_notebook_logs_a_child_run_under_the_parent(tmp_path, segml_kernel, monkeypatch):
    """End to end: the runner passes child_env to the kernel; the notebook's run nests under the parent."""
    from mlflow import MlflowClient

    from segml import tracking

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    try:
        tracking.configure(tmp_path, "smoke")
        notebook = _notebook(
            [
                _parameters_cell("model_name = 'none'"),
                nbformat.v4.new_code_cell(
                    "from segml import tracking\n"
                    "with tracking.child_run(None, model_name) as run:\n"
                    "    tracking.log_metrics_safe({'normalized_gini': 0.5, 'gini_diff_ci': [0.1, 0.2]})\n"
                    "print(run.info.run_id)"
                ),
            ]
        )
        source = _write(notebook, tmp_path / "nb" / "03_models.ipynb")
        with tracking.parent_run("smoke", {}) as parent_id:
            (result,) = report.run_notebooks(
                [source],
                tmp_path / "reports",
                {"model_name": "lightgbm"},
                kernel_name=segml_kernel,
                cwd=tmp_path,
                progress=False,
                env=tracking.child_env(parent_id),
            )
        executed = nbformat.read(result.executed_path, as_version=4)
        child_id = executed.cells[-1].outputs[-1]["text"].strip()
        child = MlflowClient().get_run(child_id)
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.info.run_name == "lightgbm"
        assert child.data.metrics == {"normalized_gini": 0.5, "gini_diff_ci_lo": 0.1, "gini_diff_ci_hi": 0.2}
    finally:
        tracking.reset()


def test_run_is_quiet_and_reports_cell_progress(tmp_path, segml_kernel, capfd, monkeypatch):
    """The kernel's own log stays off the console; the progress hook sees every cell of the notebook."""
    from segml.report import execute

    seen: list[int] = []
    original = execute._execute_one

    def spy(*args, on_cell=None, **kwargs):
        def record(index, cell):
            seen.append(index)
            on_cell(index, cell)

        return original(*args, on_cell=record, **kwargs)

    monkeypatch.setattr(execute, "_execute_one", spy)
    notebook = _notebook(
        [
            nbformat.v4.new_markdown_cell("# Quiet"),
            _parameters_cell("x = 1"),
            nbformat.v4.new_code_cell("import sys\nprint(x, file=sys.stderr)"),
            nbformat.v4.new_code_cell("print(x)"),
        ]
    )
    source = _write(notebook, tmp_path / "nb" / "01_quiet.ipynb")
    capfd.readouterr()
    (result,) = report.run_notebooks(
        [source], tmp_path / "out", {"x": 2}, kernel_name=segml_kernel, cwd=tmp_path, progress=True
    )
    console = "".join(capfd.readouterr())
    assert "IPKernelApp" not in console and "Kernel is running over TCP" not in console
    assert "KeyboardInterrupt" not in console
    assert "01_quiet.ipynb" in console  # the finished-notebook line
    assert seen == [0, 1, 2, 3, 4]  # markdown, parameters, injected parameters, two code cells
    executed = nbformat.read(result.executed_path, as_version=4)
    assert any(o.get("text") == "2\n" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
