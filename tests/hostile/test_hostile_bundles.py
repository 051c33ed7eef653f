"""Hostile bundles and faults around them: a forged baseline, a zip bomb, a zip of many members,
a stripped signature, and a disk that fills up while the side reports are written.

A bundle is only as trustworthy as what `verify` checked of it: a baseline must pass the same
checks (signature pinned to the run's own key when signing is required), reading a bundle is
bounded in memory whatever its zip directory declares, and an unsigned bundle never gets a plain
"OK". The reports beside a bundle are each whole or absent, and the run says which are missing.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import json
import os
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from auditor.evidence import layout, signing, verify
from auditor.evidence.bundle import sums_text
from auditor.evidence.verify import verify_bundle
from auditor.evidence.ziparchive import build_zip

from conftest import DemoRun
from helpers import TRAINING_REPLAY, member_json, members, run_cli, training_snapshot


def _reforge(
    bundle: Path,
    target: Path,
    changes: dict[str, bytes],
    *,
    resign: Any = None,
) -> Path:
    """What a careful forger makes: members changed, the manifest's file list and SHA256SUMS
    redone, the archive rebuilt byte-for-byte canonical. The signature is stripped, or redone
    with the forger's own key (`resign`, an ed25519 private key)."""
    content = {**members(bundle), **changes}
    for name in (layout.SIGNATURE, layout.PUBLIC_KEY, layout.SUMS):
        content.pop(name, None)
    manifest = member_json(bundle, layout.MANIFEST)
    signature = None
    if resign is not None:
        content[layout.PUBLIC_KEY] = signing.public_pem(resign.public_key())
        signature = {
            "algorithm": signing.ALGORITHM,
            "signed_file": layout.SUMS,
            "signature_file": layout.SIGNATURE,
            "public_key_file": layout.PUBLIC_KEY,
            "fingerprint": signing.fingerprint(resign.public_key()),
        }
    manifest["signature"] = signature
    content.pop(layout.MANIFEST)
    manifest["files"] = [
        {"path": n, "sha256": hashlib.sha256(c).hexdigest(), "size": len(c)}
        for n, c in sorted(content.items())
    ]
    content[layout.MANIFEST] = json.dumps(manifest, indent=2).encode()
    sums = sums_text(content)
    ordered = [(layout.MANIFEST, content[layout.MANIFEST])]
    ordered += [(n, c) for n, c in sorted(content.items()) if n != layout.MANIFEST]
    ordered.append((layout.SUMS, sums))
    if resign is not None:
        ordered.append((layout.SIGNATURE, signing.sign(resign, sums)))
    started = dt.datetime.fromisoformat(manifest["run"]["started_at"].replace("Z", "+00:00"))
    target.write_bytes(build_zip(ordered, started))
    return target


# --- 2. A baseline is a bundle like any other: it must verify, signature included ----------


def _signed_setup(tmp_path: Path) -> None:
    """A config that requires signing, with its key in a file."""
    key = signing.generate_key()
    (tmp_path / "signing.pem").write_bytes(signing.private_pem(key))
    (tmp_path / "commsaudit.toml").write_text(
        TRAINING_REPLAY
        + '[evidence]\nout = "out"\nsigning_key_file = "signing.pem"\nrequire_signature = true\n'
    )


def _run(tmp_path: Path, coverage: float, out: str, *extra: str | Path) -> Any:
    training_snapshot(tmp_path, coverage=coverage)
    return run_cli("audit", "--out", tmp_path / out, *extra, cwd=tmp_path)


def test_a_forged_unsigned_baseline_is_refused_when_signing_is_required(tmp_path: Path) -> None:
    _signed_setup(tmp_path)
    # Last week training was current: a genuine, signed baseline where the control passes.
    first = _run(tmp_path, 0.99, "base")
    assert first.returncode == 0, first.stderr
    (genuine,) = (tmp_path / "base").glob("*.zip")

    # Someone edits the baseline so this week's failure looks old, and strips the signature.
    results = member_json(genuine, layout.RESULTS)
    (training,) = [r for r in results["results"] if r["control"] == "org.training.current"]
    training["status"] = "fail"
    forged = _reforge(
        genuine, tmp_path / "forged.zip", {layout.RESULTS: json.dumps(results).encode()}
    )
    # The forgery is self-consistent: only its missing signature (or re-evaluation) gives it away.
    assert verify_bundle(forged, reevaluate=False).ok

    # This week training lapsed: a new failure. Against the genuine baseline it is one (exit 1).
    honest = _run(tmp_path, 0.5, "honest", "--baseline", genuine, "--fail-on", "new")
    assert honest.returncode == 1, honest.stderr

    # Against the forgery the run must stop (exit 2) and say why, never exit 0.
    proc = _run(tmp_path, 0.5, "now", "--baseline", forged, "--fail-on", "new")
    assert proc.returncode == 2, proc.stderr
    assert "forged.zip" in proc.stderr and "not signed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "now").exists()  # stopped before anything was collected or written

    # Re-signed with the forger's own key: intact, but not signed by the key this run uses.
    resigned = _reforge(
        genuine,
        tmp_path / "resigned.zip",
        {layout.RESULTS: json.dumps(results).encode()},
        resign=signing.generate_key(),
    )
    assert verify_bundle(resigned, reevaluate=False).ok  # checked against its own bundled key
    proc = _run(tmp_path, 0.5, "now2", "--baseline", resigned, "--fail-on", "new")
    assert proc.returncode == 2, proc.stderr
    assert "resigned.zip" in proc.stderr and "signature" in proc.stderr


