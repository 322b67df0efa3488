"""Artifact layout, the manifest (SHA-256 of every file) and its verification.

The manifest is written last and lists every other file of the artifact with its size and SHA-256. It also
carries a hash of itself (``manifest_sha256``, over its canonical JSON without that field) and must be in
canonical form (sorted keys, 2-space indent, trailing newline), so a changed byte anywhere — in a data file,
in the pyfunc wrapper or in the manifest — is detected and named.

Python writes byte-code caches (``__pycache__/``) next to the pyfunc shim when MLflow imports it; those
directories are ignored by the extra-file check.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from segml.errors import SegmlError
from segml.storage import sha256_file

#: format marker of manifest.json
ARTIFACT_FORMAT = "segml.grading_artifact"
ARTIFACT_FORMAT_VERSION = 1

MANIFEST = "manifest.json"
MODEL_CARD = "model_card.md"
MODEL_STATE = "model/potential.json"
ONNX_DIR = "model/onnx"
ONNX_PARITY = "model/onnx/parity.json"
POLICY = "policy/policy.yaml"
REFERENCE_STATS = "policy/reference_stats.json"
GRADE_RULES = "rules/grade_rules.json"
SPEND_TREE = "rules/spend_tree.json"
CLUSTERING = "rules/clustering.json"
FEATURE_SPEC = "spec/feature_spec.json"
IO_SCHEMA = "spec/schema.json"
INGEST_SPEC = "spec/ingest.yaml"
PROBE = "spec/probe.json"
COMPARISON = "evaluation/comparison.json"
HOLDOUT_GRADES = "evaluation/holdout_grades.json"
GRADES_SUMMARY = "evaluation/grades_summary.json"
PYFUNC_DIR = "pyfunc"
#: name of the MLflow artifact holding the copy of the core files inside the pyfunc wrapper
GRADING_ARTIFACT = "grading_artifact"

#: files exempt from the byte-identical re-export rule: the manifests hold the creation time, MLflow writes
#: ids and times into MLmodel
NON_REPRODUCIBLE = (
    MANIFEST,
    f"{PYFUNC_DIR}/MLmodel",
    f"{PYFUNC_DIR}/artifacts/{GRADING_ARTIFACT}/{MANIFEST}",
)

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SELF_HASH = "manifest_sha256"


class ArtifactError(SegmlError):
    """A grading artifact is missing, malformed, or fails its checksums (the message names the file)."""


def booster_file(name: str) -> str:
    """Relative path of the LightGBM booster ``name`` (text format)."""
    return f"model/booster_{name}.txt"


def onnx_file(name: str) -> str:
    """Relative path of the ONNX conversion of booster ``name``."""
    return f"{ONNX_DIR}/{name}.onnx"


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` → ``(1, 2, 3)``; anything but MAJOR.MINOR.PATCH is an :class:`ArtifactError`."""
    match = _SEMVER.match(str(text))
    if not match:
        raise ArtifactError(f"version {text!r}: expected a semantic version MAJOR.MINOR.PATCH, e.g. 1.0.0")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def check_name(name: str) -> str:
    """An artifact name usable as a folder name (letters, digits, ``.``, ``_``, ``-``)."""
    if not _NAME.match(str(name)):
        raise ArtifactError(f"export.name {name!r}: use letters, digits, '.', '_' and '-' only")
    return str(name)


def canonical_json(document: Any) -> str:
    """The one text form of a JSON document used for manifests (sorted keys, indent 2, newline)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _self_hash(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != _SELF_HASH}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _ignored(relative: str) -> bool:
    return "__pycache__" in relative.split("/")


def list_files(root: Path) -> list[str]:
    """Every file under ``root`` (POSIX relative paths, sorted), byte-code caches excluded."""
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    return sorted(f for f in files if not _ignored(f))


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``root`` but the manifest."""
    return {
        rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in list_files(root)
        if rel != MANIFEST
    }


def manifest_text(document: dict[str, Any]) -> str:
    """Canonical manifest text with its self-hash filled in."""
    body = {k: v for k, v in document.items() if k != _SELF_HASH}
    return canonical_json({**body, _SELF_HASH: _self_hash(body)})


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    """Read and self-check ``manifest.json`` (format, canonical form, self-hash).

    Raises
    ------
    ArtifactError
        Naming ``manifest.json`` when it is missing, unparsable, not canonical or its self-hash differs.
    """
    path = Path(artifact_dir) / MANIFEST
    if not Path(artifact_dir).is_dir():
        raise ArtifactError(f"{artifact_dir}: artifact folder not found")
    if not path.is_file():
        raise ArtifactError(f"{path}: manifest missing — not a segml grading artifact (or incomplete)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: manifest.json was modified (not valid JSON)") from None
    if not isinstance(document, dict) or document.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: manifest.json was modified (not a {ARTIFACT_FORMAT} manifest)")
    if document.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format_version {document.get('format_version')!r} is not supported "
            f"(this segml reads {ARTIFACT_FORMAT_VERSION})"
        )
    if text != canonical_json(document) or document.get(_SELF_HASH) != _self_hash(document):
        raise ArtifactError(f"{path}: manifest.json was modified (its self-checksum does not match)")
    if not isinstance(document.get("files"), dict):
        raise ArtifactError(f"{path}: manifest.json has no file list")
    return document


def verify(artifact_dir: Path | str, *, allow_missing: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check every file of an artifact against its manifest.

    Parameters
    ----------
    artifact_dir:
        The artifact folder (``artifacts/<name>/<version>``).
    allow_missing:
        Relative path prefixes that may be absent (the copy MLflow keeps next to the pyfunc wrapper has no
        ``pyfunc/`` folder of its own).

    Returns
    -------
    dict
        ``name, version, files`` (count checked), ``bytes``, ``created``, ``segml_version`` and the manifest.

    Raises
    ------
    ArtifactError
        Naming every file whose checksum changed, that is missing, or that is not in the manifest.
    """
    root = Path(artifact_dir)
    manifest = read_manifest(root)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    changed, missing = [], []
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            if not any(rel.startswith(prefix) for prefix in allow_missing):
                missing.append(rel)
            continue
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            changed.append(rel)
    extra = [rel for rel in list_files(root) if rel != MANIFEST and rel not in listed]
    problems = [
        *(f"changed: {rel}" for rel in changed),
        *(f"missing: {rel}" for rel in missing),
        *(f"not in manifest: {rel}" for rel in extra),
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ArtifactError(
            f"{root}: {len(problems)} file(s) fail the manifest check — {shown}. "
            "Refusing to use a modified artifact; re-export it or restore the files"
        )
    checked = [rel for rel in listed if (root / rel).is_file()]
    return {
        "name": manifest.get("name"),
        "version": manifest.get("version"),
        "files": len(checked),
        "bytes": int(sum(listed[rel]["bytes"] for rel in checked)),
        "created": manifest.get("created"),
        "segml_version": manifest.get("segml_version"),
        "manifest": manifest,
    }
