"""Ingest of the interactions file (``data.interactions``): clean events, their quarantine and the DQ report
block, through the Python API and ``segml ingest``; the ``kinds:`` mapping; an experiment without interactions
is unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import ingest_error
from typer.testing import CliRunner

from segml.cli import app
from segml.config import (
    INTERACTION_KINDS,
    CleaningRules,
    CustomerSource,
    InteractionSource,
    TransactionSource,
    load_experiment,
)
from segml.errors import ConfigError, InputFileError
from segml.ingest import CLEAN_INTERACTION_COLUMNS, InteractionReason, ingest_frames, run_ingest

TRANSACTIONS_CSV = "id,ts,value\nA,2024-01-05,10\nB,2024-02-01,20\nA,2024-03-01,5\n"
CUSTOMERS_CSV = "cust,signup\nA,2023-12-01\nK,2024-01-15\n"
INTERACTIONS_CSV = """who,when,what,via,result,rating
A,2024-01-02 10:00,Beschwerde,phone,open,
A,2024-02-03,campaign_send,email,,
A,2024-02-04 08:30,Klick,email,clicked,
B,2024-03-01,survey,web,,7.5
K,2024-03-02,LOGIN,app,,
Q,2024-03-03,visit,web,,
"""
EXPERIMENT = """\
data:
  transactions:
    - path: raw/tx.csv
      columns: {{customer_id: id, timestamp: ts, amount: value}}
{customers}{interactions}
  cleaning:
    max_date: 2024-06-30
cutoffs:
  calibration_end: 2024-03-31
features:
  threads: 1
"""
CUSTOMERS_YAML = """\
  customers:
    path: raw/customers.csv
    columns: {customer_id: cust, signup_date: signup}
