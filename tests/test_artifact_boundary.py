"""The artifact boundary through the CLI: paths, unlisted files, content checks, signatures (issue 13).

Every tampering here keeps the manifest consistent (correct hashes, self-hash recomputed), as an attacker who
can write the folder would: checksums alone accept all of these.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, make_project
from test_artifact import _train  # ingest + train the smoke experiment, as test_artifact does
from typer.testing import CliRunner

from segml.artifact import ArtifactError, export_artifact
from segml.artifact.manifest import MANIFEST, SIGNATURE, manifest_text
from segml.cli import app
from segml.storage import sha256_file

runner = CliRunner()
BOOSTER = "model/booster_tweedie.txt"
POLICY = "policy/policy.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("boundary_project")
    make_project(root)
    return _train(root, overrides=["models.potential.objective=tweedie"])  # booster_tweedie.txt


@pytest.fixture(scope="module")
def exported(trained):
    return trained, export_artifact(trained)


@pytest.fixture
def copy(exported, tmp_path: Path) -> Path:
    _, path = exported
    target = tmp_path / "artifact"
    shutil.copytree(path, target, symlinks=True)
    return target


def _rehash(root: Path, change: Callable[[dict], None] | None = None) -> None:
    """Recompute every listed file's hash and the self-hash, after ``change`` edited the file list."""
    document = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    files = document["files"]
    if change is not None:
        change(files)
    for rel, entry in files.items():
        if isinstance(entry, dict):
            target = Path(rel) if rel.startswith("/") else root / rel
            if target.exists():
                entry["sha256"] = sha256_file(target)
                entry["bytes"] = target.stat().st_size
    (root / MANIFEST).write_text(manifest_text(document), encoding="utf-8")


def _transactions(cfg) -> str:
    return str(cfg.root / "data" / "raw" / "smoke" / "transactions.parquet")


def _one_line_refusal(output: str, exit_code: int, *names: str) -> str:
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def _refused_by_cli(cfg, root: Path, *names: str, subprocess_run: bool = False) -> None:
    """``verify`` and ``grade`` both refuse with one line naming ``names``; ``grade`` writes nothing."""
    out = root.parent / "grades.csv"
    commands = (
        ["verify", str(root)],
        ["grade", str(root), "--transactions", _transactions(cfg), "--out", str(out)],
    )
    for command in commands:
        if subprocess_run:  # a LightGBM abort must not take the test process with it
            env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_DISABLE_TELEMETRY": "true"}
            done = subprocess.run(
                [sys.executable, "-m", "segml.cli", *command], capture_output=True, text=True, env=env
            )
            _one_line_refusal(done.stdout + done.stderr, done.returncode, *names)
        else:
            result = runner.invoke(app, command)
            _one_line_refusal(result.output, result.exit_code, *names)
        assert not out.exists()


# --------------------------------------------------------------------------------------------------------------
# Defect 1: paths, symlinks, unlisted files


def test_absolute_path_entry_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    outside = copy.parent / "outside.txt"
    outside.write_text("secret\n")
    _rehash(copy, lambda files: files.update({str(outside): {"sha256": "0" * 64, "bytes": 0}}))
    _refused_by_cli(cfg, copy, "absolute path", "outside.txt")


def test_dotdot_path_entry_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    (copy.parent / "outside.txt").write_text("secret\n")
    entry = {"sha256": sha256_file(copy.parent / "outside.txt"), "bytes": 7}
    _rehash(copy, lambda files: files.update({"../outside.txt": entry}))
    _refused_by_cli(cfg, copy, "../outside.txt", "normalised")


def test_file_replaced_by_symlink_to_a_copy_outside_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    outside = copy.parent / "policy_copy.yaml"
    shutil.copy(copy / POLICY, outside)
    (copy / POLICY).unlink()
    (copy / POLICY).symlink_to(outside)
    _rehash(copy)
    _refused_by_cli(cfg, copy, "symlink", POLICY)


def test_symlinked_folder_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    outside = copy.parent / "rules_elsewhere"
    shutil.copytree(copy / "rules", outside)
    shutil.rmtree(copy / "rules")
    (copy / "rules").symlink_to(outside, target_is_directory=True)
    _rehash(copy)
    _refused_by_cli(cfg, copy, "symlink", "rules")


@pytest.mark.parametrize(
    "extra", ["model/__pycache__/evil.pyc", "pyfunc/__pycache__/pyfunc_shim.cpython-311.pyc", "notes.txt"]
)
def test_unlisted_file_is_refused_bytecode_caches_included(exported, copy: Path, extra: str) -> None:
    cfg, _ = exported
    (copy / extra).parent.mkdir(parents=True, exist_ok=True)
    (copy / extra).write_bytes(b"\x00evil")
    _refused_by_cli(cfg, copy, "not in manifest", extra)


