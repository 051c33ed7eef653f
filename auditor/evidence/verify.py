"""Verify a bundle: canonical archive, safe paths, every hash, the signature, the manifest, and a
re-evaluation of the bundled snapshot with the bundled policies.

Nothing in the bundle is trusted before it is checked, and the key that proves who signed it
comes from the verifier (`--key`), not from the bundle: the bundled public key only shows the
bundle is intact, since whoever altered a bundle could have re-signed it with a key of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditor.engine import EvaluationContext, evaluate
from auditor.evidence import layout, signing
from auditor.evidence.bundle import parse_sums
from auditor.evidence.ziparchive import ArchiveError, check_content, read_members
from auditor.jsonutil import JSON, dumps_canonical
from auditor.model.errors import AuditError, InputError
from auditor.model.snapshot import snapshot_from_json
from auditor.policy import policies_from_contents
from auditor.results import Result, Results
from auditor.timeutil import parse_isoz
from auditor.validation import DEFAULT_TIMEOUT_SECONDS
from auditor.waivers import Waiver

MAX_BUNDLE_BYTES = 4 * 2**30
# One member of a bundle commsaudit writes is at most a large tenant's snapshot; writing a
# snapshot of a GiB would take the writer many times that in memory, so a member declared larger
# is not ours and is refused unread.
MAX_MEMBER_BYTES = 2**30
_PIECE = 2**20
# Members verification reads whole (to parse them); every other member only passes through the
# hash, a piece at a time.
_WHOLE = frozenset({layout.MANIFEST, layout.SUMS, layout.SIGNATURE, layout.PUBLIC_KEY})
_WHOLE_FOR_RESULTS = frozenset({layout.RESULTS, layout.SNAPSHOT})


@dataclass(frozen=True)
class VerifyLimits:
    """How far a bundle may inflate: checked against what its zip directory declares before
    anything is read, and against what is actually read."""

    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_BUNDLE_BYTES


@dataclass
class Problem:
    file: str
    message: str

    def line(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class VerifyReport:
    bundle: str
    problems: list[Problem] = field(default_factory=list)
    signature: str = "absent"  # valid | invalid | absent
    key_fingerprint: str | None = None
    key_pinned: bool = False
    run_id: str | None = None
    files_checked: int = 0
    results_compared: int = 0
    notes: list[str] = field(default_factory=list)
    # The members read whole (manifest, sums, results, snapshot, policies), as verified: for a
    # caller that reads them next, so it needs no second, unchecked read of the file.
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, JSON]:
        return {
            "format": "commsaudit/verify/v1",
            "bundle": self.bundle,
            "ok": self.ok,
            "run_id": self.run_id,
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
            "key_pinned": self.key_pinned,
            "files_checked": self.files_checked,
            "results_compared": self.results_compared,
            "problems": [{"file": p.file, "message": p.message} for p in self.problems],
            "notes": self.notes,
        }


class _Stop(Exception):
    """Verification cannot go further; the problem is already recorded."""


def _json(contents: dict[str, bytes], name: str, report: VerifyReport) -> Any:
    if name not in contents:
        report.problems.append(Problem(name, "missing from the bundle"))
        raise _Stop
    try:
        return json.loads(contents[name])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.problems.append(Problem(name, f"not valid JSON ({exc})"))
        raise _Stop from exc


def _comparable(result: Result) -> str:
    return dumps_canonical(
        {
            "status": result.status,
            "reason": result.reason,
            "evidence": [(e.section, e.pointer, e.value, e.message) for e in result.evidence],
            "waiver": result.waiver,
        }
    )


def _timeout_seconds(value: Any) -> float:
    """The run's time limit per policy, as its manifest says (bounded: the bundle is not
    trusted), so a policy that ran out of time then runs out of time here too."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 3600:
        return float(value)
    return DEFAULT_TIMEOUT_SECONDS


