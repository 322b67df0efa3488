"""No leakage: changing or deleting any row after the cutoff leaves every feature at the cutoff unchanged.

Checked twice: from a raw CSV through ``segml ingest`` (so ingest's cleaning rules are part of the check), and
with hypothesis on the clean-transactions level (random post-cutoff rows appended, mutated and deleted).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import INTERACTION_FEATURES, INVOICE_FEATURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segml.config import FeatureConfig, load_experiment
from segml.features import build_features, training_frame

CUTOFF = dt.date(2024, 6, 30)
SPEC = FeatureConfig(threads=1)

# --------------------------------------------------------------------------------------------------------------
# Raw file -> ingest -> features


RAW_HEADER = ["cust", "order_no", "ts", "amt", "qty", "sku"]
RAW_ROWS = [
    ["C001", "1001", "2023-03-02 10:00:00", "120.00", "2", "SKU-1"],
    ["C001", "1001", "2023-03-02 10:00:00", "35.50", "1", "SKU-2"],
    ["C002", "1002", "2023-05-11 14:20:00", "80.00", "1", "SKU-3"],
    ["C003", "1003", "2023-09-30 23:59:59", "15.00", "1", "SKU-1"],
    ["C001", "1004", "2023-12-24 09:00:00", "210.00", "3", "SKU-4"],
    ["C002", "R1002", "2024-01-03 10:00:00", "-80.00", "-1", "SKU-3"],
    ["C004", "1005", "2024-02-14 12:00:00", "55.00", "1", "SKU-5"],
    ["C003", "1006", "2024-03-01 08:00:00", "22.00", "2", "SKU-2"],
    ["C001", "1007", "2024-06-30 23:30:00", "99.00", "1", "SKU-6"],  # on the cutoff day: counts
    ["C005", "1008", "2024-07-01 00:00:00", "40.00", "1", "SKU-1"],  # first post-cutoff row
    ["C004", "1009", "2024-05-20 16:00:00", "61.00", "1", "SKU-5"],  # out of time order in the file
    ["C001", "1010", "2024-07-15 10:00:00", "310.00", "2", "SKU-7"],
    ["C002", "1011", "2024-08-01 10:00:00", "18.00", "1", "SKU-3"],
    ["C003", "1012", "2024-06-29 11:00:00", "44.00", "4", "SKU-8"],
    ["C003", "1013", "2024-09-12 11:00:00", "27.00", "1", "SKU-8"],
    ["C001", "R1010", "2024-07-20 10:00:00", "-310.00", "-2", "SKU-7"],
    ["C006", "1014", "2024-10-01 10:00:00", "75.00", "1", "SKU-9"],
]
CUSTOMERS_CSV = """cust,signup,region
C001,2023-01-15,north
C002,2023-05-01,south
C003,,east
C004,2024-02-01,north
C006,2024-09-01,west
C007,2024-04-01,south
"""
EXPERIMENT_YAML = f"""
description: leakage fixture
data:
  transactions:
    - path: raw/orders.csv
      format: csv
      name: orders
      columns:
        customer_id: cust
        order_id: order_no
        timestamp: ts
        amount: amt
        quantity: qty
        product_id: sku
  customers:
    path: raw/customers.csv
    format: csv
    columns: {{customer_id: cust, signup_date: signup, region: region}}
  cleaning:
    max_date: 2025-12-31
    outliers:
      flag_mad: 3.0
cutoffs:
  calibration_end: {CUTOFF.isoformat()}
  horizon_days: 90
features:
  windows: [30, 90, 180, 365]
  threads: 1
