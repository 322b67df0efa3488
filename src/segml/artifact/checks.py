"""Content checks of a verified artifact: every file parses as what it should be.

Checksums prove that the files are the ones the manifest lists, not that the manifest describes a segml
artifact: anyone who can write the folder can re-hash a foreign file. So every listed file is parsed by its
kind before anything uses it — JSON and YAML decoded (safe loaders only), text decoded as UTF-8, ONNX checked
as a protobuf message, the pyfunc shim compared with the installed one (MLflow executes it), ``MLmodel``
checked to load that shim and nothing pickled, and LightGBM booster text checked for its structure and then
loaded in a child process: LightGBM aborts the whole process (signal 6 or 11) on some malformed models, so
the first load of an untrusted booster never happens in the calling process.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from segml.artifact.manifest import ArtifactError

#: seconds a child process may take to load the boosters
BOOSTER_CHECK_TIMEOUT = 300
_BOOSTER_NAME = re.compile(r"^booster_[A-Za-z0-9_]+\.txt$")
_SHIM = "pyfunc_shim.py"


def _kind(relative: str) -> str:
    name = posixpath.basename(relative)
    parent = posixpath.basename(posixpath.dirname(relative))
    if parent == "model" and _BOOSTER_NAME.match(name):
        return "booster"
    if name == "MLmodel":
        return "mlmodel"
    if name == _SHIM:
        return "shim"
    if name == "manifest.sig":
        return "signature"
    suffix = posixpath.splitext(name)[1].lower()
    return {
        ".json": "json",
        ".yaml": "yaml",
        ".yml": "yaml",
        ".md": "text",
        ".txt": "text",
        ".onnx": "onnx",
    }.get(suffix, "unknown")


_WHAT = {
    "booster": "LightGBM booster text",
    "mlmodel": "an MLflow MLmodel file (YAML)",
    "shim": "the segml pyfunc shim",
    "json": "UTF-8 JSON",
    "yaml": "UTF-8 YAML",
    "text": "UTF-8 text",
    "onnx": "an ONNX model (protobuf)",
    "signature": "a segml manifest signature",
}


def check_contents(root: Path, relatives: list[str]) -> None:
    """Parse every listed file by its kind; the first one that fails is an :class:`ArtifactError`.

    Raises
    ------
    ArtifactError
        ``<file>: not <what it should be> (<why>)`` for the first malformed file, or a file of a kind an
        artifact does not hold.
    """
    for relative in sorted(relatives):
        kind = _kind(relative)
        path = root / relative
        if kind == "unknown":
            raise ArtifactError(
                f"{path}: a segml artifact holds no such file (only JSON, YAML, text, booster text, ONNX and "
                "the pyfunc wrapper); refusing the artifact"
            )
        data = path.read_bytes()
        problem = _problem(kind, data)
        if problem:
            raise ArtifactError(f"{path}: not {_WHAT[kind]} ({problem}); refusing the artifact")


def _problem(kind: str, data: bytes) -> str | None:
    if kind == "onnx":
        return onnx_problem(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
    if kind == "json":
        try:
            json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            return f"invalid JSON: {getattr(exc, 'msg', 'nested too deeply')}"
    elif kind in ("yaml", "mlmodel"):
        try:
            document = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as exc:
            return f"invalid YAML: {str(exc).splitlines()[0]}"
        if kind == "mlmodel":
            return mlmodel_problem(document)
    elif kind == "shim":
        if text != installed_shim():
            return "it differs from the shim of the installed segml, and MLflow would execute it"
    elif kind == "booster":
        return booster_problem(text)
    elif kind == "signature" and not re.fullmatch(r"hmac-sha256:[0-9a-f]{64}\n", text):
        return "expected 'hmac-sha256:<64 hex digits>'"
    return None


def installed_shim() -> str:
    """Text of the models-from-code file the installed segml writes into ``pyfunc/``."""
    from importlib import resources

    return resources.files("segml").joinpath("resources/pyfunc_shim.py").read_text(encoding="utf-8")


def mlmodel_problem(document: Any) -> str | None:
    """Why an ``MLmodel`` document is not the segml grading wrapper (models-from-code, nothing pickled)."""
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        return "no flavors"
    if set(document["flavors"]) != {"python_function"}:
        return f"unexpected flavors {sorted(document['flavors'])}"
    flavor = document["flavors"]["python_function"]
    if not isinstance(flavor, dict):
        return "python_function flavor is not a mapping"
    if flavor.get("loader_module") != "mlflow.pyfunc.loaders.code_model":
        return f"loader_module {flavor.get('loader_module')!r} is not the models-from-code loader"
    if posixpath.basename(str(flavor.get("model_code_path"))) != _SHIM:
        return f"model_code_path {flavor.get('model_code_path')!r} is not {_SHIM}"
    if flavor.get("code") is not None or "python_model" in flavor:
        return "it loads extra code or a pickled model"
    return None


def onnx_problem(data: bytes) -> str | None:
    """Why ``data`` is not a protobuf message with an ``ir_version`` (field 1) and a ``graph`` (field 7)."""
    position, seen = 0, set()
    try:
        while position < len(data):
            key, position = _varint(data, position)
            field, wire = key >> 3, key & 7
            if field == 0:
                return f"invalid field number at offset {position}"
            if wire == 0:
                _, position = _varint(data, position)
            elif wire == 1:
                position += 8
            elif wire == 2:
                length, position = _varint(data, position)
                position += length
            elif wire == 5:
                position += 4
            else:
                return f"invalid wire type {wire} at offset {position}"
            if position > len(data):
                return "truncated"
            seen.add(field)
    except IndexError:
        return "truncated"
    if not {1, 7} <= seen:
        return "no ir_version or graph"
    return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


# --------------------------------------------------------------------------------------------------------------
# LightGBM booster text

_TREE_ARRAYS = ("split_feature", "threshold", "decision_type", "left_child", "right_child")


def _key_values(lines: list[str]) -> dict[str, str]:
    values = {}
    for line in lines:
        if "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def booster_problem(text: str) -> str | None:
    """Why ``text`` is not a complete LightGBM model text, or None.

    Checks what LightGBM trusts without checking: the header, ``tree_sizes`` (byte size of every tree block,
    used to cut the text), every tree's array lengths and child/feature indices, and the closing
    ``end of trees`` marker.
    """
    if not text.startswith("tree\n"):
        return "it does not start with the 'tree' header"
    header_end = text.find("\n\n")
    if header_end < 0:
        return "truncated header"
    header = _key_values(text[:header_end].splitlines()[1:])
    for key in ("version", "num_class", "max_feature_idx", "feature_names", "tree_sizes"):
        if key not in header:
            return f"header has no {key}"
    try:
        max_feature = int(header["max_feature_idx"])
        sizes = [int(size) for size in header["tree_sizes"].split()]
    except ValueError:
        return "malformed max_feature_idx or tree_sizes"
    if len(header["feature_names"].split()) != max_feature + 1:
        return "feature_names do not match max_feature_idx"
    if not sizes or any(size <= 0 for size in sizes):
        return "no trees"
    position = header_end + 2
    for index, size in enumerate(sizes):
        block = text[position : position + size]
        if len(block) != size:
            return f"truncated: tree {index} of {len(sizes)} is incomplete"
        problem = _tree_problem(block, index, max_feature)
        if problem:
            return problem
        position += size
    if not text[position:].lstrip("\n").startswith("end of trees"):
        return "no 'end of trees' after the trees listed in tree_sizes"
    return None


def _tree_problem(block: str, index: int, max_feature: int) -> str | None:
    lines = block.splitlines()
    if not lines or lines[0] != f"Tree={index}":
        return f"tree {index} does not start with 'Tree={index}'"
    values = _key_values(lines[1:])
    try:
        leaves = int(values["num_leaves"])
        leaf_values = [float(v) for v in values["leaf_value"].split()]
        if leaves < 1 or len(leaf_values) != leaves:
            return f"tree {index}: {len(leaf_values)} leaf values for {leaves} leaves"
        if leaves == 1:
            return None
        arrays = {key: values[key].split() for key in _TREE_ARRAYS}
        for key, items in arrays.items():
            if len(items) != leaves - 1:
                return f"tree {index}: {key} has {len(items)} entries for {leaves - 1} splits"
        features = [int(v) for v in arrays["split_feature"]]
        children = [int(v) for v in arrays["left_child"] + arrays["right_child"]]
        [float(v) for v in arrays["threshold"]]
        [int(v) for v in arrays["decision_type"]]
        num_cat = int(values.get("num_cat", "0"))
        if num_cat:
            boundaries = [int(v) for v in values["cat_boundaries"].split()]
            thresholds = values["cat_threshold"].split()
            if len(boundaries) != num_cat + 1 or boundaries[-1] != len(thresholds):
                return f"tree {index}: categorical splits do not match cat_boundaries"
    except KeyError as exc:
        return f"tree {index} has no {exc.args[0]}"
    except ValueError:
        return f"tree {index} holds a value that is not a number"
    if any(not 0 <= f <= max_feature for f in features):
        return f"tree {index}: split feature out of range"
    if any(not -leaves <= c <= leaves - 2 for c in children):
        return f"tree {index}: child index out of range"
    return None


_CHILD = """
import json, sys
import lightgbm
boosters = json.loads(sys.stdin.read())
for label, text in boosters.items():
    print("segml-loading:" + label, flush=True)
    lightgbm.Booster(model_str=text)