def test_unlisted_empty_folder_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    (copy / "model" / "__pycache__").mkdir()
    _refused_by_cli(cfg, copy, "not in manifest", "model/__pycache__/")


def test_manifest_entry_that_is_a_string_is_one_line(exported, copy: Path) -> None:
    cfg, _ = exported
    _rehash(copy, lambda files: files.update({POLICY: "deadbeef"}))
    _refused_by_cli(cfg, copy, "manifest", POLICY, "'sha256' and 'bytes'")


def test_manifest_without_files_is_one_line(exported, copy: Path) -> None:
    cfg, _ = exported
    _rehash(copy, lambda files: files.clear())
    _refused_by_cli(cfg, copy, "manifest.json", "no file list")


# --------------------------------------------------------------------------------------------------------------
# Defect 2: consistent tampering with content


def test_non_utf8_policy_is_one_line(exported, copy: Path) -> None:
    cfg, _ = exported
    (copy / POLICY).write_bytes((copy / POLICY).read_bytes() + b"\xff\xfe name: x\n")
    _rehash(copy)
    _refused_by_cli(cfg, copy, "policy.yaml", "UTF-8")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda text: pickle.dumps({"a": 1}), id="pickle"),
        pytest.param(lambda text: b"", id="empty"),
        pytest.param(lambda text: text[: len(text) // 2], id="truncated"),
        pytest.param(lambda text: text.replace(b"end of trees", b"end of tree"), id="no-end-marker"),
    ],
)
def test_malformed_booster_is_one_line_and_never_aborts(exported, copy: Path, content) -> None:
    cfg, _ = exported
    (copy / BOOSTER).write_bytes(content((copy / BOOSTER).read_bytes()))
    _rehash(copy)
    _refused_by_cli(cfg, copy, "booster_tweedie.txt", "booster", subprocess_run=True)