"""


def _is_after_cutoff(row: list[str]) -> bool:
    return dt.date.fromisoformat(row[2][:10]) > CUTOFF


POST = [i for i, row in enumerate(RAW_ROWS) if _is_after_cutoff(row)]


def _with(index: int, column: str, value: str) -> list[list[str]]:
    rows = [list(r) for r in RAW_ROWS]
    rows[index][RAW_HEADER.index(column)] = value
    return rows


def _mutations() -> dict[str, Callable[[], list[list[str]]]]:
    first, second = POST[0], POST[1]
    return {
        "change_amount": lambda: _with(first, "amt", "4321.99"),
        "change_customer_to_existing": lambda: _with(second, "cust", "C002"),
        "change_customer_to_new": lambda: _with(second, "cust", "C999"),
        "change_customer_to_attribute_only": lambda: _with(first, "cust", "C007"),
        "move_later": lambda: _with(first, "ts", "2025-03-01 10:00:00"),
        "change_product_and_order": lambda: [
            *(_with(first, "sku", "SKU-1")[:first]),
            [RAW_ROWS[first][0], "1001", RAW_ROWS[first][2], RAW_ROWS[first][3], "1", "SKU-2"],
            *RAW_ROWS[first + 1 :],
        ],
        "delete_rows": lambda: [r for i, r in enumerate(RAW_ROWS) if i not in POST[::2]],
        "delete_all_post_cutoff_rows": lambda: [r for i, r in enumerate(RAW_ROWS) if i not in POST],
        "duplicate_rows": lambda: [*RAW_ROWS, *(RAW_ROWS[i] for i in POST), RAW_ROWS[POST[-1]]],
        "huge_outlier": lambda: [
            *RAW_ROWS,
            ["C001", "9999", "2024-07-02 10:00:00", "98765432.10", "1", "SKU-1"],
        ],
        "outliers_for_existing_and_new": lambda: [
            *RAW_ROWS,
            ["C003", "9998", "2024-12-01 10:00:00", "5000000", "100", "SKU-2"],
            ["C888", "9997", "2024-12-02 10:00:00", "-7000000", "-100", "SKU-3"],
        ],
        "zero_and_bad_rows": lambda: [
            *RAW_ROWS,
            ["C002", "9996", "2024-07-05 10:00:00", "0", "1", "SKU-1"],
            ["C002", "9995", "2024-07-06 10:00:00", "not-a-number", "1", "SKU-1"],
        ],
    }


def _with_cost(rows: list[list[str]]) -> list[list[str]]:
    """The rows with a line cost column: 70% of the amount (a bad amount gets cost 1)."""
    out = []
    for row in rows:
        try:
            cost = f"{float(row[RAW_HEADER.index('amt')]) * 0.7:.2f}"
        except ValueError:
            cost = "1"
        out.append([*row, cost])
    return out


def _cost_mutations() -> dict[str, Callable[[], list[list[str]]]]:
    """Post-cutoff changes that only a line cost can make."""
    first, second = POST[0], POST[1]
    cost = len(RAW_HEADER)

    def changed(index: int, value: str) -> list[list[str]]:
        rows = _with_cost(RAW_ROWS)
        rows[index][cost] = value
        return rows

    return {
        "change_cost": lambda: changed(first, "39999.50"),
        "cost_above_amount": lambda: changed(second, "1234567"),
        "bad_cost": lambda: changed(first, "n/a"),
    }


def _write_raw(root: Path, rows: list[list[str]]) -> None:
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    header = [*RAW_HEADER, "cost"] if rows and len(rows[0]) > len(RAW_HEADER) else RAW_HEADER
    lines = [",".join(header), *(",".join(r) for r in rows)]
    (raw / "orders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (raw / "customers.csv").write_text(CUSTOMERS_CSV, encoding="utf-8")


def _features_through_ingest(
    root: Path, rows: list[list[str]], *, cost: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Features at the cutoff, the clean transactions ingest wrote and its quarantined row count (``cost``:
    the rows carry a line cost column, mapped to the ``cost`` role)."""
    from segml.ingest import run_ingest

    _write_raw(root, rows)
    experiment = root / "experiments" / "leak.yaml"
    experiment.parent.mkdir(parents=True, exist_ok=True)
    yaml = EXPERIMENT_YAML
    if cost:
        yaml = yaml.replace("        product_id: sku\n", "        product_id: sku\n        cost: cost\n")
    experiment.write_text(yaml, encoding="utf-8")
    cfg = load_experiment(experiment, [], root=root)
    result = run_ingest(cfg, today=dt.date(2025, 12, 31))
    features = build_features(result.transactions_path, CUTOFF, cfg.features, result.customers_path)
    return features, pd.read_parquet(result.transactions_path), len(pd.read_parquet(result.quarantine_path))


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    return _features_through_ingest(tmp_path_factory.mktemp("baseline"), RAW_ROWS)


@pytest.fixture(scope="module")
def baseline(baseline_run) -> pd.DataFrame:
    return baseline_run[0]


def test_raw_fixture_has_rows_on_both_sides(baseline):
    assert 0 < len(POST) < len(RAW_ROWS)
    # C005, C006 and C999 only buy after the cutoff; C006 signs up after it; C007 never buys
    assert baseline["customer_id"].tolist() == ["C001", "C002", "C003", "C004", "C007"]
    assert baseline.set_index("customer_id").loc["C001", "n_purchase_days"] == 3


