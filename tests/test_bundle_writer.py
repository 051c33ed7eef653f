"""The bundle file: atomic, canonical, and readable by ordinary zip tools."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from auditor.evidence import bundle as bundle_module
from auditor.evidence.bundle import write_atomically
from auditor.evidence.ziparchive import ArchiveError, build_zip, read_content, read_members

MOMENT = dt.datetime(2026, 11, 27, 22, 33, 56, tzinfo=dt.UTC)
MEMBERS = [("manifest.json", b"{}\n"), ("raw/ü-tenant.json", b"x" * 5000), ("empty", b"")]


def test_a_failed_write_leaves_nothing_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bundle.zip"

    def broken_fsync(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"half a bundle")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.md"
    target.write_bytes(b"previous run")

    def broken_replace(self: Path, _target: Path) -> Path:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(Path, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomically(target, b"new run")
    assert target.read_bytes() == b"previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_canonical_zip_is_read_by_zipfile_and_by_our_strict_reader() -> None:
    blob = build_zip(MEMBERS, MOMENT)
    archive = zipfile.ZipFile(__import__("io").BytesIO(blob))
    assert archive.testzip() is None
    assert [(i.filename, archive.read(i)) for i in archive.infolist()] == MEMBERS
    assert archive.infolist()[0].date_time == (2026, 11, 27, 22, 33, 56)
    members = read_members(blob, MOMENT)
    assert [(m.name, read_content(blob, m)) for m in members] == MEMBERS


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the unzip tool is not installed")
def test_canonical_zip_passes_unzip_t(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(build_zip(MEMBERS, MOMENT))
    proc = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout
    assert "No errors detected" in proc.stdout


def test_strict_reader_refuses_trailing_bytes_and_a_wrong_timestamp() -> None:
    blob = build_zip(MEMBERS, MOMENT)
    with pytest.raises(ArchiveError, match="end record is not at the end"):
        read_members(blob + b"\0")
    with pytest.raises(ArchiveError) as caught:
        read_members(blob, MOMENT + dt.timedelta(hours=1))
    assert caught.value.member == "manifest.json"
