"""A bundle whose evidence was altered in any way must fail `verify`, naming what was altered."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest

from auditor.evidence import layout, signing
from auditor.evidence.bundle import Signer, assemble, sums_text
from auditor.evidence.verify import verify_bundle
from auditor.evidence.ziparchive import build_zip
from auditor.jsonutil import JSON, dumps_pretty
from auditor.redact import Redactor

from conftest import DemoRun
from helpers import data_span, flip, member_json, members, rewrite, run_cli


def test_flipped_byte_in_results_json_is_named(demo_run: DemoRun, tmp_path: Path) -> None:
    offset, length = data_span(demo_run.bundle, "results.json")
    blob = demo_run.bundle.read_bytes()
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(flip(blob, offset + length // 2))
    proc = run_cli("verify", tampered, cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAILED results.json:" in proc.stderr


def test_edited_results_json_is_named(demo_run: DemoRun, tmp_path: Path) -> None:
    original = members(demo_run.bundle)["results.json"]
    edited = original.replace(b'"status": "fail"', b'"status": "pass"', 1)
    assert edited != original
    tampered = rewrite(demo_run.bundle, tmp_path / "edited.zip", {"results.json": edited})
    proc = run_cli("verify", tampered, cwd=tmp_path)
    assert proc.returncode == 1
    first_problem = next(line for line in proc.stderr.splitlines() if line.startswith("FAILED"))
    assert first_problem.startswith("FAILED results.json: sha256 does not match SHA256SUMS")
    # The rewrite itself shows too: the archive is no longer byte-for-byte as written.
    assert "zip" in proc.stderr.split(first_problem, 1)[1]


def test_resigned_with_another_key_fails_the_signature_check(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    content = members(demo_run.bundle)
    other = signing.generate_key()
    # A thorough forger: new key in the bundle, its fingerprint in the manifest, sums redone.
    manifest = member_json(demo_run.bundle, "manifest.json")
    manifest["signature"]["fingerprint"] = signing.fingerprint(other.public_key())
    content["manifest.json"] = dumps_pretty(manifest).encode()
    content[layout.PUBLIC_KEY] = signing.public_pem(other.public_key())
    for entry in manifest["files"]:
        if entry["path"] == layout.PUBLIC_KEY:
            entry["sha256"] = __import__("hashlib").sha256(content[layout.PUBLIC_KEY]).hexdigest()
    content["manifest.json"] = dumps_pretty(manifest).encode()
    sums = sums_text({n: c for n, c in content.items() if n not in (layout.SUMS, layout.SIGNATURE)})
    content[layout.SUMS] = sums
    content[layout.SIGNATURE] = signing.sign(other, sums)
    forged = rewrite(demo_run.bundle, tmp_path / "forged.zip", content)

    pinned = run_cli("verify", forged, "--key", demo_run.public_key, cwd=tmp_path)
    assert pinned.returncode == 1
    assert "FAILED SHA256SUMS.sig: the signature over SHA256SUMS does not verify" in pinned.stderr

    # With only the signature swapped, even the bundle's own key rejects it.
    swapped = dict(members(demo_run.bundle))
    swapped[layout.SIGNATURE] = signing.sign(other, swapped[layout.SUMS])
    partial = rewrite(demo_run.bundle, tmp_path / "swapped.zip", swapped)
    unpinned = run_cli("verify", partial, cwd=tmp_path)
    assert unpinned.returncode == 1
    assert "FAILED SHA256SUMS.sig" in unpinned.stderr


def test_unsafe_archive_paths_are_refused(demo_run: DemoRun, tmp_path: Path) -> None:
    for evil in ("../evil.txt", "/etc/evil", "raw/../../evil", "C:/evil", "raw\\evil"):
        path = tmp_path / "evil.zip"
        content = dict(members(demo_run.bundle))
        content[evil] = b"gotcha"
        path.write_bytes(build_zip(content.items(), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
        report = verify_bundle(path)
        assert not report.ok
        assert report.problems[0].file == evil
        assert "unsafe archive path refused" in report.problems[0].message


def test_member_added_or_removed_is_named(demo_run: DemoRun, tmp_path: Path) -> None:
    added = rewrite(demo_run.bundle, tmp_path / "added.zip", {"raw/extra.json": b"{}"})
    report = verify_bundle(added, reevaluate=False)
    assert any(p.file == "raw/extra.json" and "not listed" in p.message for p in report.problems)
    removed = rewrite(demo_run.bundle, tmp_path / "removed.zip", {"report.md": None})
    report = verify_bundle(removed, reevaluate=False)
    assert any(p.file == "report.md" and "missing" in p.message for p in report.problems)


def test_consistent_tampering_of_an_unsigned_bundle_is_caught_by_reevaluation(
    tmp_path: Path,
) -> None:
    """Someone who edits a verdict and recomputes every hash is still caught: the results no
    longer follow from the snapshot and the policies."""
    work = tmp_path / "unsigned"
    work.mkdir()
    from auditor import demo as demo_module

    with demo_module.sandbox_for() as sandbox, demo_module.email_world() as world:
        today = dt.datetime.now(dt.UTC).date()
        config = demo_module.prepare(work, today, sandbox=sandbox, world=world)
        run_cli("audit", "--config", config, "--out", work / "out", cwd=work)
    bundle = next((work / "out").glob("*.zip"))
    content = members(bundle)
    assert layout.SIGNATURE not in content
    results = content["results.json"].replace(b'"status": "fail"', b'"status": "pass"', 1)
    content["results.json"] = results
    manifest = member_json(bundle, "manifest.json")
    for entry in manifest["files"]:
        if entry["path"] == "results.json":
            entry["sha256"] = __import__("hashlib").sha256(results).hexdigest()
            entry["size"] = len(results)
    content["manifest.json"] = dumps_pretty(manifest).encode()
    content[layout.SUMS] = sums_text({n: c for n, c in content.items() if n != layout.SUMS})
    started = dt.datetime.fromisoformat(manifest["run"]["started_at"].replace("Z", "+00:00"))
    forged = tmp_path / "forged.zip"
    forged.write_bytes(build_zip(content.items(), started))
    report = verify_bundle(forged)
    assert not report.ok
    assert report.problems[0].file == "results.json"
    assert "re-evaluation gives fail" in report.problems[0].message


def _small_bundle(path: Path) -> Path:
    started = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.UTC)
    files = {"results.json": b'{"a": 1}\n', "snapshot.json": b"{}\n", "raw/x.json": b"[1, 2, 3]\n"}

    def manifest(listing: list[dict[str, JSON]], sig: dict[str, JSON] | None) -> dict[str, JSON]:
        return {
            "run": {"id": "t", "started_at": "2026-11-27T12:00:00Z"},
            "signature": sig,
            "files": listing,
        }

    key = signing.generate_key()
    parts = assemble(files, manifest, signer=Signer(key, "test"), redactor=Redactor())
    path.write_bytes(build_zip(parts, started))
    return path


def _owner(bundle: Path, offset: int) -> str | None:
    """The member whose local header or data holds `offset`; None for directory bytes."""
    with zipfile.ZipFile(bundle) as archive:
        for info in archive.infolist():
            start = info.header_offset
            end = start + 30 + len(info.filename.encode()) + info.compress_size
            if start <= offset < end:
                return info.filename
    return None


def test_every_single_flipped_byte_fails_verification(tmp_path: Path) -> None:
    bundle = _small_bundle(tmp_path / "small.zip")
    assert verify_bundle(bundle, reevaluate=False).ok
    blob = bundle.read_bytes()
    target = tmp_path / "flipped.zip"
    original = members(bundle)
    for offset in range(len(blob)):
        target.write_bytes(flip(blob, offset))
        report = verify_bundle(target, reevaluate=False)
        if report.ok:
            _assert_no_evidence_changed(target, original, offset)
            continue
        owner = _owner(bundle, offset)
        if owner is not None:
            named = {p.file for p in report.problems}
            assert owner in named or (owner == layout.SUMS and layout.SIGNATURE in named), (
                f"byte {offset} of {owner}: problems name {named}"
            )


@pytest.mark.parametrize("stride", [61])
def test_flipped_bytes_across_the_demo_bundle_fail(
    demo_run: DemoRun, tmp_path: Path, stride: int
) -> None:
    blob = demo_run.bundle.read_bytes()
    original = members(demo_run.bundle)
    target = tmp_path / "flipped.zip"
    for offset in range(0, len(blob), stride):
        target.write_bytes(flip(blob, offset))
        if verify_bundle(target, reevaluate=False).ok:
            _assert_no_evidence_changed(target, original, offset)


def _assert_no_evidence_changed(target: Path, original: dict[str, bytes], offset: int) -> None:
    """A flip that verification lets through must have changed no member's content: some bytes
    of a deflate stream (a few a bundle, at any level) change and still decode to the same."""
    assert members(target) == original, f"byte {offset} changed evidence and went unnoticed"