@pytest.fixture(scope="module")
def baseline_cost_run(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    return _features_through_ingest(tmp_path_factory.mktemp("cost"), _with_cost(RAW_ROWS), cost=True)


def test_cost_fixture_builds_margin_features(baseline_cost_run, baseline):
    features = baseline_cost_run[0]
    margin = [c for c in features.columns if c.startswith("margin_")]
    assert margin == ["margin_total", "margin_30d", "margin_90d", "margin_180d", "margin_365d", "margin_rate"]
    one = features.set_index("customer_id").loc["C001"]
    assert one["margin_total"] == pytest.approx(0.3 * one["monetary_total"])
    pd.testing.assert_frame_equal(features.drop(columns=margin), baseline, check_exact=True)


@pytest.mark.parametrize(
    "mutation", [*sorted(_mutations()), *(f"cost:{name}" for name in sorted(_cost_mutations()))]
)
def test_post_cutoff_changes_do_not_leak_into_margin(tmp_path, baseline_cost_run, mutation):
    baseline_features, baseline_clean, baseline_quarantined = baseline_cost_run
    if mutation.startswith("cost:"):
        rows = _cost_mutations()[mutation.removeprefix("cost:")]()
    else:
        rows = _with_cost(_mutations()[mutation]())
    assert [r for r in rows if not _is_after_cutoff(r)] == [
        r for r in _with_cost(RAW_ROWS) if not _is_after_cutoff(r)
    ]
    features, clean, quarantined = _features_through_ingest(tmp_path, rows, cost=True)
    clean_columns = ["customer_id", "order_id", "timestamp", "amount", "margin", "product_id"]
    changed = (
        not clean[clean_columns].equals(baseline_clean[clean_columns]) or quarantined != baseline_quarantined
    )
    assert changed, "the mutation reached neither the clean file nor the quarantine"
    pd.testing.assert_frame_equal(features, baseline_features, check_exact=True)


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_post_cutoff_changes_in_raw_file_do_not_leak(tmp_path, baseline_run, mutation):
    baseline_features, baseline_clean, baseline_quarantined = baseline_run
    rows = _mutations()[mutation]()
    assert [r for r in rows if not _is_after_cutoff(r)] == [r for r in RAW_ROWS if not _is_after_cutoff(r)]
    features, clean, quarantined = _features_through_ingest(tmp_path, rows)
    clean_columns = ["customer_id", "order_id", "timestamp", "amount", "product_id"]
    changed = (
        not clean[clean_columns].equals(baseline_clean[clean_columns]) or quarantined != baseline_quarantined
    )
    assert changed, "the mutation reached neither the clean file nor the quarantine"
    pd.testing.assert_frame_equal(features, baseline_features, check_exact=True)


# --------------------------------------------------------------------------------------------------------------
# Clean transactions + hypothesis


def _clean_base() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 160
    start = pd.Timestamp(CUTOFF) - pd.Timedelta(days=500)
    seconds = rng.integers(0, 700 * 86400, n)
    frame = pd.DataFrame(
        {
            "customer_id": rng.choice([f"{i:05d}" for i in range(1, 16)], n),
            "order_id": np.where(rng.random(n) < 0.2, None, [f"O{i}" for i in rng.integers(0, 90, n)]),
            "timestamp": start + pd.to_timedelta(seconds, unit="s"),
            "amount": np.round(rng.lognormal(3, 1, n) * np.where(rng.random(n) < 0.1, -1, 1), 2),
            "quantity": np.where(rng.random(n) < 0.1, np.nan, rng.integers(1, 5, n).astype(float)),
            "product_id": np.where(rng.random(n) < 0.2, None, [f"P{i}" for i in rng.integers(0, 12, n)]),
        }
    )
    frame["channel"] = "web"
    frame["source"] = "orders"
    frame["source_row"] = np.arange(1, n + 1)
    frame["is_return"] = frame["amount"] < 0
    frame["is_outlier"] = False
    return frame


CLEAN = _clean_base()
CLEAN_POST = np.flatnonzero(CLEAN["timestamp"].dt.normalize() > pd.Timestamp(CUTOFF))
CLEAN_BASELINE = build_features(CLEAN, CUTOFF, SPEC)
CUSTOMER_POOL = [*sorted(CLEAN["customer_id"].unique())[:5], "90001", "90002"]

post_rows = st.lists(
    st.tuples(
        st.sampled_from(CUSTOMER_POOL),
        st.one_of(st.none(), st.sampled_from(["O1", "O2", "NEW"])),
        st.integers(min_value=1, max_value=800),  # days after the cutoff (day 1 = first day after it)
        st.integers(min_value=0, max_value=86399),
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
        st.one_of(st.none(), st.floats(min_value=-50, max_value=50, allow_nan=False)),
        st.one_of(st.none(), st.sampled_from(["P1", "P2", "PNEW"])),
    ),
    max_size=8,
)


@pytest.mark.filterwarnings("ignore:The behavior of DataFrame concatenation:FutureWarning")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appended=post_rows,
    deleted=st.sets(st.sampled_from(list(CLEAN_POST))),
    new_amounts=st.dictionaries(
        st.sampled_from(list(CLEAN_POST)),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        max_size=5,
    ),
    new_customers=st.dictionaries(
        st.sampled_from(list(CLEAN_POST)), st.sampled_from(CUSTOMER_POOL), max_size=5
    ),
)
def test_post_cutoff_rows_never_change_features(appended, deleted, new_amounts, new_customers):
    assert len(CLEAN_POST) > 10
    frame = CLEAN.copy()
    for index, amount in new_amounts.items():
        frame.loc[index, "amount"] = amount
    for index, customer in new_customers.items():
        frame.loc[index, "customer_id"] = customer
    frame = frame.drop(index=sorted(deleted))
    if appended:
        extra = pd.DataFrame(
            appended,
            columns=["customer_id", "order_id", "days", "second", "amount", "quantity", "product_id"],
        )
        extra["timestamp"] = (
            pd.Timestamp(CUTOFF)
            + pd.to_timedelta(extra["days"], unit="D")
            + pd.to_timedelta(extra["second"], unit="s")
        )
        extra = extra.drop(columns=["days", "second"])
        extra["channel"], extra["source"], extra["source_row"] = "web", "orders", 0
        extra["is_return"], extra["is_outlier"] = extra["amount"] < 0, True
        frame = pd.concat([frame, extra[CLEAN.columns]], ignore_index=True)
    pd.testing.assert_frame_equal(build_features(frame, CUTOFF, SPEC), CLEAN_BASELINE, check_exact=True)


