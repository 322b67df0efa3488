"""`segml train` end to end on the smoke experiment: comparison, holdout grade check, current grades."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segml import features
from segml.config import load_experiment
from segml.ingest import run_ingest
from segml.pipeline import load_context, run_pipeline, stages_between
from segml.pipeline.families import MODEL_FAMILIES
from segml.pipeline.selection import compare

COMPARISON_KEYS = {
    "model",
    "normalized_gini",
    "spearman",
    "top10_capture",
    "top20_capture",
    "decile_mape",
    "total_error",
    "gini_diff_ci",
}


@pytest.fixture(scope="module")
def trained(smoke_project: Path):
    cfg = load_experiment(smoke_project / "experiments" / "smoke.yaml", root=smoke_project)
    run_ingest(cfg)
    outputs = run_pipeline(
        cfg, stages=stages_between(until="monitor"), backtest=False, progress=False, track=False
    )
    return cfg, outputs


def test_comparison_json(trained) -> None:
    cfg, outputs = trained
    table = json.loads((cfg.paths.reports / "comparison.json").read_text())
    assert table == outputs.comparison
    names = [row["model"] for row in table]
    assert names == ["rfm", "rfm_sum", "past_spend", "btyd", "clustering", "spend_tree", "potential"]
    for row in table:
        assert set(row) >= COMPARISON_KEYS
        assert 0 < row["normalized_gini"] <= 1
        lo, hi = row["gini_diff_ci"]
        assert lo <= row["gini_diff"] <= hi
    for rfm in table[:2]:
        assert rfm["decile_mape"] is None and rfm["total_error"] is None  # RFM scores are not money
    assert all(row["decile_mape"] is not None for row in table[2:])


def test_every_family_persisted_its_predictions(trained) -> None:
    cfg, _ = trained
    for family in MODEL_FAMILIES:
        frame = pd.read_parquet(cfg.paths.processed / "holdout_predictions" / f"{family}.parquet")
        assert frame["customer_id"].is_unique
        assert np.isfinite(frame.drop(columns="customer_id").to_numpy()).all()
        report = json.loads((cfg.paths.reports / "models" / f"{family}.json").read_text())
        assert report["family"] == family


def test_compare_reads_back_the_same_table(trained) -> None:
    cfg, outputs = trained
    assert compare(load_context(cfg)) == outputs.comparison


def test_grades_cover_every_customer(trained) -> None:
    cfg, outputs = trained
    grades = pd.read_parquet(cfg.paths.processed / "grades.parquet")
    customers = pd.read_parquet(cfg.paths.clean_customers)
    assert set(grades["customer_id"]) == set(customers["customer_id"])
    for column in ("customer_id", "grade", "score", "predicted_value", "matrix_cell", "strategy", "reason_1"):
        assert column in grades.columns
    assert grades["grade"].notna().all()
    assert set(grades["grade"]) <= set("ABCDEN")
    bought = grades["grade"] != "N"
    assert np.isfinite(grades.loc[bought, "score"]).all()
    assert (grades["predicted_value"] >= 0).all()
    assert grades.loc[bought, "reason_1"].str.len().gt(0).all()


def test_grading_one_customer_alone_gives_the_same_grade(trained) -> None:
    """Batch independence: ranks come from reference distributions frozen at training."""
    from segml.models.potential import PotentialValueModel
    from segml.policy import FittedPolicy

    cfg, outputs = trained
    grades = pd.read_parquet(cfg.paths.processed / "grades.parquet").set_index("customer_id")
    model_dir = cfg.paths.processed / "models"
    policy = FittedPolicy.load(model_dir / "policy.yaml")
    model = PotentialValueModel.from_dict(json.loads((model_dir / "potential_production.json").read_text()))
    ctx = load_context(cfg)
    now = features.build_features(
        ctx.transactions_path, ctx.timeline.data_end, cfg.features, ctx.customers_path
    )
    for position in (0, len(now) // 2, len(now) - 1):
        one = now.iloc[[position]].reset_index(drop=True)
        alone = policy.grade(one, model.predict(one)).iloc[0]
        assert alone["grade"] == grades.loc[alone["customer_id"], "grade"]
        assert alone["score"] == pytest.approx(grades.loc[alone["customer_id"], "score"], nan_ok=True)


def test_holdout_grade_check_written(trained) -> None:
    cfg, outputs = trained
    check = json.loads((cfg.paths.reports / "holdout_grades.json").read_text())
    assert isinstance(check["monotone"], bool)
    assert [row["grade"] for row in check["grade_table"]] == list("ABCDE")
    assert check["monotone"] == outputs.holdout_check["monotone"]


def test_unknown_models_key_is_an_error_at_load(smoke_project: Path) -> None:
    from segml.errors import ConfigError

    with pytest.raises(ConfigError, match=r"models\.potential\.objectiv"):
        load_experiment(
            smoke_project / "experiments" / "smoke.yaml",
            ["models.potential.objectiv=tweedie"],
            root=smoke_project,
        )


def test_selection_record_and_grading_evaluation(trained) -> None:
    cfg, outputs = trained
    selection = json.loads((cfg.paths.reports / "selection.json").read_text())
    assert selection == outputs.selection
    assert selection["selected"] == selection["selected_scorer"]
    assert selection["sentence"] and isinstance(selection["fallback"], bool)
    assert selection["weights_chosen"] and abs(sum(selection["weights"].values()) - 1) < 1e-9
    # the money check of the inner validation is recorded, and its sentence is the record's money warning
    check = selection["inner_validation"]["money_check"]
    assert check["potential"]["scorer"] == "potential"
    assert selection["money_warning"] == check["warning"]
    assert (check["warning"] is not None) == (check["worse_decile_mape"] or check["worse_total_error"])
    evaluation = json.loads((cfg.paths.reports / "grading_evaluation.json").read_text())
    assert [g["grading"] for g in evaluation["gradings"]] == [
        "policy",
        "rfm",
        "rfm_sum",
        "past_spend",
        "potential",
    ]
    assert len(evaluation["matrix"]) == 9 and evaluation["selected_scorer"] == selection["selected_scorer"]


def test_a_potential_model_that_loses_inside_calibration_is_not_crowned(trained) -> None:
    """One tree cannot rank as well as the baselines: the fallback is taken and said, and the grades use it."""
    from segml import pipeline

    cfg, _ = trained
    weak = load_experiment(
        cfg.source_path,
        ["models.potential.n_estimators=1", "models.potential.objective=tweedie"],
        root=cfg.root,
    )
    result = pipeline.run_stage("select", weak, track=False)
    selection = result.selection
    assert selection["fallback"] is True
    assert selection["selected_scorer"] != "potential"
    assert "did not beat" in selection["sentence"]
    pipeline.run_stage("select", cfg, track=False)  # leave the module's outputs as they were
