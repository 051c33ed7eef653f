"""Verify a bundle: canonical archive, safe paths, every hash, the signature, the manifest, and a
re-evaluation of the bundled snapshot with the bundled policies.

Nothing in the bundle is trusted before it is checked, and the key that proves who signed it
comes from the verifier (`--key`), not from the bundle: the bundled public key only shows the
bundle is intact, since whoever altered a bundle could have re-signed it with a key of their own.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditor.engine import EvaluationContext, evaluate
from auditor.errors import AuditError, InputError
from auditor.evidence import layout, signing
from auditor.evidence.bundle import parse_sums
from auditor.evidence.ziparchive import ArchiveError, read_content, read_members
from auditor.jsonutil import JSON, dumps_canonical, sha256_hex
from auditor.policy import policies_from_contents
from auditor.results import Result, Results
from auditor.snapshot import snapshot_from_json
from auditor.timeutil import parse_isoz
from auditor.waivers import Waiver

MAX_BUNDLE_BYTES = 4 * 2**30


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
    path: Path, key: Ed25519PublicKey | None = None, *, reevaluate: bool = True
) -> VerifyReport:
    report = VerifyReport(bundle=str(path), key_pinned=key is not None)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read the bundle: {exc.strerror}", where=str(path)) from exc
    if size > MAX_BUNDLE_BYTES:
        raise InputError("larger than 4 GiB; not a commsaudit bundle", where=str(path))
    blob = path.read_bytes()
    with contextlib.suppress(_Stop):  # the problem that stopped it is already in the report
        _verify(blob, key, reevaluate, report)
    return report


def _verify(
    blob: bytes, key: Ed25519PublicKey | None, reevaluate: bool, report: VerifyReport
) -> None:
    # 1. Read the members with a lenient reader first, so damage is reported against the file
    # it hit (a rewritten archive still shows which member changed); the byte-exact check of
    # the archive's structure comes after the content checks.
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        infos = archive.infolist()
    # A damaged archive can make zipfile raise almost anything (NotImplementedError for a
    # flipped version byte, UnicodeDecodeError for a flipped name byte): all mean "unreadable".
    except Exception as exc:
        report.problems.append(Problem("(zip structure)", f"not a readable zip archive: {exc}"))
        raise _Stop from exc
    names = [info.filename for info in infos]
    for name in names:
        reason = layout.unsafe_reason(name)
        if reason:
            report.problems.append(Problem(name, f"unsafe archive path refused: {reason}"))
    for name in sorted({n for n in names if names.count(n) > 1}):
        report.problems.append(Problem(name, "appears more than once in the archive"))
    if sum(info.file_size for info in infos) > MAX_BUNDLE_BYTES:
        report.problems.append(Problem("(zip structure)", "expands to more than 4 GiB"))
    if report.problems:
        raise _Stop

    contents: dict[str, bytes] = {}
    for info in infos:
        try:
            contents[info.filename] = archive.read(info)
        except Exception as exc:  # as above: any failure to read is damage to this member
            report.problems.append(Problem(info.filename, f"cannot be read: {exc}"))
    if report.problems:
        raise _Stop

    # 2. SHA256SUMS covers every member but itself and its signature.
    if layout.SUMS not in contents:
        report.problems.append(Problem(layout.SUMS, "missing from the bundle"))
        raise _Stop
    try:
        sums = parse_sums(contents[layout.SUMS])
    except (ValueError, UnicodeDecodeError) as exc:
        report.problems.append(Problem(layout.SUMS, f"malformed: {exc}"))
        raise _Stop from exc
    for name, digest in sums.items():
        if name not in contents:
            report.problems.append(
                Problem(name, f"listed in {layout.SUMS} but missing from the bundle")
            )
        elif sha256_hex(contents[name]) != digest:
            report.problems.append(Problem(name, f"sha256 does not match {layout.SUMS}"))
    for name in contents:
        if name not in sums and name not in (layout.SUMS, layout.SIGNATURE):
            report.problems.append(Problem(name, f"not listed in {layout.SUMS}"))
    report.files_checked = len(sums)

    # 3. The signature over SHA256SUMS.
    manifest = _json(contents, layout.MANIFEST, report)
    report.run_id = (manifest.get("run") or {}).get("id")
    declared = manifest.get("signature") or {}
    signature = contents.get(layout.SIGNATURE)
    if signature is None:
        report.signature = "absent"
        if key is not None:
            report.problems.append(
                Problem(
                    layout.SIGNATURE,
                    "the bundle is not signed, but a key was given to check it against",
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

    # 4. The manifest's own file list agrees with what is there.
    for entry in manifest.get("files", []):
        name = entry.get("path")
        if name not in contents:
            report.problems.append(Problem(str(name), "listed in the manifest but missing"))
        elif entry.get("sha256") != sha256_hex(contents[name]) or entry.get("size") != len(
            contents[name]
        ):
            report.problems.append(Problem(str(name), "hash or size differs from the manifest"))
    listed = {e.get("path") for e in manifest.get("files", [])}
    for name in contents:
        if name not in listed and name not in (layout.MANIFEST, layout.SUMS, layout.SIGNATURE):
            report.problems.append(Problem(name, "not listed in the manifest"))

    # 5. Every byte of the archive is as commsaudit writes it: canonical headers, nothing
    # between or after the members, every timestamp the run's start.
    started = (manifest.get("run") or {}).get("started_at")
    try:
        moment = parse_isoz(started) if isinstance(started, str) else None
    except ValueError:
        moment = None
        report.problems.append(Problem(layout.MANIFEST, "run.started_at is not a timestamp"))
    try:
        for member in read_members(blob, moment):
            read_content(blob, member)
    except ArchiveError as exc:
        report.problems.append(Problem(exc.member or "(zip structure)", exc.problem))

    # 6. The results follow from the snapshot and the policies.
    if reevaluate and not report.problems:
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