def _reevaluate(contents: dict[str, bytes], manifest: dict[str, Any], report: VerifyReport) -> None:
    recorded = Results.from_json(_json(contents, layout.RESULTS, report))
    snapshot = snapshot_from_json(_json(contents, layout.SNAPSHOT, report), layout.SNAPSHOT)
    policy_files = {
        name.removeprefix(layout.POLICIES_DIR): data
        for name, data in contents.items()
        if name.startswith(layout.POLICIES_DIR) and name.endswith(".json")
    }
    policies = policies_from_contents(policy_files, "policies")
    if policies.digest() != manifest.get("policy_digest"):
        report.problems.append(
            Problem(
                layout.POLICIES_DIR, "the policy files do not match the manifest's policy_digest"
            )
        )
    evaluation = manifest.get("evaluation", {})
    context = EvaluationContext(
        profile=evaluation.get("profile", recorded.run.profile),
        now=parse_isoz(evaluation.get("evaluated_at", recorded.run.evaluated_at)),
        waivers=[Waiver.from_json(w, i) for i, w in enumerate(evaluation.get("waivers", []))],
        parameters=evaluation.get("parameters", {}),
        # Whichever validator this machine has: both give identical results
        # (tests/test_validator_parity.py), and the verifier may lack jsonschema-rs.
        backend="auto",
        timeout_seconds=_timeout_seconds(evaluation.get("timeout_seconds")),
    )
    fresh = evaluate(policies, snapshot, context).results
    old = {(r.control, r.subject): r for r in recorded.results}
    new = {(r.control, r.subject): r for r in fresh}
    report.results_compared = len(new)
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        label = f"{key[0]} for {key[1]}"
        if before is None:
            report.problems.append(
                Problem(
                    layout.RESULTS,
                    f"{label}: missing (re-evaluation gives {after.status if after else '?'})",
                )
            )
        elif after is None:
            report.problems.append(
                Problem(
                    layout.RESULTS,
                    f"{label}: recorded {before.status}, but re-evaluation produces no such result",
                )
            )
        elif before.status != after.status:
            report.problems.append(
                Problem(
                    layout.RESULTS,
                    f"{label}: recorded {before.status}, re-evaluation gives {after.status}",
                )
            )
        elif _comparable(before) != _comparable(after):
            report.problems.append(
                Problem(
                    layout.RESULTS,
                    f"{label}: recorded reason or evidence differs from re-evaluation",
                )
            )


def verify_bundle(
    path: Path,
    key: Ed25519PublicKey | None = None,
    *,
    reevaluate: bool = True,
    require_signature: bool = False,
    limits: VerifyLimits | None = None,
) -> VerifyReport:
    """Check a bundle. With `key`, it must be signed with that key; with `require_signature`,
    it must be signed at all (an unsigned bundle shows only that nobody edited it carelessly)."""
    report = VerifyReport(bundle=str(path), key_pinned=key is not None)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read the bundle: {exc.strerror}", where=str(path)) from exc
    if size > MAX_BUNDLE_BYTES:
        raise InputError("larger than 4 GiB; not a commsaudit bundle", where=str(path))
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the bundle: {exc.strerror}", where=str(path)) from exc
    checks = _Checks(key, reevaluate, require_signature, limits or VerifyLimits())
    with contextlib.suppress(_Stop):  # the problem that stopped it is already in the report
        _verify(blob, checks, report)
    return report


@dataclass(frozen=True)
class _Checks:
    key: Ed25519PublicKey | None
    reevaluate: bool
    require_signature: bool
    limits: VerifyLimits


@dataclass(frozen=True)
class _Digest:
    sha256: str
    size: int


def _read_whole(name: str, reevaluate: bool) -> bool:
    if name in _WHOLE:
        return True
    # results.json and the snapshot: read for re-evaluation, and for the callers (diff,
    # report) that use them once the bundle verifies.
    return name in _WHOLE_FOR_RESULTS or (
        reevaluate and name.startswith(layout.POLICIES_DIR) and name.endswith(".json")
    )