print("segml-loaded", flush=True)
"""


def load_boosters_in_child(boosters: Mapping[str, str]) -> None:
    """Load booster texts (``{file label: text}``) with LightGBM in a child process first.

    Raises
    ------
    ArtifactError
        Naming the booster file the child could not load (including when LightGBM aborted the child).
    """
    if not boosters:
        return
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(dict(boosters)),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",  # LightGBM echoes bytes of a broken model text, not always UTF-8
            timeout=BOOSTER_CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise ArtifactError(
            f"{next(iter(boosters))}: LightGBM did not load the booster text within "
            f"{BOOSTER_CHECK_TIMEOUT} s; refusing the artifact"
        ) from None
    printed = [line for line in done.stdout.splitlines() if line.startswith("segml-")]
    if done.returncode == 0 and printed[-1:] == ["segml-loaded"]:
        return
    started = [line.removeprefix("segml-loading:") for line in printed if line.startswith("segml-loading:")]
    label = started[-1] if started else next(iter(boosters))
    how = f"the loader died with signal {-done.returncode}" if done.returncode < 0 else "LightGBM refused it"
    output = (done.stdout + "\n" + done.stderr).splitlines()
    detail = [line for line in output if "[Fatal]" in line or "Error" in line]
    suffix = f": {detail[-1].strip()[:160]}" if detail else ""
    raise ArtifactError(f"{label}: not loadable LightGBM booster text ({how}{suffix}); refusing the artifact")


def check_pyfunc_copy(root: Path, top: dict[str, Any], copy_dir: str) -> None:
    """The copy of the core files inside ``pyfunc/`` must be the same files as the artifact's own."""
    from segml.artifact.manifest import MANIFEST, read_manifest

    copy = read_manifest(root / copy_dir)
    listed = top["files"]
    for relative, entry in copy["files"].items():
        own = listed.get(relative)
        if own is None or own["sha256"] != entry["sha256"]:
            raise ArtifactError(
                f"{root / copy_dir / relative}: the pyfunc copy differs from the artifact's own "
                f"{relative}; refusing the artifact"
            )
    unlisted = sorted(
        rel for rel in listed if not rel.startswith(("pyfunc/", MANIFEST)) and rel not in copy["files"]
    )
    if unlisted:
        raise ArtifactError(
            f"{root / copy_dir / MANIFEST}: the pyfunc copy lacks {unlisted[0]}; refusing the artifact"
        )