def test_booster_loaded_in_a_child_first(exported) -> None:
    """The text check aside, a booster LightGBM cannot load (here it segfaults) fails in a child process."""
    from segml.artifact.checks import load_boosters_in_child

    _, path = exported
    text = (path / BOOSTER).read_text()
    load_boosters_in_child({"good.txt": text})
    with pytest.raises(ArtifactError, match=r"bad\.txt: not loadable LightGBM booster text"):
        load_boosters_in_child({"good.txt": text, "bad.txt": text[: len(text) // 2]})


def test_child_output_that_is_not_utf8_still_names_the_booster(monkeypatch) -> None:
    """LightGBM may echo raw bytes of a broken model before it aborts; the check still names the file."""
    from segml.artifact import checks

    child = (
        "import os, sys\n"
        "sys.stdin.read()\n"
        "print('segml-loading:bad.txt', flush=True)\n"
        "sys.stdout.buffer.write(b'[LightGBM] [Warning] Model format error \\x81\\xfe\\n')\n"
        "sys.stdout.flush()\n"
        "os.abort()\n"
    )
    monkeypatch.setattr(checks, "_CHILD", child)
    with pytest.raises(
        ArtifactError, match=r"bad\.txt: not loadable LightGBM booster text \(the loader died"
    ):
        checks.load_boosters_in_child({"bad.txt": "tree"})


def test_foreign_shim_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    shim = copy / "pyfunc" / "pyfunc_shim.py"
    shim.write_text(shim.read_text() + "\nimport os  # runs on load\n")
    _rehash(copy)
    _refused_by_cli(cfg, copy, "pyfunc_shim.py", "differs from the shim of the installed segml")


def test_listed_file_of_unknown_kind_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    (copy / "model" / "helper.so").write_bytes(b"\x7fELF")
    _rehash(copy, lambda files: files.update({"model/helper.so": {"sha256": "0" * 64, "bytes": 0}}))
    _refused_by_cli(cfg, copy, "helper.so", "holds no such file")


def test_consistent_but_foreign_json_is_refused(exported, copy: Path) -> None:
    cfg, _ = exported
    inner = copy / "pyfunc" / "artifacts" / "grading_artifact"
    for root in (inner, copy):  # the pyfunc copy too, so both manifests are consistent
        (root / "policy" / "reference_stats.json").write_text("[1, 2, 3]\n")
        _rehash(root)
    _refused_by_cli(cfg, copy, "reference_stats.json", "not reference statistics")


def test_pyfunc_copy_must_match_the_artifact(exported, copy: Path) -> None:
    cfg, _ = exported
    inner = copy / "pyfunc" / "artifacts" / "grading_artifact"
    (inner / "policy" / "reference_stats.json").write_text("{}\n")
    _rehash(inner)
    _rehash(copy)
    _refused_by_cli(cfg, copy, "pyfunc copy differs", "reference_stats.json")


def test_pyfunc_load_context_runs_the_same_check(exported, copy: Path) -> None:
    import mlflow.pyfunc

    inner = copy / "pyfunc" / "artifacts" / "grading_artifact"
    (inner / POLICY).write_bytes((inner / POLICY).read_bytes() + b"\xff")
    _rehash(inner)
    with pytest.raises(Exception, match=r"policy\.yaml: not UTF-8 YAML"):
        mlflow.pyfunc.load_model(str(copy / "pyfunc"))


def test_pyfunc_load_leaves_the_artifact_as_exported(exported) -> None:
    import mlflow.pyfunc

    _, path = exported
    mlflow.pyfunc.load_model(str(path / "pyfunc"))
    assert not list(path.rglob("__pycache__"))
    assert runner.invoke(app, ["verify", str(path)]).exit_code == 0


def test_mlmodel_records_no_absolute_build_path(exported) -> None:
    import yaml

    _, path = exported
    text = (path / "pyfunc" / "MLmodel").read_text()
    flavor = yaml.safe_load(text)["flavors"]["python_function"]
    assert flavor["model_code_path"] == "pyfunc_shim.py"
    assert flavor["artifacts"]["grading_artifact"]["uri"] == "artifacts/grading_artifact"
    assert str(REPO) not in text and "/tmp" not in text and str(path) not in text


# --------------------------------------------------------------------------------------------------------------
# Signing


@pytest.fixture(scope="module")
def signed(trained, tmp_path_factory: pytest.TempPathFactory):
    keys = tmp_path_factory.mktemp("keys")
    key = keys / "trainer.key"
    key.write_bytes(os.urandom(32).hex().encode() + b"\n")
    result = runner.invoke(
        app,
        ["export", str(trained.source_path), "--version", "2.0.0", "--sign-key", str(key)],
        env={"SEGML_ROOT": str(trained.root)},
    )
    assert result.exit_code == 0, result.output
    assert "signed" in result.output
    return trained, trained.paths.artifacts / "smoke" / "2.0.0", key


def test_signed_artifact_verifies_with_its_key(signed, tmp_path: Path) -> None:
    cfg, path, key = signed
    assert (path / SIGNATURE).is_file()
    assert SIGNATURE not in json.loads((path / MANIFEST).read_text())["files"]
    result = runner.invoke(app, ["verify", str(path), "--key", str(key)])
    assert result.exit_code == 0, result.output
    assert "signature matches" in result.output
    out = tmp_path / "g.csv"
    graded = runner.invoke(
        app,
        ["grade", str(path), "--transactions", _transactions(cfg), "--out", str(out), "--key", str(key)]
        + ["--customers", str(cfg.root / "data" / "raw" / "smoke" / "customers.parquet")],
    )
    assert graded.exit_code == 0, graded.output
    assert out.is_file()
    # unsigned checks still pass without a key
    assert runner.invoke(app, ["verify", str(path)]).exit_code == 0


def test_signature_refuses_other_keys_rehashed_manifests_and_unsigned_artifacts(
    signed, exported, tmp_path: Path
) -> None:
    cfg, path, key = signed
    other = tmp_path / "other.key"
    other.write_text("another secret of enough length\n")
    result = runner.invoke(app, ["verify", str(path), "--key", str(other)])
    _one_line_refusal(result.output, result.exit_code, "signature does not match")

    tampered = tmp_path / "tampered"
    shutil.copytree(path, tampered)
    (tampered / "model_card.md").write_text("# a card from someone else\n")
    _rehash(tampered)  # consistent again, but the signature is over the old manifest
    for command in (
        ["verify", str(tampered), "--key", str(key)],
        ["grade", str(tampered), "--transactions", _transactions(cfg), "--out", str(tmp_path / "g.csv")]
        + ["--key", str(key)],
    ):
        result = runner.invoke(app, command)
        _one_line_refusal(result.output, result.exit_code, "manifest.sig", "signature does not match")
    assert not (tmp_path / "g.csv").exists()

    _, unsigned = exported
    result = runner.invoke(app, ["verify", str(unsigned), "--key", str(key)])
    _one_line_refusal(result.output, result.exit_code, "not signed")


def test_short_or_missing_key_file_is_one_line(signed, tmp_path: Path) -> None:
    _, path, _ = signed
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    result = runner.invoke(app, ["verify", str(path), "--key", str(short)])
    _one_line_refusal(result.output, result.exit_code, "short.key", "at least 16 bytes")
    result = runner.invoke(app, ["verify", str(path), "--key", str(tmp_path / "nope.key")])
    _one_line_refusal(result.output, result.exit_code, "nope.key", "not found")


def test_signed_pyfunc_requires_the_key_when_configured(signed, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.pyfunc

    _, path, key = signed
    monkeypatch.setenv("SEGML_ARTIFACT_KEY_FILE", str(key))
    mlflow.pyfunc.load_model(str(path / "pyfunc"))
    assert not list(path.rglob("__pycache__"))