def test_training_frame_features_do_not_see_later_cutoffs_data():
    """In a multi-cutoff frame, the rows of an early cutoff equal features built on data cut at that cutoff."""
    early, late = dt.date(2024, 1, 31), CUTOFF
    frame = training_frame(CLEAN, [early, late], 90, SPEC)
    cut = CLEAN[CLEAN["timestamp"].dt.normalize() <= pd.Timestamp(early)]
    alone = build_features(cut, early, SPEC)
    part = frame[frame["cutoff"] == pd.Timestamp(early)].reset_index(drop=True)[alone.columns]
    pd.testing.assert_frame_equal(part, alone, check_exact=True)


CLEAN_MARGIN = CLEAN.assign(margin=np.round(CLEAN["amount"] * 0.35 - 4.0, 2))  # some lines lose money
CLEAN_MARGIN_BASELINE = build_features(CLEAN_MARGIN, CUTOFF, SPEC)


@pytest.mark.filterwarnings("ignore:The behavior of DataFrame concatenation:FutureWarning")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appended=post_rows,
    appended_margins=st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=8),
    deleted=st.sets(st.sampled_from(list(CLEAN_POST))),
    new_margins=st.dictionaries(
        st.sampled_from(list(CLEAN_POST)),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        max_size=5,
    ),
)
def test_post_cutoff_rows_never_change_margin_features(appended, appended_margins, deleted, new_margins):
    assert [c for c in CLEAN_MARGIN_BASELINE.columns if c.startswith("margin")]
    frame = CLEAN_MARGIN.copy()
    for index, margin in new_margins.items():
        frame.loc[index, "margin"] = margin
    frame = frame.drop(index=sorted(deleted))
    if appended:
        extra = pd.DataFrame(
            appended,
            columns=["customer_id", "order_id", "days", "second", "amount", "quantity", "product_id"],
        )
        extra["timestamp"] = (
            pd.Timestamp(CUTOFF)
            + pd.to_timedelta(extra["days"], unit="D")
            + pd.to_timedelta(extra["second"], unit="s")
        )
        extra["margin"] = appended_margins[: len(extra)]
        extra["channel"], extra["source"], extra["source_row"] = "web", "orders", 0
        extra["is_return"], extra["is_outlier"] = extra["amount"] < 0, False
        frame = pd.concat([frame, extra[CLEAN_MARGIN.columns]], ignore_index=True)
    features = build_features(frame, CUTOFF, SPEC)
    pd.testing.assert_frame_equal(features, CLEAN_MARGIN_BASELINE, check_exact=True)


# --------------------------------------------------------------------------------------------------------------
# Invoices (data.invoices): no invoice event after the cutoff reaches a feature. An event after the cutoff is an
# invoice issued after it, or a payment dated after it (of an invoice issued before it, too).

INVOICE_HEADER = ["inv", "cust", "issued", "due", "paid", "total"]
INVOICE_ROWS = [
    ["V1", "C001", "2024-01-05", "2024-02-04", "2024-02-10", "120.00"],  # paid before the cutoff, late
    ["V2", "C001", "2024-05-01", "2024-05-31", "2024-07-10", "80.00"],  # paid after the cutoff: open, overdue
    ["V3", "C002", "2024-06-10", "2024-07-10", "", "45.00"],  # open, due after the cutoff
    ["V4", "C003", "2024-03-01", "2024-03-31", "2024-03-30", "60.00"],  # on time
    ["V5", "C007", "2024-04-15", "2024-05-15", "", "30.00"],  # never bought: overdue
    ["V6", "C001", "2024-07-05", "2024-08-04", "2024-08-01", "300.00"],  # issued after the cutoff
    ["V7", "C004", "2024-09-01", "2024-10-01", "", "70.00"],  # issued after the cutoff
    ["V8", "C002", "2024-02-01", "2024-03-02", "2024-09-15", "25.00"],  # paid long after the cutoff
]
INVOICES_YAML = """  invoices:
    path: raw/invoices.csv
    format: csv
    columns: {invoice_id: inv, customer_id: cust, issued: issued, due: due, paid: paid, amount: total}
"""


def _invoice_with(changes: dict[tuple[str, str], str]) -> list[list[str]]:
    """The invoice rows with ``(invoice id, column) -> value`` changes."""
    rows = [list(r) for r in INVOICE_ROWS]
    for (invoice, column), value in changes.items():
        row = next(r for r in rows if r[0] == invoice)
        row[INVOICE_HEADER.index(column)] = value
    return rows


def _invoice_mutations() -> dict[str, Callable[[], list[list[str]]]]:
    return {
        "change_payment_after_cutoff": lambda: _invoice_with({("V2", "paid"): "2024-12-01"}),
        "payment_after_cutoff_moved_to_the_day_after": lambda: _invoice_with({("V8", "paid"): "2024-07-01"}),
        "delete_payment_after_cutoff": lambda: _invoice_with({("V2", "paid"): "", ("V8", "paid"): ""}),
        "pay_open_invoices_after_cutoff": lambda: _invoice_with(
            {("V3", "paid"): "2024-07-20", ("V5", "paid"): "2024-08-01"}
        ),
        "change_later_invoice_amount": lambda: _invoice_with({("V6", "total"): "99999.99"}),
        "change_later_invoice_customer": lambda: _invoice_with(
            {("V7", "cust"): "C003", ("V6", "cust"): "C999"}
        ),
        "change_later_invoice_dates": lambda: _invoice_with(
            {("V6", "due"): "2024-07-06", ("V7", "issued"): "2025-01-01", ("V7", "due"): "2025-02-01"}
        ),
        "delete_later_invoices": lambda: [r for r in INVOICE_ROWS if r[0] not in ("V6", "V7")],
        "later_invoice_repeats_an_earlier_id": lambda: [
            *INVOICE_ROWS,
            ["V1", "C003", "2024-08-01", "2024-09-01", "", "5.00"],
            ["V4", "C002", "2024-07-01", "2024-07-31", "2024-07-02", "15.00"],
        ],
        "bad_later_invoices": lambda: [
            *INVOICE_ROWS,
            ["V9", "C001", "2024-08-01", "2024-09-01", "2024-07-31", "10"],  # paid before issued
            ["V10", "C002", "2024-08-01", "2024-07-02", "", "10"],  # due before issued
            ["V11", "C003", "2024-08-01", "2024-09-01", "", "-10"],  # negative
        ],
    }


