"""Publishing bundles: to an S3 bucket with Object Lock on moto's server (each bundle locked in
compliance mode for six years, and a delete refused), and to a directory."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from aws_moto import client, env
from helpers import TRAINING_REPLAY, run_cli, training_snapshot


def _audit(tmp_path: Path, publish: str) -> tuple[int, str, Path]:
    training_snapshot(tmp_path)
    (tmp_path / "commsaudit.toml").write_text(
        TRAINING_REPLAY + f'[evidence]\nout = "out"\npublish = [{publish}]\n'
    )
    proc = run_cli("audit", cwd=tmp_path, env=env(tmp_path))
    (bundle,) = (tmp_path / "out").glob("*.zip")
    return proc.returncode, proc.stderr, bundle


def test_a_bundle_is_locked_in_s3_for_six_years_and_cannot_be_deleted(
    moto: str, tmp_path: Path
) -> None:
    s3 = client(moto, "s3")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    code, stderr, bundle = _audit(
        tmp_path, f'{{s3 = "s3://evidence/contoso/", endpoint_url = "{moto}"}}'
    )
    assert code == 0, stderr
    assert "Kept a copy: s3://evidence/contoso/" in stderr and "COMPLIANCE" in stderr
    record = json.loads((tmp_path / "out" / "published.json").read_text())
    (copy,) = record["copies"]
    assert copy["destination"] == f"s3://evidence/contoso/{bundle.name}"
    assert copy["lock_mode"] == "COMPLIANCE" and record["problems"] == []
    key = f"contoso/{bundle.name}"
    head = s3.head_object(Bucket="evidence", Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    years = (until - dt.datetime.now(dt.UTC)).days / 365.25
    assert 5.99 < years < 6.01
    assert s3.get_object(Bucket="evidence", Key=key)["Body"].read() == bundle.read_bytes()
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        s3.delete_object(Bucket="evidence", Key=key, VersionId=copy["version_id"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # Still there, unchanged.
    assert s3.get_object(Bucket="evidence", Key=key)["Body"].read() == bundle.read_bytes()


def test_a_bucket_without_object_lock_is_refused_and_the_run_exits_2(
    moto: str, tmp_path: Path
) -> None:
    client(moto, "s3").create_bucket(Bucket="plain")
    code, stderr, _bundle = _audit(tmp_path, f'{{s3 = "s3://plain/", endpoint_url = "{moto}"}}')
    assert code == 2
    assert "evidence not kept: s3://plain/" in stderr and "Object Lock" in stderr
    record: dict[str, Any] = json.loads((tmp_path / "out" / "published.json").read_text())
    assert record["copies"] == [] and "Object Lock" in record["problems"][0]


def test_a_directory_copy_is_checked_and_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "kept"
    code, stderr, bundle = _audit(tmp_path, f'{{directory = "{target}"}}')
    assert code == 0, stderr
    copy = target / bundle.name
    assert copy.read_bytes() == bundle.read_bytes()
    assert not copy.stat().st_mode & 0o222  # read-only
    record = json.loads((tmp_path / "out" / "published.json").read_text())
    assert record["copies"][0]["destination"] == str(copy)
