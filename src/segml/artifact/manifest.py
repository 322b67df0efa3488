"""Artifact layout, the manifest (SHA-256 of every file), its verification and optional signature.

The manifest is written last and lists every other file of the artifact with its size and SHA-256. It also
carries a hash of itself (``manifest_sha256``, over its canonical JSON without that field) and must be in
canonical form (sorted keys, 2-space indent, trailing newline), so a changed byte anywhere — in a data file,
in the pyfunc wrapper or in the manifest — is detected and named.

The manifest is also the artifact's boundary: every listed path is relative, normalised and names a regular
file inside the folder (no symlink anywhere on the way, no ``..``, no absolute path), and every file or folder
the manifest does not account for — byte-code caches included — is refused. Only ``manifest.json`` and the
signature file ``manifest.sig`` are exempt.

The self-hash has no key: anyone who can write the folder can write a consistent manifest. A production team
that must only run artifacts from a trusted trainer signs them: ``manifest.sig`` holds an HMAC-SHA256 of the
manifest bytes under a secret read from a key file (``segml export --sign-key``, ``segml verify --key``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import posixpath
import re
import stat
from pathlib import Path
from typing import Any

from segml.errors import SegmlError
from segml.storage import sha256_file

#: format marker of manifest.json
ARTIFACT_FORMAT = "segml.grading_artifact"
ARTIFACT_FORMAT_VERSION = 1

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: the files of an artifact folder that the manifest does not list
UNLISTED = (MANIFEST, SIGNATURE)
MODEL_CARD = "model_card.md"
MODEL_STATE = "model/potential.json"
#: the fallback scorer's state, present only when the potential model lost inside calibration
SCORER_STATE = "model/scorer.json"
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
SELECTION = "evaluation/selection.json"
GRADING_EVALUATION = "evaluation/grading_evaluation.json"
PYFUNC_DIR = "pyfunc"
#: name of the MLflow artifact holding the copy of the core files inside the pyfunc wrapper
GRADING_ARTIFACT = "grading_artifact"

#: files exempt from the byte-identical re-export rule: the manifests (and so their signatures) hold the
#: creation time, MLflow writes ids and times into MLmodel
NON_REPRODUCIBLE = (
    MANIFEST,
    SIGNATURE,
    f"{PYFUNC_DIR}/MLmodel",
    f"{PYFUNC_DIR}/artifacts/{GRADING_ARTIFACT}/{MANIFEST}",
    f"{PYFUNC_DIR}/artifacts/{GRADING_ARTIFACT}/{SIGNATURE}",
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


def list_files(root: Path) -> list[str]:
    """Every file under ``root`` (POSIX relative paths, sorted; symlinks listed, never followed)."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            found.append((base / name).relative_to(root).as_posix())
    return sorted(found)


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``root`` but the manifest and signature."""
    return {
        rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in list_files(root)
        if rel not in UNLISTED
    }


def manifest_text(document: dict[str, Any]) -> str:
    """Canonical manifest text with its self-hash filled in."""
    body = {k: v for k, v in document.items() if k != _SELF_HASH}
    return canonical_json({**body, _SELF_HASH: _self_hash(body)})


# --------------------------------------------------------------------------------------------------------------
# Manifest structure

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_relative_path(relative: Any) -> str | None:
    """Why ``relative`` cannot name a file of an artifact, or None when it can.

    A listed path is a non-empty POSIX path relative to the artifact folder, already normalised (no ``.``,
    ``..`` or empty parts, no backslash), and not one of the unlisted files.
    """
    if not isinstance(relative, str) or not relative:
        return "not a file name"
    if relative.startswith("/") or re.match(r"^[A-Za-z]:", relative) or "\\" in relative:
        return "an absolute path"
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return "not a normalised relative path ('..', '.' or empty parts)"
    if posixpath.normpath(relative) != relative or "\x00" in relative:
        return "not a normalised relative path"
    if relative in UNLISTED:
        return f"{relative} cannot list itself"
    return None


def _check_structure(path: Path, document: dict[str, Any]) -> None:
    """Refuse a manifest whose fields or file entries do not have the documented shape."""
    name, version = document.get("name"), document.get("version")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ArtifactError(f"{path}: manifest field 'name' is {name!r}, not an artifact name")
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise ArtifactError(
            f"{path}: manifest field 'version' is {version!r}, not a version MAJOR.MINOR.PATCH"
        )
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{path}: manifest.json has no file list ('files' must map paths to entries)")
    for relative, entry in files.items():
        problem = check_relative_path(relative)
        if problem:
            raise ArtifactError(f"{path}: manifest entry {relative!r} is {problem}; refusing the artifact")
        if not isinstance(entry, dict) or set(entry) != {"sha256", "bytes"}:
            raise ArtifactError(
                f"{path}: manifest entry {relative!r} must be an object with 'sha256' and 'bytes' "
                f"(found {type(entry).__name__} {str(entry)[:60]!r})"
            )
        digest, size = entry["sha256"], entry["bytes"]
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ArtifactError(f"{path}: manifest entry {relative!r}: 'sha256' is not 64 hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ArtifactError(f"{path}: manifest entry {relative!r}: 'bytes' is not a byte count")


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    """Read and self-check ``manifest.json`` (format, canonical form, self-hash, structure).

    Raises
    ------
    ArtifactError
        Naming ``manifest.json`` when it is missing, unparsable, not canonical, its self-hash differs or an
        entry does not have the documented shape.
    """
    root = Path(artifact_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise ArtifactError(f"{artifact_dir}: artifact folder not found")
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(f"{path}: manifest missing — not a segml grading artifact (or incomplete)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ArtifactError(f"{path}: manifest.json was modified (not valid UTF-8 JSON)") from None
    if not isinstance(document, dict) or document.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: manifest.json was modified (not a {ARTIFACT_FORMAT} manifest)")
    if document.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format_version {document.get('format_version')!r} is not supported "
            f"(this segml reads {ARTIFACT_FORMAT_VERSION})"
        )
    if text != canonical_json(document) or document.get(_SELF_HASH) != _self_hash(document):
        raise ArtifactError(f"{path}: manifest.json was modified (its self-checksum does not match)")
    _check_structure(path, document)
    return document


# --------------------------------------------------------------------------------------------------------------
# Signature


def read_key(key_file: Path | str) -> bytes:
    """The signing secret held in ``key_file`` (surrounding whitespace stripped; at least 16 bytes)."""
    path = Path(key_file)
    if not path.is_file():
        raise ArtifactError(f"{path}: key file not found")
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise ArtifactError(f"{path}: key file holds {len(secret)} bytes; use a secret of at least 16 bytes")
    return secret


def signature_text(manifest_bytes: bytes, secret: bytes) -> str:
    """Contents of ``manifest.sig``: the HMAC-SHA256 of the manifest bytes under ``secret``."""
    return f"hmac-sha256:{hmac.new(secret, manifest_bytes, hashlib.sha256).hexdigest()}\n"


def sign(artifact_dir: Path | str, secret: bytes) -> Path:
    """Write ``manifest.sig`` for the manifest now in ``artifact_dir``."""
    from segml.storage import write_text

    root = Path(artifact_dir)
    return write_text(root / SIGNATURE, signature_text((root / MANIFEST).read_bytes(), secret))


def check_signature(root: Path, secret: bytes | None) -> bool | None:
    """True when ``manifest.sig`` matches under ``secret``, None when no key is given.

    Raises
    ------
    ArtifactError
        A key is given and the signature is missing or does not match; or the signature file is malformed.
    """
    path = root / SIGNATURE
    present = path.exists() or path.is_symlink()
    if present and (path.is_symlink() or not path.is_file()):
        raise ArtifactError(f"{path}: the signature is not a regular file")
    if secret is None:
        return None
    if not present:
        raise ArtifactError(f"{root}: artifact is not signed ({SIGNATURE} missing) but a key was given")
    expected = signature_text((root / MANIFEST).read_bytes(), secret)
    if not hmac.compare_digest(path.read_bytes(), expected.encode("ascii")):
        raise ArtifactError(
            f"{path}: signature does not match manifest.json under this key — not signed by the trusted "
            "trainer, or modified after signing"
        )
    return True


# --------------------------------------------------------------------------------------------------------------
# Verification


def _regular_file(root: Path, relative: str) -> str | None:
    """None when ``root/relative`` is a regular file reached without symlinks; else what it is."""
    current = root
    parts = relative.split("/")
    for i, part in enumerate(parts):
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"unreadable ({exc.strerror})"
        if stat.S_ISLNK(info.st_mode):
            return "a symlink"
        last = i == len(parts) - 1
        if last and not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if not last and not stat.S_ISDIR(info.st_mode):
            return "missing"
    return None


def _unlisted(root: Path, listed: dict[str, Any]) -> list[str]:
    """Files and folders under ``root`` that the manifest does not account for (folders end in ``/``)."""
    folders = {posixpath.dirname(rel) for rel in listed}
    for folder in list(folders):
        while folder:
            folder = posixpath.dirname(folder)
            folders.add(folder)
    extra = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in dirs:
            rel = (base / name).relative_to(root).as_posix()
            if (base / name).is_symlink():
                extra.append(rel)
            elif rel not in folders and not any((base / name).iterdir()):
                extra.append(rel + "/")  # an empty folder; a folder with files is named by its files
        for name in files:
            rel = (base / name).relative_to(root).as_posix()
            if rel not in listed and rel not in UNLISTED:
                extra.append(rel)
    return sorted(extra)


def verify(
    artifact_dir: Path | str, *, allow_missing: tuple[str, ...] = (), key: bytes | None = None
) -> dict[str, Any]:
    """Check every file of an artifact against its manifest (checksums and the artifact boundary).

    Parameters
    ----------
    artifact_dir:
        The artifact folder (``artifacts/<name>/<version>``).
    allow_missing:
        Relative path prefixes that may be absent (the copy MLflow keeps next to the pyfunc wrapper has no
        ``pyfunc/`` folder of its own).
    key:
        Signing secret (:func:`read_key`): when given, ``manifest.sig`` must match.

    Returns
    -------
    dict
        ``name, version, files`` (count checked), ``bytes``, ``created``, ``segml_version``, ``signed``
        (True when the signature was checked, None without a key) and the manifest.

    Raises
    ------
    ArtifactError
        Naming every file whose checksum changed, that is missing, a symlink or not a regular file, and every
        file or folder that is not in the manifest; or the signature does not match.
    """
    root = Path(artifact_dir)
    manifest = read_manifest(root)
    signed = check_signature(root, key)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    changed, missing, irregular = [], [], []
    for rel, entry in sorted(listed.items()):
        what = _regular_file(root, rel)
        if what == "missing":
            if not any(rel.startswith(prefix) for prefix in allow_missing):
                missing.append(rel)
            continue
        if what is not None:
            irregular.append(f"{what}: {rel}")
            continue
        path = root / rel
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            changed.append(rel)
    extra = _unlisted(root, listed)
    problems = [
        *irregular,
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
        "name": manifest["name"],
        "version": manifest["version"],
        "files": len(checked),
        "bytes": int(sum(listed[rel]["bytes"] for rel in checked)),
        "created": manifest.get("created"),
        "segml_version": manifest.get("segml_version"),
        "signed": signed,
        "manifest": manifest,
    }
