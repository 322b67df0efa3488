"""The shipped CDNOW file loads with the documented figures and is protected by its checksum."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from segml.datasets.cdnow import CDNOW_SHA256, cdnow_path, file_sha256, load_cdnow, verify_cdnow
from segml.errors import ChecksumError, InputFileError


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow()


def test_shipped_file_matches_recorded_checksum():
    path = verify_cdnow()
    assert path == cdnow_path()
    assert file_sha256(path) == CDNOW_SHA256
    sums = (path.parent / "SHA256SUMS").read_text().split()
    assert sums[0] == CDNOW_SHA256 and sums[1] == path.name


def test_documented_figures(cdnow: pd.DataFrame):
    assert len(cdnow) == 69_659
    assert cdnow["customer_id"].nunique() == 23_570
    assert round(cdnow["dollar_value"].sum(), 2) == 2_500_315.63
    assert int((cdnow["dollar_value"] == 0).sum()) == 80
    assert int(cdnow["number_of_cds"].sum()) == 167_881
    assert cdnow["date"].min() == pd.Timestamp("1997-01-01")
    assert cdnow["date"].max() == pd.Timestamp("1998-06-30")


def test_columns_and_dtypes(cdnow: pd.DataFrame):
    assert list(cdnow.columns) == ["customer_id", "date", "number_of_cds", "dollar_value"]
    assert pd.api.types.is_datetime64_any_dtype(cdnow["date"])
    assert cdnow["number_of_cds"].dtype == "int64"
    assert cdnow["dollar_value"].dtype == "float64"
    assert cdnow["customer_id"].map(type).eq(str).all()


def test_customer_ids_stay_zero_padded_strings(cdnow: pd.DataFrame):
    ids = cdnow["customer_id"]
    assert ids.iloc[0] == "00001"
    assert ids.str.fullmatch(r"\d{5}").all()
    assert {"00001", "23570"} <= set(ids)


def test_modified_copy_fails_checksum(tmp_path):
    copy = tmp_path / "CDNOW_master.txt"
    shutil.copyfile(cdnow_path(), copy)
    with copy.open("ab") as handle:
        handle.write(b" 00001 19980630  1   1.00\r\n")
    with pytest.raises(ChecksumError) as err:
        verify_cdnow(copy)
    message = str(err.value)
    assert str(copy) in message and CDNOW_SHA256 in message and file_sha256(copy) in message
    with pytest.raises(ChecksumError):
        load_cdnow(copy)
    assert len(load_cdnow(copy, verify=False)) == 69_660


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        verify_cdnow(tmp_path / "nope.txt")
    with pytest.raises(InputFileError, match="not found"):
        load_cdnow(tmp_path / "nope.txt", verify=False)


def test_unparseable_value_names_column_and_count(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b" customer_id  date number_of_cds  dollar_value\r\n 00001 1997XX01  1   11.77\r\n")
    with pytest.raises(InputFileError, match=r"column date has 1 row"):
        load_cdnow(bad, verify=False)


def test_path_follows_project_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGML_ROOT", str(tmp_path))
    assert cdnow_path() == tmp_path.resolve() / "data" / "raw" / "cdnow" / "CDNOW_master.txt"