"""
INTERACTIONS_YAML = """\
  interactions:
    path: raw/interactions.csv
    kinds: {Beschwerde: complaint, klick: campaign_response}
    columns: {customer_id: who, timestamp: when, kind: what, channel: via, outcome: result, score: rating}"""
ROLES = {
    "customer_id": "who",
    "timestamp": "when",
    "kind": "what",
    "channel": "via",
    "outcome": "result",
    "score": "rating",
}
TX = pd.DataFrame({"id": ["A", "B"], "ts": ["2024-01-05", "2024-02-01"], "value": ["10", "20"]})
TX_SOURCE = TransactionSource(
    path="tx.csv", columns={"customer_id": "id", "timestamp": "ts", "amount": "value"}
)
RULES = CleaningRules(max_date=dt.date(2024, 6, 30), min_date=dt.date(2000, 1, 1))


def _project(
    root: Path,
    *,
    interactions: bool,
    customers: bool = True,
    interactions_csv: str = INTERACTIONS_CSV,
    interactions_yaml: str = INTERACTIONS_YAML,
) -> Path:
    (root / "raw").mkdir(parents=True, exist_ok=True)
    (root / "raw" / "tx.csv").write_text(TRANSACTIONS_CSV, encoding="utf-8")
    (root / "raw" / "customers.csv").write_text(CUSTOMERS_CSV, encoding="utf-8")
    (root / "raw" / "interactions.csv").write_text(interactions_csv, encoding="utf-8")
    experiment = root / "experiments" / "exp.yaml"
    experiment.parent.mkdir(parents=True, exist_ok=True)
    experiment.write_text(
        EXPERIMENT.format(
            customers=CUSTOMERS_YAML if customers else "",
            interactions=interactions_yaml if interactions else "",
        ),
        encoding="utf-8",
    )
    return experiment


def _frames(rows: list[list[str]], **source: object) -> pd.DataFrame:
    raw = pd.DataFrame(rows, columns=list(ROLES.values()))
    result = ingest_frames(
        [TX],
        [TX_SOURCE],
        RULES,
        interactions=raw,
        interaction_source=InteractionSource(path="interactions.csv", columns=dict(ROLES), **source),  # type: ignore[arg-type]
    )
    return result


def test_clean_interactions_and_report(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path, interactions=True), root=tmp_path)
    result = run_ingest(cfg)
    assert result.interactions_path == cfg.paths.clean_interactions
    assert result.interactions_path == tmp_path / "data/interim/exp/interactions.parquet"
    clean = pd.read_parquet(result.interactions_path)
    assert list(clean.columns) == list(CLEAN_INTERACTION_COLUMNS)
    assert str(clean["timestamp"].dtype).startswith("datetime64") and clean["score"].dtype == "float64"
    assert clean["customer_id"].tolist() == ["A", "A", "A", "B", "K", "Q"]
    # the file's own words map through kinds: (ignoring case), segml kinds count as themselves (any case)
    assert clean["kind"].tolist() == [
        "complaint",
        "campaign_send",
        "campaign_response",
        "survey",
        "login",
        "visit",
    ]
    assert clean.loc[0, "timestamp"] == pd.Timestamp("2024-01-02 10:00")
    assert clean["channel"].tolist() == ["phone", "email", "email", "web", "app", "web"]
    assert clean["outcome"].isna().tolist() == [False, True, False, True, True, True]
    assert clean.loc[3, "score"] == 7.5 and clean["score"].isna().sum() == 5
    block = json.loads(cfg.paths.dq_report.read_text())["interactions"]
    assert block == result.report["interactions"]
    assert block["rows_in"] == 6 and block["rows_kept"] == 6 and block["rows_quarantined"] == 0
    assert block["by_reason"] == {} and block["unknown_kind_values"] == {}
    assert block["by_kind"] == {
        "complaint": 1,
        "campaign_send": 1,
        "campaign_response": 1,
        "login": 1,
        "visit": 1,
        "survey": 1,
    }
    # Q is in neither the transactions nor the customers file; K is a customer without transactions (known)
    assert block["unknown_customer"] == block["unknown_customer_ids"] == 1
    assert block["kinds"] == {"Beschwerde": "complaint", "klick": "campaign_response"}
    assert pd.read_parquet(cfg.paths.quarantine_interactions).empty


def test_unknown_customer_without_a_customers_file(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path, interactions=True, customers=False), root=tmp_path)
    block = run_ingest(cfg).report["interactions"]
    assert (
        block["unknown_customer"] == block["unknown_customer_ids"] == 2
    )  # K and Q: only the transactions say who is a customer
    assert block["rows_kept"] == 6  # counted, never dropped


def test_every_reason_and_rows_in_equal_kept_plus_quarantined() -> None:
    rows = [
        ["A", "2024-01-02 10:00", "complaint", "phone", "open", ""],
        ["A", "2024-01-02 10:00", " COMPLAINT ", "phone", "open", ""],  # duplicate_event of row 1
        ["A", "2024-01-02 10:00", "complaint", "email", "open", ""],  # another channel: kept
        ["", "2024-01-03", "visit", "web", "", ""],  # missing_customer_id
        ["B", "soon", "visit", "web", "", ""],  # bad_timestamp
        ["B", "", "visit", "web", "", ""],  # bad_timestamp (empty)
        ["B", "2024-07-01 00:00", "visit", "web", "", ""],  # future_timestamp (after max_date)
        ["B", "1999-12-31 23:59", "visit", "web", "", ""],  # timestamp_out_of_range (before min_date)
        ["B", "2024-01-03", "poke", "web", "", ""],  # unknown_kind
        ["B", "2024-01-04", "", "web", "", ""],  # unknown_kind (empty)
        ["B", "2024-01-05", "survey", "web", "", "great"],  # bad_score
        ["B", "2024-01-06", "survey", "web", "", "inf"],  # bad_score (not finite)
        ["B", "2024-01-07", "survey", "web", "", "4"],
        ["B", "2024-01-07", "survey", "web", "", "5"],  # another score: kept
        ["B", "2024-06-30 23:59", "survey", "web", "", "4"],  # the max_date day itself: kept
        ["B", "2024-01-07", "survey", "web", "", "4"],  # duplicate_event of row 13
        [
            "B",
            "whenever",
            "Fax",
            "web",
            "",
            "",
        ],  # ignored_kind (set aside: its bad timestamp does not matter)
    ]
    result = _frames(rows, kinds={"fax": "ignore"})
    block = result.report["interactions"]
    assert block["rows_in"] == len(rows) == block["rows_kept"] + block["rows_quarantined"]
    assert block["rows_kept"] == len(result.interactions)
    assert block["rows_quarantined"] == len(result.quarantine_interactions)
    reasons = dict(
        zip(
            result.quarantine_interactions["source_row"],
            result.quarantine_interactions["reason"],
            strict=True,
        )
    )
    assert reasons == {
        2: "duplicate_event",
        4: "missing_customer_id",
        5: "bad_timestamp",
        6: "bad_timestamp",
        7: "future_timestamp",
        8: "timestamp_out_of_range",
        9: "unknown_kind",
        10: "unknown_kind",
        11: "bad_score",
        12: "bad_score",
        16: "duplicate_event",
        17: "ignored_kind",
    }
    assert set(block["by_reason"]) == {r.value for r in InteractionReason} - {"malformed_row"}
    assert sum(block["by_reason"].values()) == block["rows_quarantined"]
    assert sorted(result.interactions["source_row"]) == [1, 3, 13, 14, 15]
    assert block["by_kind"] == {"complaint": 2, "survey": 3}
    assert block["unknown_kind_values"] == {"poke": 1}
    # the quarantine keeps the original text of the row
    assert result.quarantine_interactions.set_index("source_row").loc[11, "rating"] == "great"


def test_kinds_mapping_is_trimmed_case_blind_and_may_rename_a_segml_kind() -> None:
    rows = [
        ["A", "2024-01-02", "  reklamation ", "", "", ""],
        ["A", "2024-01-03", "REKLAMATION", "", "", ""],
        ["A", "2024-01-04", "Visit", "", "", ""],  # a segml kind in another case counts as itself
        ["A", "2024-01-05", "login", "", "", ""],  # mapped by kinds: to visit
        ["A", "2024-01-06", "newsletter", "", "", ""],
        ["A", "2024-01-07", "Ticket", "", "", ""],
    ]
    result = _frames(
        rows, kinds={"Reklamation": "complaint", "Login": "visit", "newsletter": "campaign_send"}
    )
    assert result.interactions["kind"].tolist() == [
        "complaint",
        "complaint",
        "visit",
        "visit",
        "campaign_send",
        "ticket",
    ]
    assert result.report["interactions"]["by_reason"] == {}


def test_kinds_mapped_to_ignore_are_set_aside_and_never_refuse_the_file() -> None:
    """An export full of event types segml does not model: ``kinds: {Fax: ignore}`` sets them aside as
    ``ignored_kind`` (counted, whatever else is wrong with them) instead of refusing the file."""
    rows = [["A", "2024-01-02", "Complaint", "", "", ""]]
    rows += [["A", f"2024-01-{day:02d}", "Fax", "", "", ""] for day in range(3, 20)]
    rows += [["A", "not a date", "fax", "", "", ""], ["", "2024-01-21", "FAX", "", "", "x"]]
    with pytest.raises(InputFileError, match="not known kinds"):
        _frames(rows, kinds={"complaint": "complaint"})
    result = _frames(rows, kinds={"Fax": "ignore"})
    report = result.report["interactions"]
    assert result.interactions["kind"].tolist() == ["complaint"]
    assert report["by_reason"] == {"ignored_kind": 19}
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"] == 20
    assert report["by_kind"] == {"complaint": 1}
    with pytest.raises(ConfigError, match="or ignore to set the rows aside"):
        InteractionSource(path="x.csv", columns=dict(ROLES), kinds={"Fax": "skip"}).check("data.interactions")


def test_optional_roles_absent_are_null_columns() -> None:
    raw = pd.DataFrame(
        {"who": ["A", "B"], "when": ["2024-01-02", "2024-01-03"], "what": ["ticket", "survey"]}
    )
    source = InteractionSource(
        path="interactions.csv", columns={"customer_id": "who", "timestamp": "when", "kind": "what"}
    )
    result = ingest_frames([TX], [TX_SOURCE], RULES, interactions=raw, interaction_source=source)
    clean = result.interactions
    assert list(clean.columns) == list(CLEAN_INTERACTION_COLUMNS)
    assert clean[["channel", "outcome", "score"]].isna().all().all()
    assert clean["kind"].tolist() == ["ticket", "survey"]


def test_parquet_file_with_typed_columns(tmp_path: Path) -> None:
    experiment = _project(
        tmp_path,
        interactions=True,
        interactions_yaml=INTERACTIONS_YAML.replace("interactions.csv", "interactions.parquet"),
    )
    pd.DataFrame(
        {
            "who": ["A", "A", "B", "B"],
            "when": pd.to_datetime(
                ["2024-01-02 10:00", "2024-02-03 00:00", "2024-03-01 00:00", "2024-08-01 00:00"]
            ),
            "what": ["Beschwerde", "ticket", "survey", "visit"],
            "via": ["phone", None, "web", "web"],
            "result": [None, "solved", None, None],
            "rating": [None, None, 3.0, None],
        }
    ).to_parquet(tmp_path / "raw" / "interactions.parquet", index=False)
    cfg = load_experiment(experiment, root=tmp_path)
    result = run_ingest(cfg)
    block = result.report["interactions"]
    assert block["format"] == "parquet" and block["rows_kept"] == 3
    assert block["by_reason"] == {"future_timestamp": 1}
    clean = pd.read_parquet(result.interactions_path)
    assert clean["kind"].tolist() == ["complaint", "ticket", "survey"] and clean.loc[2, "score"] == 3.0


def test_without_interactions_outputs_are_unchanged(tmp_path: Path) -> None:
    plain = load_experiment(_project(tmp_path / "plain", interactions=False), root=tmp_path / "plain")
    rich = load_experiment(_project(tmp_path / "rich", interactions=True), root=tmp_path / "rich")
    today = dt.date(2024, 6, 30)
    plain_result, rich_result = run_ingest(plain, today=today), run_ingest(rich, today=today)
    assert plain_result.interactions_path is None and "interactions" not in plain_result.report
    for name in ("transactions.parquet", "quarantine.parquet", "customers.parquet"):
        assert (plain.paths.interim / name).read_bytes() == (rich.paths.interim / name).read_bytes()
    without = {k: v for k, v in rich_result.report.items() if k != "interactions"}
    same_paths = json.dumps(without, sort_keys=True).replace(str(tmp_path / "rich"), str(tmp_path / "plain"))
    assert same_paths == json.dumps(plain_result.report, sort_keys=True)
    # interactions from an earlier run with another configuration do not linger
    clean_file = rich.paths.clean_interactions
    assert clean_file.is_file() and rich.paths.quarantine_interactions.is_file()
    _project(tmp_path / "rich", interactions=False)
    run_ingest(load_experiment(tmp_path / "rich" / "experiments" / "exp.yaml", root=tmp_path / "rich"))
    assert not clean_file.exists() and not rich.paths.quarantine_interactions.exists()


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    cfg = load_experiment(_project(tmp_path, interactions=True), root=tmp_path)
    run_ingest(cfg)
    first = cfg.paths.clean_interactions.read_bytes()
    run_ingest(cfg)
    assert cfg.paths.clean_interactions.read_bytes() == first


@pytest.mark.parametrize(
    ("replace", "words"),
    [
        (("kind: what, ", ""), r"data.interactions.columns: role 'kind' must be mapped"),
        (("score: rating}", "score: rating, mood: via}"), r"data.interactions.columns: unknown role 'mood'"),
        (
            ("klick: campaign_response", "klick: click"),
            r"data.interactions.kinds.klick: 'click' is not a segml kind",
        ),
        (("kinds: {", "kinds: {beschwerde: ticket, "), r"data.interactions.kinds.Beschwerde: same value"),
    ],
)
def test_config_errors_at_load(tmp_path: Path, replace: tuple[str, str], words: str) -> None:
    experiment = _project(tmp_path, interactions=True)
    experiment.write_text(experiment.read_text().replace(*replace), encoding="utf-8")
    with pytest.raises(ConfigError, match=words):
        load_experiment(experiment, root=tmp_path)


def test_frame_entry_checks_the_source_too() -> None:
    with pytest.raises(ConfigError, match="data.interactions.kinds.x: 'gripe' is not a segml kind"):
        _frames([["A", "2024-01-02", "x", "", "", ""]], kinds={"x": "gripe"})
    with pytest.raises(ValueError, match="without interaction_source"):
        ingest_frames([TX], [TX_SOURCE], interactions=pd.DataFrame({"a": [1]}))


@pytest.mark.parametrize(
    ("csv_text", "columns", "words"),
    [
        (
            INTERACTIONS_CSV,
            {"channel": "medium"},
            r"interactions.csv: column 'medium' \(role channel\) not found",
        ),
        (
            INTERACTIONS_CSV,
            {"timestamp": "what"},
            r"column 'what' \(role timestamp\): 6 of 6 rows are not dates",
        ),
        (
            INTERACTIONS_CSV,
            {"kind": "via"},
            r"column 'via' \(role kind\): 6 of 6 rows are not known kinds \(most frequent: 'email' \(2\), 'web' \(2\), 'app' \(1\)\) — wrong column, or map them under data.interactions.kinds \(kinds: complaint, ",
        ),
        (INTERACTIONS_CSV, {"score": "what"}, r"column 'what' \(role score\): 6 of 6 rows are not numbers"),
        (INTERACTIONS_CSV.replace("\nA,", "\n,"), {}, r"role customer_id\): 3 of 6"),
    ],
)
def test_mostly_bad_file_is_refused_in_one_line(
    tmp_path: Path, csv_text: str, columns: dict[str, str], words: str
) -> None:
    experiment = _project(tmp_path, interactions=True, interactions_csv=csv_text)
    overrides = [f"data.interactions.columns.{role}={column}" for role, column in columns.items()]
    cfg = load_experiment(experiment, overrides, root=tmp_path)
    if not columns:  # half the customer ids empty: refused only when more than max_bad_share are bad
        cfg.data.cleaning.max_bad_share = 0.4
    with pytest.raises(InputFileError, match=words) as caught:
        run_ingest(cfg)
    assert "\n" not in str(caught.value)


def test_policy_may_name_interaction_features_only_with_interactions(tmp_path: Path) -> None:
    experiment = _project(tmp_path, interactions=True)
    load_experiment(experiment, ["models.clustering.features=[complaints_90d]"], root=tmp_path)
    _project(tmp_path, interactions=False)
    with pytest.raises(ConfigError, match="'complaints_90d' is not built by this configuration"):
        load_experiment(experiment, ["models.clustering.features=[complaints_90d]"], root=tmp_path)


def test_kind_vocabulary_and_a_customers_frame_in_the_frame_entry() -> None:
    assert INTERACTION_KINDS == (
        "complaint",
        "ticket",
        "campaign_send",
        "campaign_response",
        "login",
        "visit",
        "survey",
    )
    customer_source = CustomerSource(path="c.csv", columns={"customer_id": "cust"})
    result = ingest_frames(
        [TX],
        [TX_SOURCE],
        RULES,
        customers=pd.DataFrame({"cust": ["K"]}),
        customer_source=customer_source,
        interactions=pd.DataFrame(
            {"who": ["K", "Z"], "when": ["2024-01-02", "2024-01-02"], "what": ["visit"] * 2}
        ),
        interaction_source=InteractionSource(
            path="i.csv", columns={"customer_id": "who", "timestamp": "when", "kind": "what"}
        ),
    )
    assert result.report["interactions"]["unknown_customer"] == 1  # K is in the customers file


def test_cli_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    experiment = _project(tmp_path, interactions=True, interactions_csv="who,when,what,via,result,rating\n")
    runner = CliRunner()
    last = ingest_error(runner, experiment)
    assert "interactions.csv" in last and "no data rows" in last
    _project(tmp_path, interactions=True)
    assert "'missing' (role kind) not found" in ingest_error(
        runner, experiment, "data.interactions.columns.kind=missing"
    )
    assert "not a segml kind" in ingest_error(runner, experiment, "data.interactions.kinds.klick=click")
    result = runner.invoke(app, ["ingest", str(experiment)])
    assert result.exit_code == 0, result.output