def _check_declared(
    infos: list[zipfile.ZipInfo], limits: VerifyLimits, report: VerifyReport
) -> None:
    """Names and sizes from the zip directory, before a byte of a member is inflated."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for info in infos:
        (repeated if info.filename in seen else seen).add(info.filename)
        reason = layout.unsafe_reason(info.filename)
        if reason:
            report.problems.append(Problem(info.filename, f"unsafe archive path refused: {reason}"))
        if info.file_size > limits.member_bytes:
            report.problems.append(
                Problem(
                    info.filename,
                    f"declares {info.file_size} bytes uncompressed, more than the limit of "
                    f"{limits.member_bytes} for one member; refused unread",
                )
            )
    for name in sorted(repeated):
        report.problems.append(Problem(name, "appears more than once in the archive"))
    total = sum(info.file_size for info in infos)
    if total > limits.total_bytes:
        report.problems.append(
            Problem(
                "(zip structure)",
                f"expands to {total} bytes, more than the limit of {limits.total_bytes}; "
                "refused unread",
            )
        )


def _stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, whole: bool) -> tuple[_Digest, bytes]:
    """Hash one member a piece at a time; its content too when `whole`. zipfile stops at the
    size the directory declares (already within the limits) and checks the CRC at the end."""
    digest = hashlib.sha256()
    size = 0
    pieces: list[bytes] = []
    with archive.open(info) as handle:
        while piece := handle.read(_PIECE):
            size += len(piece)
            digest.update(piece)
            if whole:
                pieces.append(piece)
    if size != info.file_size:
        raise ValueError(f"inflates to {size} bytes, not the {info.file_size} the zip declares")
    return _Digest(digest.hexdigest(), size), b"".join(pieces)


def _verify(blob: bytes, checks: _Checks, report: VerifyReport) -> None:
    """The checks in order; a step that finds the bundle unusable stops the rest (`_Stop`)."""
    digests, contents = _read_members(blob, checks, report)
    _check_sums(digests, contents, report)
    manifest = _json(contents, layout.MANIFEST, report)
    report.run_id = (manifest.get("run") or {}).get("id")
    _check_signature(contents, manifest, checks, report)
    _check_manifest_listing(digests, manifest, report)
    _check_archive_bytes(blob, manifest, checks, report)
    if checks.reevaluate and not report.problems:
        _check_results(contents, manifest, report)


def _read_members(
    blob: bytes, checks: _Checks, report: VerifyReport
) -> tuple[dict[str, _Digest], dict[str, bytes]]:
    """Every member read with a lenient reader first, so damage is reported against the file it
    hit (a rewritten archive still shows which member changed); the byte-exact check of the
    archive's structure comes after the content checks."""
    reevaluate = checks.reevaluate
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        infos = archive.infolist()
    # A damaged archive can make zipfile raise almost anything (NotImplementedError for a
    # flipped version byte, UnicodeDecodeError for a flipped name byte): all mean "unreadable".
    except Exception as exc:
        report.problems.append(Problem("(zip structure)", f"not a readable zip archive: {exc}"))
        raise _Stop from exc
    _check_declared(infos, checks.limits, report)
    if report.problems:
        raise _Stop

    digests: dict[str, _Digest] = {}
    contents: dict[str, bytes] = {}
    for info in infos:
        whole = _read_whole(info.filename, reevaluate)
        try:
            digests[info.filename], content = _stream(archive, info, whole)
        except Exception as exc:  # as above: any failure to read is damage to this member
            report.problems.append(Problem(info.filename, f"cannot be read: {exc}"))
            continue
        if whole:
            contents[info.filename] = content
    if report.problems:
        raise _Stop
    report.contents = contents
    return digests, contents


def _check_sums(
    digests: dict[str, _Digest], contents: dict[str, bytes], report: VerifyReport
) -> None:
    """SHA256SUMS covers every member but itself and its signature."""
    if layout.SUMS not in contents:
        report.problems.append(Problem(layout.SUMS, "missing from the bundle"))
        raise _Stop
    try:
        sums = parse_sums(contents[layout.SUMS])
    except (ValueError, UnicodeDecodeError) as exc:
        report.problems.append(Problem(layout.SUMS, f"malformed: {exc}"))
        raise _Stop from exc
    for name, digest in sums.items():
        if name not in digests:
            report.problems.append(
                Problem(name, f"listed in {layout.SUMS} but missing from the bundle")
            )
        elif digests[name].sha256 != digest:
            report.problems.append(Problem(name, f"sha256 does not match {layout.SUMS}"))
    for name in digests:
        if name not in sums and name not in (layout.SUMS, layout.SIGNATURE):
            report.problems.append(Problem(name, f"not listed in {layout.SUMS}"))
    report.files_checked = len(sums)


