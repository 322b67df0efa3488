"""Every case of the bad-input matrix (``tests/bad_inputs.py``) through the real CLI, and the doc generated
from it (``docs/bad_inputs.md``)."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from bad_inputs import (
    ARTIFACT_CASES,
    GOOD,
    HEADER,
    INGEST_CASES,
    INTERACTION_COLUMNS,
    INTERACTION_KINDS_MAP,
    INVOICE_COLUMNS,
    Case,
    render_markdown,
)
from conftest import REPO, make_project
from test_artifact import _train  # ingest + train the smoke experiment, as test_artifact does
from typer.testing import CliRunner

from segml.artifact import export_artifact
from segml.artifact.manifest import MANIFEST, manifest_text
from segml.cli import app
from segml.storage import sha256_file

runner = CliRunner()

EXPERIMENT = """\
data:
  transactions:
    - path: raw/{file}
      columns: {columns}
{source}
{invoices}
{interactions}
  cleaning:
    max_date: 2030-12-31
    min_date: 2000-01-01
{cleaning}
cutoffs:
  calibration_end: 2024-01-15
features:
  threads: 1
"""


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def _parquet(case: Case) -> bytes:
    rows = [line.split(",") for line in GOOD.splitlines()]
    frame = pd.DataFrame(rows, columns=HEADER.strip().split(","))
    if case.id == "parquet-case-ambiguous":
        frame.insert(2, "Value", frame["value"])
    else:
        frame.loc[len(frame)] = ["NULL", "2024-01-05", "3", "o99"]
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert errors[0] == output.strip().splitlines()[-1], output
    return errors[0]


def _check(case: Case, exit_code: int, output: str) -> None:
    if case.outcome == "error":
        assert exit_code == 2, output
        line = _error_line(output)
        for word in case.expect:
            assert word in line, (word, line)
    else:
        assert exit_code == 0, output
        assert "Traceback" not in output


def _marks(case: Case) -> list:
    return [pytest.mark.slow] if case.slow else []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in INGEST_CASES])
def test_ingest_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    (tmp_path / "raw").mkdir()
    data = _parquet(case) if case.file.endswith(".parquet") else case.data
    name = "tx.csv" if case.file == "absent" else case.file
    if case.file != "absent":
        (tmp_path / "raw" / name).write_bytes(data)
    invoices = ""
    if case.invoices:
        (tmp_path / "raw" / "invoices.csv").write_bytes(case.invoices)
        columns = case.invoice_columns or INVOICE_COLUMNS
        invoices = f"  invoices:\n    path: raw/invoices.csv\n    columns: {columns}"
    interactions = ""
    if case.interactions:
        (tmp_path / "raw" / "interactions.csv").write_bytes(case.interactions)
        columns = case.interaction_columns or INTERACTION_COLUMNS
        kinds = case.interaction_kinds or INTERACTION_KINDS_MAP
        interactions = (
            f"  interactions:\n    path: raw/interactions.csv\n    kinds: {kinds}\n    columns: {columns}"
        )
    experiment = tmp_path / "experiments" / "exp.yaml"
    experiment.parent.mkdir()
    experiment.write_text(
        EXPERIMENT.format(
            file=name,
            columns=case.columns,
            source=_indent(case.source, 6),
            cleaning=_indent(case.cleaning, 4),
            invoices=invoices,
            interactions=interactions,
        ),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["ingest", str(experiment)])
    _check(case, result.exit_code, result.output)
    if case.outcome == "error":
        return
    interim = tmp_path / "data" / "interim" / "exp"
    report = json.loads((interim / "dq_report.json").read_text())
    assert report["rows_in"] == report["rows_kept"] + report["rows_quarantined"]
    for key in ("rows_in", "rows_kept", "rows_quarantined", "by_reason", "customers"):
        assert key in report
    if case.invoices:  # the transactions are good: the invoices carry the case
        assert report["rows_quarantined"] == 0, report["by_reason"]
        block = report["invoices"]
        assert block["rows_in"] == block["rows_kept"] + block["rows_quarantined"]
        assert block["rows_in"] == case.invoices.decode("utf-8").count("\n") - 1
        assert sorted(block["by_reason"]) == sorted(case.expect)
        quarantine = pd.read_parquet(interim / "quarantine_invoices.parquet")
        assert set(quarantine["reason"]) == set(case.expect), quarantine[["source_row", "reason"]]
        assert len(pd.read_parquet(interim / "invoices.parquet")) == block["rows_kept"]
        return
    if case.interactions:  # the transactions are good: the interactions carry the case
        assert report["rows_quarantined"] == 0, report["by_reason"]
        block = report["interactions"]
        assert block["rows_in"] == block["rows_kept"] + block["rows_quarantined"]
        assert block["rows_in"] == case.interactions.decode("utf-8").count("\n") - 1
        assert sorted(block["by_reason"]) == sorted(case.expect)
        quarantine = pd.read_parquet(interim / "quarantine_interactions.parquet")
        assert set(quarantine["reason"]) == set(case.expect), quarantine[["source_row", "reason"]]
        assert len(pd.read_parquet(interim / "interactions.parquet")) == block["rows_kept"]
        assert block["by_kind"]["complaint"] > 0 and block["by_kind"]["campaign_send"] > 0  # kinds: applied
        return
    assert "invoices" not in report  # no data.invoices: the report is what it was before invoices existed
    assert "interactions" not in report
    quarantine = pd.read_parquet(interim / "quarantine.parquet")
    if case.outcome == "ok":
        assert report["rows_quarantined"] == 0, report["by_reason"]
        return
    assert set(quarantine["reason"]) == set(case.expect), quarantine[["source_row", "reason"]]
    assert sorted(report["by_reason"]) == sorted(case.expect)
    malformed = quarantine[quarantine["reason"] == "malformed_row"]
    assert malformed["raw_line"].notna().all()
    text = gzip.decompress(data) if name.endswith(".gz") else data
    lines = text.decode("utf-8").replace("\r\n", "\n").split("\n") if len(malformed) else []
    for _, row in malformed.iterrows():  # the raw text of the line and its number (header = line 1)
        assert lines[int(row["source_row"])] == row["raw_line"], (row["source_row"], row["raw_line"])


# --------------------------------------------------------------------------------------------------------------
# Artifact cases


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("matrix_project")
    make_project(root)
    cfg = _train(root, overrides=["models.potential.objective=tweedie"])  # booster_tweedie.txt
    key = root / "trainer.key"
    key.write_text("a trusted trainer's secret of 32 bytes\n")
    return export_artifact(cfg, sign_key=key.read_bytes().strip()), key


def _rehash(root: Path, change: Callable[[dict], None] | None = None) -> None:
    document = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    if change is not None:
        change(document["files"])
    for rel, entry in document["files"].items():
        target = Path(rel) if rel.startswith("/") else root / rel
        if isinstance(entry, dict) and target.is_file():
            entry.update(sha256=sha256_file(target), bytes=target.stat().st_size)
    (root / MANIFEST).write_text(manifest_text(document), encoding="utf-8")


def _rewrite(relative: str, content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def tamper(root: Path) -> None:
        (root / relative).write_bytes(content((root / relative).read_bytes()))
        _rehash(root)

    return tamper


def _entry(relative: str, value) -> Callable[[Path], None]:
    return lambda root: _rehash(root, lambda files: files.update({relative: value}))


def _symlink(root: Path) -> None:
    outside = root.parent / "policy_copy.yaml"
    shutil.copy(root / "policy" / "policy.yaml", outside)
    (root / "policy" / "policy.yaml").unlink()
    (root / "policy" / "policy.yaml").symlink_to(outside)
    _rehash(root)


def _dotdot(root: Path) -> None:
    (root.parent / "outside.txt").write_text("x\n")
    _rehash(root, lambda files: files.update({"../outside.txt": {"sha256": "0" * 64, "bytes": 0}}))


def _pycache(root: Path) -> None:
    (root / "model" / "__pycache__").mkdir()
    (root / "model" / "__pycache__" / "evil.pyc").write_bytes(b"\x00")


def _flip(root: Path) -> None:
    path = root / "policy" / "policy.yaml"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _unknown_kind(root: Path) -> None:
    (root / "model" / "helper.so").write_bytes(b"\x7fELF")
    _rehash(root, lambda files: files.update({"model/helper.so": {"sha256": "0" * 64, "bytes": 0}}))


def _foreign_json(root: Path) -> None:
    for folder in (root / "pyfunc" / "artifacts" / "grading_artifact", root):
        (folder / "policy" / "reference_stats.json").write_text("[1]\n")
        _rehash(folder)


BOOSTER = "model/booster_tweedie.txt"
TAMPERINGS: dict[str, Callable[[Path], None]] = {
    "absolute_path": _entry("/etc/passwd", {"sha256": "0" * 64, "bytes": 0}),
    "dotdot_path": _dotdot,
    "symlink": _symlink,
    "pycache": _pycache,
    "empty_folder": lambda root: (root / "extra").mkdir(),
    "string_entry": _entry("policy/policy.yaml", "deadbeef"),
    "manifest_garbage": lambda root: (root / MANIFEST).write_bytes(b"\x00not json"),
    "manifest_missing": lambda root: (root / MANIFEST).unlink(),
    "flip": _flip,
    "non_utf8_policy": _rewrite("policy/policy.yaml", lambda b: b + b"\xff\n"),
    "empty_booster": _rewrite(BOOSTER, lambda b: b""),
    "pickled_booster": _rewrite(BOOSTER, lambda b: pickle.dumps({"tree": 1})),
    "truncated_booster": _rewrite(BOOSTER, lambda b: b[: len(b) // 2]),
    "foreign_shim": _rewrite("pyfunc/pyfunc_shim.py", lambda b: b + b"\nimport os\n"),
    "unknown_kind": _unknown_kind,
    "foreign_json": _foreign_json,
    "wrong_key": lambda root: None,
    "unsigned_with_key": lambda root: (root / "manifest.sig").unlink(),
}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in ARTIFACT_CASES])
def test_artifact_case(case: Case, artifact, tmp_path: Path) -> None:
    path, key = artifact
    copy = tmp_path / "artifact"
    shutil.copytree(path, copy, symlinks=True)
    TAMPERINGS[case.tamper](copy)
    command = ["verify", str(copy)]
    if case.tamper == "wrong_key":
        other = tmp_path / "other.key"
        other.write_text("somebody else's secret, long enough\n")
        command += ["--key", str(other)]
    elif case.tamper == "unsigned_with_key":
        command += ["--key", str(key)]
    result = runner.invoke(app, command)
    _check(case, result.exit_code, result.output)


def test_every_tampering_is_a_case() -> None:
    assert sorted(TAMPERINGS) == sorted(c.tamper for c in ARTIFACT_CASES)


def test_matrix_is_large_and_ids_are_unique() -> None:
    cases = INGEST_CASES + ARTIFACT_CASES
    assert len(cases) >= 40
    assert len({c.id for c in cases}) == len(cases)


def test_doc_matches_the_matrix() -> None:
    doc = (REPO / "docs" / "bad_inputs.md").read_text(encoding="utf-8")
    assert doc == render_markdown(), "docs/bad_inputs.md is stale: PYTHONPATH=src python tests/bad_inputs.py"
