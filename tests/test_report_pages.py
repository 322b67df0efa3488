"""Pages a manager reads: human headers, formatted numbers, no missing-value words, no local path, tables that
fit 1280 px; the resources-and-return table's placeholder costs and incremental view; the grade lists for the
sales team; a quiet, visible `segml run`.

Fast tests cover the formatting helpers and summaries on tiny frames; the slow ones run `segml run` on the
smoke experiment once (module fixture) and parse the rendered HTML."""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_project

from segml import report, summaries, tracking
from segml.policy import GradePolicy, default_policy_mapping
from segml.report.execute import hide_local_paths, kernel_log_lines
from segml.report.formatting import SNAKE_CASE

SEGML = Path(sys.executable).parent / "segml"
MANAGER_PAGES = ("index.html", "01_data_quality.html", "07_grading_report.html")
#: words a cell must never show
MISSING_WORDS = re.compile(r"\b(nan|NaN|None|NaT|inf|Infinity)\b")
#: a number with more than two decimals
LONG_DECIMALS = re.compile(r"\d\.\d{3,}")


class _Page(HTMLParser):
    """Header and data cells, and the visible text outside style/script."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        elif tag in ("th", "td"):
            self._cell = [tag, ""]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1
        elif tag in ("th", "td") and self._cell is not None:
            self.cells.append((self._cell[0], " ".join(self._cell[1].split())))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1] += data
        if not self._skip:
            self.text.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def manager_page_problems(text: str) -> list[str]:
    """What makes a page unfit for a manager: snake_case headers, missing-value words, long decimals."""
    problems = []
    for kind, cell in parse(text).cells:
        if kind == "th" and SNAKE_CASE.match(cell):
            problems.append(f"snake_case header {cell!r}")
        if MISSING_WORDS.search(cell):
            problems.append(f"{kind} {cell!r} shows a missing value")
        if LONG_DECIMALS.search(cell):
            problems.append(f"{kind} {cell!r} has more than two decimals")
    return problems


def absolute_paths(text: str, roots: list[str]) -> list[str]:
    """Local absolute paths in a page: any of ``roots``, or a path-looking token in the visible text."""
    stripped = re.sub(r"data:[^\s\"')]+", "", text)
    found = [root for root in roots if root in stripped]
    visible = " ".join(parse(stripped).text)
    found += re.findall(r"(?<![\w.:/-])/(?:tmp|work|home|root|usr|opt|var|srv|mnt)/[\w./-]+", visible)
    return found


# --------------------------------------------------------------------------------------------------------------
# Fast: formatting helpers


def test_format_value_money_shares_counts_and_missing() -> None:
    assert report.format_value(1234567.891, "money") == "1,234,568"
    assert report.format_value(12.345, "money") == "12.35"
    assert report.format_value(0.1234, "share") == "12.3%"
    assert report.format_value(-0.00004, "share") == "0.0%"  # never "-0.0 %"
    assert report.format_value(np.int64(4200), "count") == "4,200"
    assert report.format_value(1.23456, "number") == "1.23"
    assert report.format_value([-0.0468151, 0.0060013], "interval") == "[-0.05, 0.01]"
    assert report.format_value(True) == "yes"
    assert report.format_value(pd.Timestamp("2025-06-30")) == "2025-06-30"
    for missing in (None, float("nan"), np.nan, pd.NaT, float("inf"), -math.inf, pd.NA, [None, None]):
        assert report.format_value(missing, "money") == "–", missing
    assert report.format_value(3.14159, "number", decimals=5) == "3.14"  # never more than two


def test_present_gives_human_headers_and_text_cells() -> None:
    frame = pd.DataFrame(
        {
            "grade": ["A", "B"],
            "grade_name": ["战略客户 / Strategic", "重点客户 / Key"],
            "n": [39, 115],
            "value_share": [0.634, -0.00001],
            "future_value_total": [406143.49, np.nan],
            "gini_diff_ci": [[-0.0300001, 0.05787], None],
            "some_new_column": [1.23456, np.inf],
        }
    )
    shown = report.present(frame, currency="CNY")
    assert list(shown.columns) == [
        "Grade",
        "Name",
        "Customers",
        "Share of current value",
        "Predicted revenue (CNY)",
        "95 % interval of the Gini difference",
        "Some new column",
    ]
    assert shown.iloc[0].tolist() == [
        "A",
        "战略客户 / Strategic",
        "39",
        "63.4%",
        "406,143",
        "[-0.03, 0.06]",
        "1.23",
    ]
    assert shown.iloc[1].tolist()[3:] == ["0.0%", "–", "–", "–"]
    markup = report.html_table(shown)
    assert manager_page_problems(markup) == []
    assert "<th>Grade</th>" not in markup or 'class="label"' in markup  # text columns left-aligned
    for name in report.formatting.COLUMN_LABELS:
        assert not SNAKE_CASE.match(report.human_label(name, "CNY")), name
    assert report.model_label("spend_tree") == "Spend decision tree"
    assert report.model_label("new_family") == "new family"


def test_table_escapes_and_is_displayable() -> None:
    shown = report.table(pd.DataFrame({"strategy": ["<b>VIP</b> & more"]}))
    assert "&lt;b&gt;VIP&lt;/b&gt; &amp; more" in shown._repr_html_()


def test_local_paths_become_relative_but_embedded_data_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "project"
    page = (
        f"<pre>{root}/experiments/cdnow.yaml\n{sys.prefix}/lib/python3/site-packages/tqdm/auto.py:21</pre>"
        f'<img src="data:image/png;base64,{sys.prefix}/AAAA">'
    )
    hidden = hide_local_paths(page, [root])
    assert "experiments/cdnow.yaml" in hidden and str(root) not in hidden.split("<img")[0]
    assert "lib/python3/site-packages/tqdm/auto.py" in hidden
    assert f"base64,{sys.prefix}/AAAA" in hidden  # data URIs untouched


def test_kernel_log_noise_is_left_out(tmp_path: Path) -> None:
    log = tmp_path / "kernel.log"
    log.write_text(
        "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication ...\n"
        "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.\n"
        "Segmentation fault in libfoo\n",
        encoding="utf-8",
    )
    assert kernel_log_lines(log) == ["Segmentation fault in libfoo"]
    assert kernel_log_lines(tmp_path / "missing.log") == []


# --------------------------------------------------------------------------------------------------------------
# Fast: resources and return, grade lists, data quality in words


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "grade": ["A", "B", "C", "N"],
            "grade_name": ["Strategic", "Key", "Growth", "New"],
            "n": [10, 30, 60, 5],
            "cost_per_customer": [500.0, 150.0, 40.0, 20.0],
            "cost_total": [5000.0, 4500.0, 2400.0, 100.0],
            "future_value_total": [100000.0, 120000.0, 60000.0, 500.0],
            "future_value_mean": [10000.0, 4000.0, 1000.0, 100.0],
        }
    )


def test_default_costs_are_placeholders_and_set_costs_are_not() -> None:
    assert summaries.placeholder_cost_codes(GradePolicy.from_config({}).to_dict()) == [
        "A",
        "B",
        "C",
        "D",
        "E",
        "N",
    ]
    grades = default_policy_mapping()["grades"]
    own = [{**g, "cost_per_customer": c} for g, c in zip(grades, [900, 300, 80, 15, 3], strict=True)]
    policy = GradePolicy.from_config({"grades": own, "new_customer": {"cost_per_customer": 25}}).to_dict()
    assert summaries.placeholder_cost_codes(policy) == []
    partly = [{**g, "cost_per_customer": 900} if g["code"] == "A" else g for g in grades]
    assert summaries.placeholder_cost_codes(GradePolicy.from_config({"grades": partly}).to_dict()) == [
        "B",
        "C",
        "D",
        "E",
        "N",
    ]
    unset = [{k: v for k, v in g.items() if k != "cost_per_customer"} for g in grades]
    assert "A" in summaries.placeholder_cost_codes(GradePolicy.from_config({"grades": unset}).to_dict())


def test_resource_table_shows_revenue_and_the_incremental_view() -> None:
    table = summaries.resource_table(_summary(), ["A", "B", "C", "N"], new_customer_code="N")
    assert table["cost_source"].tolist() == [summaries.PLACEHOLDER_COST] * 3 + [
        summaries.PLACEHOLDER_NEW_CUSTOMER_COST
    ]
    assert "placeholder — set policy.grades[].cost_per_customer" in table["cost_source"].iloc[0]
    np.testing.assert_allclose(table["revenue_per_cost"], [20.0, 120000 / 4500, 25.0, 5.0])
    # A vs B: (10000 - 4000) / (500 - 150); B vs C: (4000 - 1000) / (150 - 40); C is the lowest grade
    np.testing.assert_allclose(table["incremental_revenue_per_cost"].iloc[:2], [6000 / 350, 3000 / 110])
    assert table["incremental_revenue_per_cost"].iloc[2:].isna().all()  # lowest grade and new customers
    set_costs = summaries.resource_table(_summary(), [], new_customer_code="N")
    assert set(set_costs["cost_source"]) == {"set in the experiment"}
    shown = report.present(set_costs, currency="EUR")
    assert "Predicted revenue (EUR)" in shown.columns and not any(SNAKE_CASE.match(c) for c in shown.columns)


def test_resource_table_adds_margin_when_the_data_has_a_cost() -> None:
    summary = _summary().assign(
        future_margin_total=[15000.0, 18000.0, 6000.0, 50.0], future_margin_mean=[1500.0, 600.0, 100.0, 10.0]
    )
    table = summaries.resource_table(summary, [], new_customer_code="N")
    np.testing.assert_allclose(table["margin_per_cost"], [3.0, 4.0, 2.5, 0.5])
    np.testing.assert_allclose(table["incremental_margin_per_cost"].iloc[:2], [900 / 350, 500 / 110])
    assert table["incremental_margin_per_cost"].iloc[2:].isna().all()
    shown = report.present(table, currency="TWD")
    assert "Predicted margin (TWD)" in shown.columns and not any(SNAKE_CASE.match(c) for c in shown.columns)
    assert shown["Predicted margin (TWD)"].iloc[0].startswith("15,000")  # money, with thousands separators
    from segml.report.formatting import column_kind

    assert column_kind("margin_total") == column_kind("revenue_total") == "money"
    assert "margin_total" not in summaries.resource_table(_summary(), [], new_customer_code="N")


def test_predicted_margin_shrinks_each_rate_towards_the_population() -> None:
    features = pd.DataFrame(
        {
            "margin_total": [30.0, -50.0, 10.0, np.nan],
            "gross_spend": [100.0, 100.0, 900.0, np.nan],  # the last one has not bought
        }
    )
    predicted = np.array([200.0, 200.0, 200.0, 200.0])
    population = (30 - 50 + 10) / 1100
    prior = 100.0  # median gross spend of the buyers
    expected_rates = [
        (30 + prior * population) / 200,
        (-50 + prior * population) / 200,
        (10 + prior * population) / 1000,
        population,
    ]
    np.testing.assert_allclose(summaries.predicted_margin(features, predicted), predicted * expected_rates)
    assert summaries.predicted_margin(features.drop(columns="margin_total"), predicted) is None


def test_grade_summary_carries_predicted_margin() -> None:
    from segml.policy import grade_summary

    grades = pd.DataFrame(
        {
            "grade": ["A", "A", "B"],
            "score": [0.9, 0.8, 0.1],
            "grade_name": ["a", "a", "b"],
            "strategy": ["s", "s", "t"],
        }
    )
    table = grade_summary(grades, [1.0, 2.0, 3.0], [10.0, 20.0, 30.0], future_margin=[1.0, 3.0, 5.0])
    by_grade = table.set_index("grade")
    assert by_grade.loc["A", "future_margin_total"] == 4.0 and by_grade.loc["B", "future_margin_mean"] == 5.0


def _grades() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c3", "c1", "c2", "c4", "c5"],
            "grade": ["A", "A", "B", "B", "N"],
            "grade_name": ["战略客户 / Strategic", "战略客户 / Strategic", "Key", "Key", "New"],
            "strategy": ["Dedicated manager, QBR", "Dedicated manager, QBR", "Named", "Named", "Onboard"],
            "predicted_value": [120.0, 950.123456, 40.0, 40.0, np.nan],
            "score": [0.9, 0.95, 0.5, 0.5, np.nan],
            "reason_1": ["spent a lot", "spent more", "bought once", "bought twice", None],
        }
    )


def test_grade_lists_one_csv_per_grade_sorted_and_stable(tmp_path: Path) -> None:
    out = tmp_path / "data" / "processed" / "smoke" / "grade_lists"
    out.mkdir(parents=True)
    (out / "grade_Z.csv").write_text("stale", encoding="utf-8")
    written = summaries.write_grade_lists(_grades(), out, ["A", "B", "C", "N"], currency="CNY")
    assert list(written) == ["A", "B", "N"]
    assert sorted(p.name for p in out.iterdir()) == ["grade_A.csv", "grade_B.csv", "grade_N.csv"]
    raw = written["A"].read_bytes()
    assert raw.startswith("\ufeff".encode())  # spreadsheet programs read the Chinese names
    a = pd.read_csv(written["A"], encoding="utf-8-sig")
    assert list(a.columns) == [
        "Customer",
        "Grade",
        "Grade name",
        "Service strategy",
        "Predicted revenue (CNY)",
        "Main reason",
    ]
    assert a["Customer"].tolist() == ["c1", "c3"]  # highest predicted revenue first
    assert a["Predicted revenue (CNY)"].tolist() == [950.12, 120.0]
    assert pd.read_csv(written["B"], encoding="utf-8-sig")["Customer"].tolist() == ["c2", "c4"]  # ties by id
    assert "score" not in a.columns
    again = summaries.write_grade_lists(_grades(), out, ["A", "B", "C", "N"], currency="CNY")
    assert again["A"].read_bytes() == raw  # byte-identical rerun


def test_data_quality_tables_in_words() -> None:
    dq = {
        "rows_in": 1000,
        "by_reason": {"duplicate_row": 3, "missing_customer_id": 7, "brand_new_reason": 1},
        "rules": {
            "precedence": ["missing_customer_id", "duplicate_row"],
            "duplicates": "auto",
            "max_bad_share": 0.5,
            "min_date": None,
            "outliers": {"quarantine_above": 1000000.0, "flag_threshold_amount": 100055.7498},
        },
        "customers_file": {"rows_in": 800, "rows_kept": 798, "customers_without_transactions": 30},
    }
    reasons = summaries.dq_reason_table(dq)
    assert reasons["reason"].tolist() == ["no customer id", "duplicate of another row", "brand new reason"]
    assert reasons["rows"].tolist() == [7, 3, 1]
    rules = summaries.dq_rules_table(dq)
    assert "Largest share of bad rows accepted" in rules["rule"].tolist()
    assert set(rules["setting"]) >= {"50%", "not set", "1,000,000", "100,056"}
    customers = summaries.dq_customers_table(dq)
    assert customers["value"].tolist() == ["800", "798", "30"]
    assert summaries.dq_customers_table({}).empty
    joined = {
        "sources": [
            {"name": "orders", "joins": []},
            {
                "name": "payments",
                "joins": [
                    {
                        "path": "raw/olist/orders.csv",
                        "on_column": "order_id",
                        "key": "order_id",
                        "lookup_rows": 99441,
                        "lookup_rows_without_key": 0,
                        "rows_unmatched": 12,
                    }
                ],
            },
        ]
    }
    joins = summaries.dq_joins_table(joined)
    assert joins.to_dict(orient="records") == [
        {
            "source": "payments",
            "lookup": "orders.csv",
            "key": "order_id = order_id",
            "lookup rows": 99441,
            "lookup rows without key": 0,
            "rows without a match": 12,
        }
    ]
    assert summaries.dq_joins_table(dq).empty
    for frame in (reasons, rules, customers, joins):
        assert manager_page_problems(report.html_table(report.present(frame))) == []


# --------------------------------------------------------------------------------------------------------------
# Slow: the rendered pages of one `segml run` on the smoke experiment


@pytest.fixture(scope="module")
def smoke_pages():
    """`segml run experiments/smoke.yaml` once in a fresh project: (root, completed process, reports dir)."""
    root = Path(tempfile.mkdtemp(prefix="segml-pages-"))
    make_project(root)
    env = tracking.scrubbed_environ()
    env.pop("SEGML_ROOT", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    result = subprocess.run(
        [str(SEGML), "run", "experiments/smoke.yaml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield root, result, root / "reports" / "smoke"
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_manager_pages_read_like_a_report(smoke_pages) -> None:
    _, _, reports = smoke_pages
    for name in MANAGER_PAGES:
        text = (reports / name).read_text(encoding="utf-8")
        assert manager_page_problems(text) == [], name
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert "Predicted revenue (CNY)" in index  # money headers carry the experiment's currency
    assert re.search(r"<td>\d{1,3}(,\d{3})+</td>", index)  # thousands separators
    assert re.search(r"<td>\d+\.\d%</td>", index)  # shares as percentages
    managers, analysts = index.split("For sales and management")[1].split("For analysts")
    assert "01_data_quality.html" in managers and "07_grading_report.html" in managers
    assert "06_model_comparison.html" in analysts and "07_grading_report.html" not in analysts


@pytest.mark.slow
def test_grading_report_flags_placeholder_costs_and_never_cuts_a_grade(smoke_pages) -> None:
    _, _, reports = smoke_pages
    page = (reports / "07_grading_report.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(page).split())
    assert "placeholder — set policy.grades[].cost_per_customer" in text
    assert "Extra revenue per extra unit of cost" in text and "revenue, not margin" in text
    assert "no grade's service should be reduced because of them" in text
    assert "most likely to pay back" not in text
    # the catalog's wording for the reasons (not the column names)
    cells = [cell for _, cell in parse(page).cells]
    assert "days since the last purchase day" in cells or "number of units bought, net of returns" in cells
    assert "TqdmWarning" not in text  # warnings stay out of stakeholder pages


@pytest.mark.slow
def test_no_page_shows_a_local_path(smoke_pages) -> None:
    root, _, reports = smoke_pages
    roots = [str(root), str(root.resolve()), sys.prefix, str(Path.home()) + "/"]
    pages = sorted(reports.glob("*.html"))
    assert len(pages) >= 9
    for page in pages:
        assert absolute_paths(page.read_text(encoding="utf-8"), roots) == [], page.name


@pytest.mark.slow
def test_comparison_in_06_is_rounded(smoke_pages) -> None:
    _, _, reports = smoke_pages
    cells = [
        cell for _, cell in parse((reports / "06_model_comparison.html").read_text(encoding="utf-8")).cells
    ]
    intervals = [cell for cell in cells if cell.startswith("[")]
    assert intervals and all(re.fullmatch(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", cell) for cell in intervals)
    assert not any(re.search(r"\d\.\d{5,}", cell) for cell in cells)


@pytest.mark.slow
def test_run_is_quiet_on_the_console(smoke_pages) -> None:
    _, result, _ = smoke_pages
    console = result.stdout + result.stderr
    assert "IPKernelApp" not in console and "KeyboardInterrupt" not in console
    assert "Kernel is running over TCP" not in console


@pytest.mark.slow
def test_manager_pages_fit_1280_px(smoke_pages, tmp_path: Path) -> None:
    """Chromium at 1280 px: the page does not scroll sideways and no table or figure sticks out."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium not installed (Debian: apt-get install -y chromium)")
    _, _, reports = smoke_pages
    probe = (
        "<script>window.addEventListener('load', function () { var right = 0;"
        "document.querySelectorAll('table, img').forEach(function (e) {"
        "right = Math.max(right, e.getBoundingClientRect().right); });"
        "document.body.setAttribute('data-widths', document.documentElement.scrollWidth + ' ' + Math.ceil(right));"
        "});</script>"
    )
    for name in MANAGER_PAGES:
        copy = tmp_path / name
        copy.write_text((reports / name).read_text(encoding="utf-8").replace("</body>", probe + "</body>"))
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
            + ["--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
        found = re.search(r'data-widths="(\d+) (\d+)"', dom)
        assert found, f"{name}: no measurement from chromium"
        scroll_width, rightmost = map(int, found.groups())
        assert scroll_width <= 1280 and rightmost <= 1280, (name, scroll_width, rightmost)