def _check_signature(
    contents: dict[str, bytes], manifest: dict[str, Any], checks: _Checks, report: VerifyReport
) -> None:
    """The signature over SHA256SUMS."""
    key = checks.key
    declared = manifest.get("signature") or {}
    signature = contents.get(layout.SIGNATURE)
    if signature is None:
        report.signature = "absent"
        if key is not None:
            report.problems.append(
                Problem(
                    layout.SIGNATURE,
                    f"the bundle is not signed, but must be signed with key "
                    f"{signing.fingerprint(key)}",
                )
            )
        elif checks.require_signature:
            report.problems.append(
                Problem(
                    layout.SIGNATURE,
                    "the bundle is not signed, and a signature is required: anyone could have "
                    "made or re-made it",
                )
            )
        elif declared:
            report.problems.append(
                Problem(layout.SIGNATURE, "missing, though the manifest says the bundle is signed")
            )
    else:
        check_key = key
        if check_key is None:
            if layout.PUBLIC_KEY not in contents:
                report.problems.append(
                    Problem(layout.PUBLIC_KEY, "missing: the signature cannot be checked")
                )
                raise _Stop
            try:
                check_key = signing.load_public_key(contents[layout.PUBLIC_KEY], layout.PUBLIC_KEY)
            except AuditError as exc:
                report.problems.append(Problem(layout.PUBLIC_KEY, exc.message))
                raise _Stop from exc
            report.notes.append(
                "signature checked against the public key inside the bundle: this proves the "
                "bundle is intact, not who made it; pass --key to check it against a key you trust"
            )
        report.key_fingerprint = signing.fingerprint(check_key)
        if signing.signature_valid(check_key, signature, contents[layout.SUMS]):
            report.signature = "valid"
        else:
            report.signature = "invalid"
            expected = declared.get("fingerprint")
            detail = (
                f"; the bundle says it was signed by {expected}"
                if expected and expected != report.key_fingerprint
                else ""
            )
            report.problems.append(
                Problem(
                    layout.SIGNATURE,
                    f"the signature over {layout.SUMS} does not verify with key "
                    f"{report.key_fingerprint}{detail}",
                )
            )
        if (
            declared.get("fingerprint")
            and declared["fingerprint"] != report.key_fingerprint
            and report.signature == "valid"
        ):
            report.problems.append(
                Problem(
                    layout.MANIFEST,
                    "the manifest names a different signing key than the one that verifies",
                )
            )


def _check_manifest_listing(
    digests: dict[str, _Digest], manifest: dict[str, Any], report: VerifyReport
) -> None:
    """The manifest's own file list agrees with what is there."""
    for entry in manifest.get("files", []):
        name = entry.get("path")
        if name not in digests:
            report.problems.append(Problem(str(name), "listed in the manifest but missing"))
        elif (entry.get("sha256"), entry.get("size")) != (digests[name].sha256, digests[name].size):
            report.problems.append(Problem(str(name), "hash or size differs from the manifest"))
    listed = {e.get("path") for e in manifest.get("files", [])}
    for name in digests:
        if name not in listed and name not in (layout.MANIFEST, layout.SUMS, layout.SIGNATURE):
            report.problems.append(Problem(name, "not listed in the manifest"))


def _check_archive_bytes(
    blob: bytes, manifest: dict[str, Any], checks: _Checks, report: VerifyReport
) -> None:
    """Every byte of the archive is as commsaudit writes it: canonical headers, nothing between or
    after the members, every timestamp the run's start."""
    started = (manifest.get("run") or {}).get("started_at")
    try:
        moment = parse_isoz(started) if isinstance(started, str) else None
    except ValueError:
        moment = None
        report.problems.append(Problem(layout.MANIFEST, "run.started_at is not a timestamp"))
    try:
        members = read_members(blob, moment)
        # This reader parses the directory itself: its sizes are held to the limits again.
        declared = sum(member.size for member in members)
        if declared > checks.limits.total_bytes:
            raise ArchiveError(
                None,
                f"expands to {declared} bytes, more than the limit of {checks.limits.total_bytes}",
            )
        for member in members:
            check_content(blob, member, checks.limits.member_bytes)
    except ArchiveError as exc:
        report.problems.append(Problem(exc.member or "(zip structure)", exc.problem))


def _check_results(
    contents: dict[str, bytes], manifest: dict[str, Any], report: VerifyReport
) -> None:
    """The results follow from the snapshot and the policies."""
    try:
        _reevaluate(contents, manifest, report)
    except AuditError as exc:
        report.problems.append(Problem(exc.where or layout.RESULTS, exc.message))
    except (KeyError, TypeError, ValueError) as exc:
        report.problems.append(
            Problem(layout.RESULTS, f"cannot re-evaluate: {type(exc).__name__}: {exc}")
        )


def describe(report: VerifyReport) -> list[str]:
    """Lines for people."""
    lines = [f"bundle: {report.bundle}"]
    if report.run_id:
        lines.append(f"run: {report.run_id}")
    lines.append(f"files checked against SHA256SUMS: {report.files_checked}")
    sig = report.signature
    if report.key_fingerprint:
        origin = "pinned with --key" if report.key_pinned else "from the bundle"
        sig += f" (key {report.key_fingerprint}, {origin})"
    lines.append(f"signature: {sig}")
    if report.results_compared:
        lines.append(f"results re-evaluated: {report.results_compared}")
    lines.extend(f"note: {n}" for n in report.notes)
    return lines