def _events_through_ingest(
    root: Path, source: str, header: list[str], source_yaml: str, rows: list[list[str]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Features at the cutoff from the raw fixture plus a ``source`` file (``header``, then ``rows``; mapped by
    ``source_yaml``), the clean ``source`` rows and the quarantined ones ingest wrote."""
    from segml.ingest import run_ingest

    _write_raw(root, RAW_ROWS)
    lines = [",".join(header), *(",".join(r) for r in rows)]
    (root / "raw" / f"{source}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    experiment = root / "experiments" / "leak.yaml"
    experiment.parent.mkdir(parents=True, exist_ok=True)
    experiment.write_text(EXPERIMENT_YAML.replace("  cleaning:\n", source_yaml + "  cleaning:\n"))
    cfg = load_experiment(experiment, [], root=root)
    result = run_ingest(cfg, today=dt.date(2025, 12, 31))
    clean_path = getattr(result, f"{source}_path")
    features = build_features(
        result.transactions_path, CUTOFF, cfg.features, result.customers_path, **{source: clean_path}
    )
    quarantine = pd.read_parquet(getattr(cfg.paths, f"quarantine_{source}"))
    return features, pd.read_parquet(clean_path), quarantine


def _assert_no_leak(run: tuple, baseline_run: tuple, source: str) -> None:
    """A mutated run (a change after the cutoff) reached ingest's output, and the features did not move."""
    baseline_features, baseline_clean, baseline_quarantine = baseline_run
    features, clean, quarantine = run
    changed = not clean.equals(baseline_clean) or len(quarantine) != len(baseline_quarantine)
    assert changed, f"the mutation reached neither the clean {source} nor their quarantine"
    pd.testing.assert_frame_equal(features, baseline_features, check_exact=True)


def _invoice_features_through_ingest(
    root: Path, invoice_rows: list[list[str]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _events_through_ingest(root, "invoices", INVOICE_HEADER, INVOICES_YAML, invoice_rows)


@pytest.fixture(scope="module")
def baseline_invoice_run(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _invoice_features_through_ingest(tmp_path_factory.mktemp("invoices"), INVOICE_ROWS)


def test_invoice_fixture_builds_invoice_features(baseline_invoice_run, baseline):
    features, clean, quarantine = baseline_invoice_run
    assert len(clean) == len(INVOICE_ROWS) and quarantine.empty
    pd.testing.assert_frame_equal(features.drop(columns=INVOICE_FEATURES), baseline, check_exact=True)
    one = features.set_index("customer_id").loc["C001"]
    # V1 (paid before the cutoff, 6 days late) and V2 (paid after it: open and overdue at the cutoff)
    assert one["invoices_n"] == 2 and one["days_late_mean"] == 6.0
    assert one["outstanding_amount"] == one["overdue_amount"] == 80.0 and one["paid_on_time_share"] == 0.0


@pytest.mark.parametrize("mutation", sorted(_invoice_mutations()))
def test_post_cutoff_invoice_events_do_not_leak(tmp_path, baseline_invoice_run, mutation):
    run = _invoice_features_through_ingest(tmp_path, _invoice_mutations()[mutation]())
    _assert_no_leak(run, baseline_invoice_run, "invoices")


def _clean_invoices() -> pd.DataFrame:
    rng = np.random.default_rng(23)
    n = 120
    issued = pd.Timestamp(CUTOFF) + pd.to_timedelta(rng.integers(-500, 200, n), unit="D")
    paid = issued + pd.to_timedelta(rng.integers(0, 120, n), unit="D")
    return pd.DataFrame(
        {
            "invoice_id": [f"I{i}" for i in range(n)],
            "customer_id": rng.choice(sorted(CLEAN["customer_id"].unique()), n),
            "issued": issued,
            "due": issued + pd.to_timedelta(rng.integers(0, 60, n), unit="D"),
            "paid": paid.where(rng.random(n) < 0.8),
            "amount": np.round(rng.lognormal(4, 1, n), 2),
            "source_row": np.arange(1, n + 1),
        }
    )


CLEAN_INVOICES = _clean_invoices()
_AFTER = pd.Timestamp(CUTOFF)
#: invoices issued after the cutoff (anything about them may change) and invoices issued by the cutoff but
#: paid after it (their payment may move to any later day, or disappear)
INVOICES_ISSUED_LATER = list(np.flatnonzero(CLEAN_INVOICES["issued"] > _AFTER))
INVOICES_PAID_LATER = list(
    np.flatnonzero((CLEAN_INVOICES["issued"] <= _AFTER) & (CLEAN_INVOICES["paid"] > _AFTER))
)
CLEAN_INVOICE_BASELINE = build_features(CLEAN, CUTOFF, SPEC, invoices=CLEAN_INVOICES)

later_invoices = st.lists(
    st.tuples(
        st.sampled_from(CUSTOMER_POOL),
        st.integers(min_value=1, max_value=400),  # issued this many days after the cutoff
        st.integers(min_value=0, max_value=90),  # due after issue
        st.one_of(st.none(), st.integers(min_value=0, max_value=200)),  # paid after issue
        st.floats(min_value=0, max_value=1e9, allow_nan=False),
    ),
    max_size=8,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appended=later_invoices,
    deleted=st.sets(st.sampled_from(INVOICES_ISSUED_LATER)),
    repaid=st.dictionaries(
        st.sampled_from(INVOICES_PAID_LATER),
        st.one_of(st.none(), st.integers(min_value=1, max_value=500)),  # days after the cutoff, or unpaid
        max_size=6,
    ),
    new_amounts=st.dictionaries(
        st.sampled_from(INVOICES_ISSUED_LATER), st.floats(min_value=0, max_value=1e9), max_size=5
    ),
)
def test_post_cutoff_invoice_events_never_change_features(appended, deleted, repaid, new_amounts):
    assert len(INVOICES_ISSUED_LATER) > 10 and len(INVOICES_PAID_LATER) > 3
    assert CLEAN_INVOICE_BASELINE["outstanding_amount"].gt(0).any()
    frame = CLEAN_INVOICES.copy()
    for index, days in repaid.items():
        frame.loc[index, "paid"] = pd.NaT if days is None else _AFTER + pd.Timedelta(days=days)
    for index, amount in new_amounts.items():
        frame.loc[index, "amount"] = amount
    frame = frame.drop(index=sorted(deleted))
    if appended:
        extra = pd.DataFrame(appended, columns=["customer_id", "days", "due_days", "paid_days", "amount"])
        extra["issued"] = _AFTER + pd.to_timedelta(extra["days"], unit="D")
        extra["due"] = extra["issued"] + pd.to_timedelta(extra["due_days"], unit="D")
        extra["paid"] = extra["issued"] + pd.to_timedelta(extra["paid_days"], unit="D")
        extra["invoice_id"], extra["source_row"] = "NEW", 0
        frame = pd.concat([frame, extra[CLEAN_INVOICES.columns]], ignore_index=True)
    features = build_features(CLEAN, CUTOFF, SPEC, invoices=frame)
    pd.testing.assert_frame_equal(features, CLEAN_INVOICE_BASELINE, check_exact=True)


def test_invoice_training_frame_does_not_see_later_cutoffs_invoices():
    """In a multi-cutoff frame, the invoice features of an early cutoff equal those built from the invoices
    as they stood at that cutoff (issued by then; payments after it erased)."""
    early = dt.date(2024, 1, 31)
    frame = training_frame(CLEAN, [early, CUTOFF], 90, SPEC, invoices=CLEAN_INVOICES)
    as_known = CLEAN_INVOICES[CLEAN_INVOICES["issued"] <= pd.Timestamp(early)].copy()
    as_known["paid"] = as_known["paid"].where(as_known["paid"] <= pd.Timestamp(early))
    alone = build_features(CLEAN, early, SPEC, invoices=as_known)
    part = frame[frame["cutoff"] == pd.Timestamp(early)].reset_index(drop=True)[alone.columns]
    pd.testing.assert_frame_equal(part, alone, check_exact=True)


# --------------------------------------------------------------------------------------------------------------
# Interactions (data.interactions): no event dated after the cutoff day reaches a feature, whatever its kind,
# customer, channel, outcome or score; an event on or before the cutoff day does.

INTERACTION_HEADER = ["cust", "ts", "what", "via", "result", "rating"]
INTERACTION_ROWS = [
    ["C001", "2024-06-30 23:59:00", "Reklamation", "phone", "open", ""],  # on the cutoff day: counts
    ["C001", "2024-05-02 10:00:00", "ticket", "email", "solved", ""],
    ["C001", "2024-04-01 10:00:00", "campaign_send", "email", "", ""],
    ["C001", "2024-04-03 10:00:00", "campaign_response", "email", "clicked", ""],
    ["C002", "2024-06-01 10:00:00", "survey", "web", "", "3"],
    ["C003", "2024-02-10 10:00:00", "Reklamation", "shop", "", ""],
    ["C007", "2024-06-15 10:00:00", "login", "app", "", ""],  # never bought: in the population by signup
    ["C001", "2024-07-01 00:00:00", "Reklamation", "phone", "open", ""],  # the first moment after the cutoff
    ["C002", "2024-08-10 10:00:00", "survey", "web", "", "1"],
    ["C003", "2024-09-01 10:00:00", "campaign_send", "email", "", ""],
    ["C004", "2024-07-15 10:00:00", "visit", "web", "", ""],
]
INTERACTIONS_YAML = """  interactions:
    path: raw/interactions.csv
    format: csv
    kinds: {reklamation: complaint}
    columns: {customer_id: cust, timestamp: ts, kind: what, channel: via, outcome: result, score: rating}
"""
INTERACTION_POST = [i for i, row in enumerate(INTERACTION_ROWS) if _is_after_cutoff(row[:1] + ["", row[1]])]


def _interaction_with(index: int, column: str, value: str) -> list[list[str]]:
    rows = [list(r) for r in INTERACTION_ROWS]
    rows[index][INTERACTION_HEADER.index(column)] = value
    return rows


def _interaction_mutations() -> dict[str, Callable[[], list[list[str]]]]:
    first, second, third = INTERACTION_POST[0], INTERACTION_POST[1], INTERACTION_POST[2]
    return {
        "change_kind": lambda: _interaction_with(first, "what", "ticket"),
        "change_customer_to_existing": lambda: _interaction_with(second, "cust", "C003"),
        "change_customer_to_never_buying": lambda: _interaction_with(third, "cust", "C007"),
        "change_customer_to_unknown": lambda: _interaction_with(first, "cust", "C999"),
        "change_score": lambda: _interaction_with(second, "rating", "10"),
        "change_channel_and_outcome": lambda: [
            *_interaction_with(first, "via", "chat")[:first],
            [*INTERACTION_ROWS[first][:3], "chat", "escalated", ""],
            *INTERACTION_ROWS[first + 1 :],
        ],
        "move_later": lambda: _interaction_with(first, "ts", "2025-02-01 10:00:00"),
        "delete_post_cutoff_events": lambda: [
            r for i, r in enumerate(INTERACTION_ROWS) if i not in INTERACTION_POST
        ],
        "repeat_post_cutoff_events": lambda: [
            *INTERACTION_ROWS,
            *(INTERACTION_ROWS[i] for i in INTERACTION_POST),
        ],
        "add_later_events_of_every_kind": lambda: [
            *INTERACTION_ROWS,
            *(
                ["C001", f"2024-07-{day + 2:02d} 10:00:00", kind, "web", "", "5"]
                for day, kind in enumerate(
                    ["complaint", "ticket", "campaign_send", "campaign_response", "login", "visit", "survey"]
                )
            ),
        ],
        "bad_later_events": lambda: [
            *INTERACTION_ROWS,
            ["C002", "2024-07-02 10:00:00", "gripe", "web", "", ""],  # unknown kind
            ["C002", "2024-07-03 10:00:00", "survey", "web", "", "n/a"],  # bad score
            ["", "2024-07-04 10:00:00", "visit", "web", "", ""],  # no customer
        ],
    }


def _interaction_features_through_ingest(
    root: Path, interaction_rows: list[list[str]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _events_through_ingest(
        root, "interactions", INTERACTION_HEADER, INTERACTIONS_YAML, interaction_rows
    )


@pytest.fixture(scope="module")
def baseline_interaction_run(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _interaction_features_through_ingest(tmp_path_factory.mktemp("interactions"), INTERACTION_ROWS)


def test_interaction_fixture_builds_interaction_features(baseline_interaction_run, baseline):
    features, clean, quarantine = baseline_interaction_run
    assert len(INTERACTION_POST) == 4 and len(clean) == len(INTERACTION_ROWS) and quarantine.empty
    pd.testing.assert_frame_equal(features.drop(columns=INTERACTION_FEATURES), baseline, check_exact=True)
    one = features.set_index("customer_id").loc["C001"]
    assert one["complaints_90d"] == 1 and one["days_since_complaint"] == 0.0 and one["tickets_90d"] == 1
    assert one["response_rate"] == 1.0 and one["interactions_90d"] == 3  # the send is 90 days old
    assert features.set_index("customer_id").loc["C007", "visits_90d"] == 1


@pytest.mark.parametrize("mutation", sorted(_interaction_mutations()))
def test_post_cutoff_interaction_events_do_not_leak(tmp_path, baseline_interaction_run, mutation):
    run = _interaction_features_through_ingest(tmp_path, _interaction_mutations()[mutation]())
    _assert_no_leak(run, baseline_interaction_run, "interactions")


def test_an_event_on_the_cutoff_day_reaches_the_features(tmp_path, baseline_interaction_run):
    """The leak checks are not vacuous: the same kind of change on the cutoff day changes the features."""
    baseline_features = baseline_interaction_run[0]
    features, _, _ = _interaction_features_through_ingest(
        tmp_path, _interaction_with(INTERACTION_POST[0], "ts", "2024-06-30 00:00:00")
    )
    assert features.set_index("customer_id").loc["C001", "complaints_90d"] == 2
    assert not features.equals(baseline_features)


INTERACTION_KINDS = ["complaint", "ticket", "campaign_send", "campaign_response", "login", "visit", "survey"]


def _clean_interactions() -> pd.DataFrame:
    rng = np.random.default_rng(29)
    n = 300
    timestamp = pd.Timestamp(CUTOFF) + pd.to_timedelta(rng.integers(-500 * 86400, 200 * 86400, n), unit="s")
    kind = rng.choice(INTERACTION_KINDS, n)
    return pd.DataFrame(
        {
            "customer_id": rng.choice(sorted(CLEAN["customer_id"].unique()), n),
            "timestamp": timestamp,
            "kind": kind,
            "channel": rng.choice(["web", "phone", None], n),
            "outcome": rng.choice(["solved", "open"], n),
            "score": np.where(kind == "survey", rng.integers(1, 6, n).astype(float), np.nan),
            "source_row": np.arange(1, n + 1),
        }
    )


CLEAN_INTERACTIONS = _clean_interactions()
#: events dated after the cutoff day: anything about them may change
INTERACTIONS_LATER = list(
    np.flatnonzero(CLEAN_INTERACTIONS["timestamp"].dt.normalize() > pd.Timestamp(CUTOFF))
)
CLEAN_INTERACTION_BASELINE = build_features(CLEAN, CUTOFF, SPEC, interactions=CLEAN_INTERACTIONS)
#: customers in the population at the cutoff (they bought by then)
POPULATION = sorted(CLEAN_INTERACTION_BASELINE["customer_id"])

later_events = st.lists(
    st.tuples(
        st.sampled_from(CUSTOMER_POOL),
        st.integers(min_value=1, max_value=800),  # days after the cutoff (day 1 = the first day after it)
        st.integers(min_value=0, max_value=86399),
        st.sampled_from(INTERACTION_KINDS),
        st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
    ),
    max_size=8,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appended=later_events,
    deleted=st.sets(st.sampled_from(INTERACTIONS_LATER)),
    new_kinds=st.dictionaries(
        st.sampled_from(INTERACTIONS_LATER), st.sampled_from(INTERACTION_KINDS), max_size=6
    ),
    new_customers=st.dictionaries(
        st.sampled_from(INTERACTIONS_LATER), st.sampled_from(CUSTOMER_POOL), max_size=6
    ),
    new_scores=st.dictionaries(
        st.sampled_from(INTERACTIONS_LATER), st.floats(min_value=-1e6, max_value=1e6), max_size=6
    ),
)
def test_post_cutoff_interaction_events_never_change_features(
    appended, deleted, new_kinds, new_customers, new_scores
):
    assert len(INTERACTIONS_LATER) > 40
    assert CLEAN_INTERACTION_BASELINE["complaints_365d"].gt(0).any()
    frame = CLEAN_INTERACTIONS.copy()
    for index, kind in new_kinds.items():
        frame.loc[index, "kind"] = kind
    for index, customer in new_customers.items():
        frame.loc[index, "customer_id"] = customer
    for index, score in new_scores.items():
        frame.loc[index, "score"] = score
    frame = frame.drop(index=sorted(deleted))
    if appended:
        extra = pd.DataFrame(appended, columns=["customer_id", "days", "second", "kind", "score"])
        extra["timestamp"] = (
            pd.Timestamp(CUTOFF)
            + pd.to_timedelta(extra["days"], unit="D")
            + pd.to_timedelta(extra["second"], unit="s")
        )
        extra["channel"], extra["outcome"], extra["source_row"] = "web", "open", 0
        extra["score"] = extra["score"].astype("float64")
        frame = pd.concat([frame, extra[CLEAN_INTERACTIONS.columns]], ignore_index=True)
    features = build_features(CLEAN, CUTOFF, SPEC, interactions=frame)
    pd.testing.assert_frame_equal(features, CLEAN_INTERACTION_BASELINE, check_exact=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    customer=st.sampled_from(POPULATION),
    age=st.integers(min_value=0, max_value=89),
    second=st.integers(min_value=0, max_value=86399),
    kind=st.sampled_from(INTERACTION_KINDS),
)
def test_an_event_by_the_cutoff_always_changes_the_features(customer, age, second, kind):
    """Any event of a customer in the population within 90 days up to the cutoff day counts."""
    timestamp = pd.Timestamp(CUTOFF) - pd.Timedelta(days=age) + pd.Timedelta(seconds=second)
    extra = pd.DataFrame(
        [[customer, timestamp, kind, "web", "open", 3.0 if kind == "survey" else np.nan, 0]],
        columns=CLEAN_INTERACTIONS.columns,
    )
    frame = pd.concat([CLEAN_INTERACTIONS, extra], ignore_index=True)
    features = build_features(CLEAN, CUTOFF, SPEC, interactions=frame).set_index("customer_id")
    before = CLEAN_INTERACTION_BASELINE.set_index("customer_id")
    assert features.loc[customer, "interactions_90d"] == before.loc[customer, "interactions_90d"] + 1
    assert features.loc[customer, "days_since_interaction"] <= age
    others = features.drop(index=customer)
    pd.testing.assert_frame_equal(others, before.drop(index=customer), check_exact=True)


def test_interaction_training_frame_does_not_see_later_cutoffs_events():
    """In a multi-cutoff frame, the interaction features of an early cutoff equal those built from the events
    dated by that cutoff."""
    early = dt.date(2024, 1, 31)
    frame = training_frame(CLEAN, [early, CUTOFF], 90, SPEC, interactions=CLEAN_INTERACTIONS)
    as_known = CLEAN_INTERACTIONS[CLEAN_INTERACTIONS["timestamp"].dt.normalize() <= pd.Timestamp(early)]
    alone = build_features(CLEAN, early, SPEC, interactions=as_known)
    part = frame[frame["cutoff"] == pd.Timestamp(early)].reset_index(drop=True)[alone.columns]
    pd.testing.assert_frame_equal(part, alone, check_exact=True)