def test_a_baseline_signed_with_a_retired_key_is_accepted_with_baseline_key(
    tmp_path: Path,
) -> None:
    """After a key rotation, the previous run's key is named explicitly."""
    _signed_setup(tmp_path)
    first = _run(tmp_path, 0.99, "base")
    assert first.returncode == 0, first.stderr
    (genuine,) = (tmp_path / "base").glob("*.zip")
    old_public = tmp_path / "old.pub.pem"
    old_public.write_bytes(
        signing.public_pem(
            signing.load_private_key((tmp_path / "signing.pem").read_bytes(), "k").public_key()
        )
    )
    (tmp_path / "signing.pem").write_bytes(signing.private_pem(signing.generate_key()))

    rotated = _run(tmp_path, 0.99, "rot", "--baseline", genuine)
    assert rotated.returncode == 2, rotated.stderr
    assert "signature" in rotated.stderr and "--baseline-key" in rotated.stderr
    named = _run(tmp_path, 0.99, "named", "--baseline", genuine, "--baseline-key", old_public)
    assert named.returncode == 0, named.stderr


# --- 12. verify is bounded: no zip bomb fills memory, no quadratic name check ----------------


def _zeros_member(size: int) -> tuple[bytes, int]:
    """The raw deflate stream of `size` zero bytes, made a MiB at a time, and its CRC-32."""
    chunk = bytes(2**20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts afresh: every further MiB deflates the same.
    whole, rest = divmod(size, len(chunk))
    assert rest == 0
    data = block * whole + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(whole):
        crc = zlib.crc32(chunk, crc)
    return data, crc


def _zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """A plain zip of (name, deflate stream, CRC-32, declared size) entries, written by hand so
    the declared size can be anything."""
    body, central = b"", b""
    for name, data, crc, size in entries:
        encoded = name.encode()
        fields = (20, 0, 8, 0, 0x5A21, crc, len(data), size, len(encoded))
        central += struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIH", *fields)
        central += struct.pack("<HHHHII", 0, 0, 0, 0, 0o100644 << 16, len(body)) + encoded
        body += struct.pack("<I", 0x04034B50) + struct.pack("<HHHHHIIIH", *fields)
        body += struct.pack("<H", 0) + encoded + data
    count = len(entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(body), 0)
    path.write_bytes(body + central + end)
    return path


def _bomb(path: Path, size: int, declared: int | None = None) -> Path:
    """A zip whose one member inflates to `size` zero bytes; its directory says `declared`."""
    data, crc = _zeros_member(size)
    _zip(path, [("raw/huge.json", data, crc, size if declared is None else declared)])
    with zipfile.ZipFile(path) as check:  # a well-formed zip that standard tools read
        assert check.infolist()[0].compress_size == len(data)
    return path


def test_verify_streams_a_large_member_instead_of_holding_it(tmp_path: Path) -> None:
    """256 MiB of zeros (a quarter-MiB file) is read through the hash, never held whole: the
    ratio of 3.9 GiB declared to 8.2 GB resident shows it was held twice."""
    bomb = _bomb(tmp_path / "bomb.zip", 256 * 2**20)
    tracemalloc.start()
    try:
        report = verify_bundle(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.ok
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB while verifying"


def test_verify_refuses_a_member_declared_beyond_the_cap_before_reading_it(
    tmp_path: Path,
) -> None:
    bomb = _bomb(tmp_path / "bomb.zip", 64 * 2**20)
    tracemalloc.start()
    try:
        one = verify_bundle(bomb, limits=verify.VerifyLimits(member_bytes=2**20))
        total = verify_bundle(bomb, limits=verify.VerifyLimits(total_bytes=2**20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (problem,) = one.problems
    assert problem.file == "raw/huge.json"
    assert "67108864 bytes" in problem.message and "limit of 1048576" in problem.message
    (problem,) = total.problems
    assert problem.file == "(zip structure)"
    assert "67108864 bytes" in problem.message and "limit of 1048576" in problem.message
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB while verifying"


def test_verify_stops_a_member_that_inflates_past_its_declared_size(tmp_path: Path) -> None:
    """The directory says 1 KiB; the stream holds 64 MiB. Reading stops at the declared size."""
    liar = _bomb(tmp_path / "liar.zip", 64 * 2**20, declared=1024)
    tracemalloc.start()
    try:
        report = verify_bundle(liar)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.ok
    assert report.problems[0].file == "raw/huge.json"
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB while verifying"


def test_the_cli_refuses_a_zip_bomb_by_its_declared_size(tmp_path: Path) -> None:
    """A member declared larger than the default per-member cap is refused unread."""
    declared = 3_900 * 2**20  # 3.9 GiB: under the 4 GiB total, above any one member's cap
    bomb = _bomb(tmp_path / "b.zip", 2**20, declared=declared)
    proc = run_cli("verify", bomb, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "FAILED raw/huge.json:" in proc.stderr and "limit" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verify_of_many_members_with_a_duplicate_name_names_it_once(tmp_path: Path) -> None:
    """65,000 members (the most a zip without zip64 holds, nearly): the duplicate is found with
    a set, not by counting each name in the list (that took 40 s). The timeout is a hang guard."""
    path = tmp_path / "many.zip"
    buffer = io.BytesIO()
    with (
        warnings.catch_warnings(),  # zipfile warns of the duplicate it is told to write
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive,
    ):
        warnings.simplefilter("ignore")
        for index in range(65_000):
            archive.writestr(f"raw/{index}.json", b"{}")
        archive.writestr("raw/7.json", b"[]")
    path.write_bytes(buffer.getvalue())
    proc = run_cli("verify", path, "--format", "json", cwd=tmp_path, timeout=30)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    duplicates = [p for p in report["problems"] if "more than once" in p["message"]]
    assert duplicates == [
        {"file": "raw/7.json", "message": "appears more than once in the archive"}
    ]


# --- 18. An unsigned bundle never gets a plain "OK" ------------------------------------------


def test_verify_says_unsigned_in_the_verdict_and_can_require_a_signature(
    demo_run: DemoRun, tmp_path: Path
) -> None:
    stripped = _reforge(demo_run.bundle, tmp_path / "stripped.zip", {})
    proc = run_cli("verify", stripped, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (verdict,) = [line for line in proc.stderr.splitlines() if line.startswith("OK")]
    assert "unsigned" in verdict

    required = run_cli("verify", stripped, "--require-signature", cwd=tmp_path)
    assert required.returncode == 1, required.stderr
    assert "FAILED SHA256SUMS.sig: " in required.stderr and "not signed" in required.stderr
    assert not [line for line in required.stderr.splitlines() if line.startswith("OK")]

    # A signed bundle is as before: a plain OK, with or without the flag.
    signed = run_cli("verify", demo_run.bundle, "--require-signature", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert "OK: the bundle verifies" in signed.stderr


# --- 16. Side reports: each whole or absent, and the run names what it could not write -------


def test_a_full_disk_while_writing_a_report_leaves_no_partial_file_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from auditor import cli
    from auditor.evidence import bundle

    training_snapshot(tmp_path)
    (tmp_path / "commsaudit.toml").write_text(TRAINING_REPLAY + '[evidence]\nout = "out"\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("the previous run's report")  # must not pass for this run's

    real_fdopen = os.fdopen

    class HalfWriter:
        """A file whose disk fills halfway through the write."""

        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        if str(Path(f"/proc/self/fd/{fd}").readlink()).startswith(str(out / ".report.html.")):
            return HalfWriter(handle)
        return handle

    monkeypatch.setattr(bundle.os, "fdopen", fdopen)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["audit", "--config", str(tmp_path / "commsaudit.toml")])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "internal error" not in stderr
    (line,) = [x for x in stderr.splitlines() if "report.html" in x and "error" in x]
    assert "No space left on device" in line
    # Whole or absent: the stale report is gone, no temporary file is left behind.
    assert not (out / "report.html").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    # Every other report was still written, whole.
    for name in ("report.md", "matrix.csv", "junit.xml", "results.sarif", "results.json"):
        assert (out / name).stat().st_size > 0, name
    (bundle_path,) = out.glob("*.zip")
    assert (out / "results.json").read_bytes() == members(bundle_path)["results.json"]


def test_a_report_name_that_cannot_be_replaced_is_named_and_the_rest_are_written(
    tmp_path: Path,
) -> None:
    training_snapshot(tmp_path)
    (tmp_path / "commsaudit.toml").write_text(TRAINING_REPLAY + '[evidence]\nout = "out"\n')
    out = tmp_path / "out"
    (out / "matrix.csv").mkdir(parents=True)  # a directory where the report goes
    (out / "matrix.csv" / "keep").write_text("x")
    proc = run_cli("audit", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "internal error" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "matrix.csv" in x]
    assert line.startswith("commsaudit: error: ") and "not written" in line
    for name in ("report.md", "report.html", "junit.xml", "results.sarif", "results.json"):
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
