"""The CDNOW master data set, shipped under ``data/raw/cdnow`` (see its README for provenance).

The file is whitespace-separated with CRLF line endings and a header line; customer ids are zero-padded
strings ("00001") and must stay strings, so the file is read with explicit types instead of a sniffer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segml.config import project_root
from segml.errors import ChecksumError, InputFileError
from segml.storage import sha256_file as file_sha256

#: SHA-256 of the shipped ``CDNOW_master.txt`` (lifetimes 0.11.3, unmodified)
CDNOW_SHA256 = "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"

#: columns of the file, in order
CDNOW_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def cdnow_path() -> Path:
    """Path of the shipped CDNOW master file under the project root.

    Returns
    -------
    Path
        ``<project root>/data/raw/cdnow/CDNOW_master.txt`` (not checked for existence).
    """
    return project_root() / "data" / "raw" / "cdnow" / "CDNOW_master.txt"


def verify_cdnow(path: str | Path | None = None) -> Path:
    """Check the CDNOW file against its recorded SHA-256.

    Parameters
    ----------
    path:
        The file to check; default :func:`cdnow_path`.

    Returns
    -------
    Path
        The verified path.

    Raises
    ------
    InputFileError
        The file does not exist.
    ChecksumError
        The file's SHA-256 differs from :data:`CDNOW_SHA256`; the message names the file and both hashes.
    """
    path = Path(path) if path is not None else cdnow_path()
    if not path.is_file():
        raise InputFileError(
            f"{path}: CDNOW file not found (expected the shipped data/raw/cdnow/CDNOW_master.txt)"
        )
    actual = file_sha256(path)
    if actual != CDNOW_SHA256:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the recorded {CDNOW_SHA256}; the file was modified or "
            "is not the shipped CDNOW_master.txt"
        )
    return path


def load_cdnow(path: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """Load the CDNOW master transaction log.

    Parameters
    ----------
    path:
        The file to read; default :func:`cdnow_path`.
    verify:
        Check the SHA-256 first (:func:`verify_cdnow`).

    Returns
    -------
    pandas.DataFrame
        One row per file row, in file order: ``customer_id`` (str, zero-padded as in the file),
        ``date`` (datetime64), ``number_of_cds`` (int64), ``dollar_value`` (float64).

    Raises
    ------
    InputFileError
        The file is missing, lacks a column, or holds a value that does not parse.
    ChecksumError
        ``verify`` is true and the file differs from the shipped one.
    """
    path = Path(path) if path is not None else cdnow_path()
    if verify:
        verify_cdnow(path)
    elif not path.is_file():
        raise InputFileError(f"{path}: CDNOW file not found")
    try:
        raw = pd.read_csv(path, sep=r"\s+", dtype=str, engine="c")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a whitespace-separated CDNOW file ({exc})") from None
    missing = [c for c in CDNOW_COLUMNS if c not in raw.columns]
    if missing:
        raise InputFileError(
            f"{path}: column(s) {', '.join(missing)} missing; found {', '.join(raw.columns)}"
        )
    frame = pd.DataFrame({"customer_id": raw["customer_id"].astype(str)})
    frame["date"] = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce")
    frame["number_of_cds"] = pd.to_numeric(raw["number_of_cds"], errors="coerce")
    frame["dollar_value"] = pd.to_numeric(raw["dollar_value"], errors="coerce")
    for column in ("date", "number_of_cds", "dollar_value"):
        bad = int(frame[column].isna().sum())
        if bad:
            raise InputFileError(f"{path}: column {column} has {bad} row(s) that do not parse")
    frame["number_of_cds"] = frame["number_of_cds"].astype("int64")
    frame["dollar_value"] = frame["dollar_value"].astype("float64")
    return frame
