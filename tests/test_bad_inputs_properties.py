"""Property checks: any CSV is accounted for row by row, and no manifest path escapes the artifact."""

from __future__ import annotations

import datetime as dt
import posixpath
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segml.artifact.manifest import check_relative_path
from segml.config import CleaningRules, CutoffConfig, DataConfig, ExperimentConfig, TransactionSource
from segml.ingest import run_ingest

FIELDS = st.sampled_from(
    ["c1", "c2", "007", "NULL", "N/A", "", " ", "2024-01-05", "2024-02-30", "NaT", "12.5", "-3", "abc", "NaN",
     "inf", "0", '"q"', '"a,b"', "x y"]
)  # fmt: skip
LINE = st.lists(FIELDS, min_size=1, max_size=5).map(",".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, min_size=1, max_size=30))
def test_every_csv_line_is_kept_or_quarantined(lines: list[str]) -> None:
    """Whatever the lines hold (short, long, quoted, null tokens), rows_in is the number of data lines and
    rows_in == rows_kept + rows_quarantined; a malformed line keeps its raw text."""
    lines = [line for line in lines if line.strip()]  # DuckDB skips blank lines
    if not lines:
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "tx.csv"
        path.write_text("id,ts,amount\n" + "\n".join(lines) + "\n", encoding="utf-8")
        source = TransactionSource(
            path=str(path), columns={"customer_id": "id", "timestamp": "ts", "amount": "amount"}
        )
        cfg = ExperimentConfig(
            data=DataConfig(transactions=[source], cleaning=CleaningRules(max_bad_share=1.0)),
            cutoffs=CutoffConfig(calibration_end=dt.date(2024, 1, 2)),
            name="p",
            root=root,
        )
        try:
            result = run_ingest(cfg, today=dt.date(2025, 1, 1))
        except Exception as exc:  # only a one-line user error may stop it
            from segml.errors import SegmlError

            assert isinstance(exc, SegmlError), repr(exc)
            assert "\n" not in str(exc)
            return
        report = result.report
        assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
        quarantine = pd.read_parquet(result.quarantine_path)
        malformed = quarantine[quarantine["reason"] == "malformed_row"]
        assert malformed["raw_line"].notna().all()
        if not any('"' in line for line in lines):  # without quotes every line is one row
            assert report["rows_in"] == len(lines)
            for _, row in malformed.iterrows():
                assert lines[int(row["source_row"]) - 1] == row["raw_line"]


PARTS = st.sampled_from(["a", "b.json", "..", ".", "", "__pycache__", "x\\y", "C:", "/", "é"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(PARTS, min_size=1, max_size=5), absolute=st.booleans())
def test_an_accepted_manifest_path_never_leaves_the_artifact(parts: list[str], absolute: bool) -> None:
    relative = ("/" if absolute else "") + "/".join(parts)
    if check_relative_path(relative) is not None:
        return
    root = Path("/artifact/root")
    resolved = Path(posixpath.normpath(str(root / relative)))
    assert resolved.is_relative_to(root) and resolved != root
    assert relative == posixpath.normpath(relative) and not relative.startswith("/")
    assert ".." not in relative.split("/")


@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.sampled_from(["sha256", "bytes", "x"]),
                                       st.one_of(st.integers(), st.text(max_size=3)), max_size=3)))  # fmt: skip
def test_a_malformed_manifest_entry_is_an_artifact_error(value) -> None:
    """Any entry that is not ``{"sha256": <64 hex>, "bytes": <int>}`` is refused as an ArtifactError."""
    import json

    import pytest

    from segml.artifact.manifest import ArtifactError, manifest_text, verify

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a.json").write_text("{}\n")
        document = {
            "format": "segml.grading_artifact",
            "format_version": 1,
            "name": "n",
            "version": "1.0.0",
            "files": {"a.json": value},
        }
        (root / "manifest.json").write_text(manifest_text(document))
        with pytest.raises(ArtifactError):
            verify(root)
        json.loads((root / "manifest.json").read_text())
