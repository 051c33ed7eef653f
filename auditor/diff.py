"""What changed between two runs: controls whose status changed (and which of those are new
failures), settings whose values changed, and subjects that appeared or vanished.

Read from two bundles (`commsaudit diff OLD NEW`), or from a baseline bundle and the run in
progress (`commsaudit audit --baseline OLD`). A bundle is checked for integrity before it is
believed: a baseline someone edited would hide drift."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditor.evidence import layout
from auditor.evidence.verify import verify_bundle
from auditor.jsonutil import JSON
from auditor.model.errors import InputError
from auditor.reports.common import md_cell, md_code
from auditor.results import Results

FORMAT = "commsaudit/diff/v1"
# Statuses that need someone to act: a change into one of these is a new failure.
_BAD = ("fail", "error")
_MAX_SETTINGS = 2000  # per run: a diff is for reading; the snapshots hold everything
_PER_SECTION = 40
_TEXT_SETTINGS = 60


@dataclass(frozen=True)
class RunState:
    """What a diff compares of one run."""

    label: str
    run_id: str
    started_at: str
    statuses: dict[tuple[str, str], str]  # (control, subject) -> status
    severities: dict[str, str]  # control -> severity
    subjects: set[tuple[str, str, str]]  # (platform, kind, subject)
    sections: dict[tuple[str, str], Any]  # (section, subject) -> data of an ok section


@dataclass
class Diff:
    old: RunState
    new: RunState
    status_changes: list[dict[str, Any]] = field(default_factory=list)
    setting_changes: list[dict[str, Any]] = field(default_factory=list)
    settings_truncated: int = 0
    subjects_added: list[list[str]] = field(default_factory=list)
    subjects_removed: list[list[str]] = field(default_factory=list)
    # [old, new] subjects compared as one (the only subject of their kind in each run).
    paired_subjects: list[list[str]] = field(default_factory=list)

    @property
    def new_failures(self) -> list[dict[str, Any]]:
        return [c for c in self.status_changes if c["new_failure"]]

    def to_json(self) -> dict[str, JSON]:
        return {
            "format": FORMAT,
            "old": {
                "run": self.old.run_id,
                "started_at": self.old.started_at,
                "from": self.old.label,
            },
            "new": {
                "run": self.new.run_id,
                "started_at": self.new.started_at,
                "from": self.new.label,
            },
            "summary": {
                "status_changes": len(self.status_changes),
                "new_failures": len(self.new_failures),
                "setting_changes": len(self.setting_changes) + self.settings_truncated,
                "subjects_added": len(self.subjects_added),
                "subjects_removed": len(self.subjects_removed),
            },
            "status_changes": self.status_changes,
            "setting_changes": self.setting_changes,
            "settings_not_listed": self.settings_truncated,
            "subjects_added": self.subjects_added,
            "subjects_removed": self.subjects_removed,
            "paired_subjects": self.paired_subjects,
        }


def state_from(results: Results, snapshot: dict[str, Any], label: str) -> RunState:
    subjects = {
        (platform, kind, subject)
        for platform, kinds in (snapshot.get("scope") or {}).items()
        for kind, names in kinds.items()
        for subject in names
    }
    sections = {
        (s["name"], s["subject"]): s.get("data")
        for s in snapshot.get("sections", [])
        if s.get("status") == "ok" and not s.get("derived")
    }
    return RunState(
        label=label,
        run_id=results.run.id,
        started_at=results.run.started_at,
        statuses={(r.control, r.subject): r.status for r in results.results},
        severities={r.control: r.severity for r in results.results},
        subjects=subjects,
        sections=sections,
    )


def read_bundle_state(
    path: Path, key: Ed25519PublicKey | None = None, *, hint: str | None = None
) -> RunState:
    """A bundle's results and snapshot, once its hashes (and its signature: with `key`, by
    that key) check out. What is compared is what was verified, not a second read of the file.
    `hint` says what to do when it does not verify."""
    report = verify_bundle(path, key, reevaluate=False)
    if not report.ok:
        first = report.problems[0].line()
        raise InputError(
            f"the bundle does not verify ({first}); it cannot be compared",
            where=str(path),
            hint=hint,
        )
    try:
        results = Results.from_json(json.loads(report.contents[layout.RESULTS]))
        snapshot = json.loads(report.contents[layout.SNAPSHOT])
        return state_from(results, snapshot, path.name)
    # Intact is not well-formed: an unsigned bundle can be made by anyone, hashes and all.
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"the bundle's {layout.RESULTS} or {layout.SNAPSHOT} is not as commsaudit writes "
            f"it ({type(exc).__name__})",
            where=str(path),
        ) from exc


def _leaves(value: Any, pointer: str = "") -> dict[str, Any]:
    """JSON pointer -> scalar. Lists of objects with a name-like key are keyed by it, so one
    item added to a list does not show as every later item changed."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(_leaves(item, f"{pointer}/{key}"))
        return found or {pointer: {}}
    if isinstance(value, list):
        found = {}
        for index, item in enumerate(value):
            key = _item_key(item)
            found.update(_leaves(item, f"{pointer}/{key if key is not None else index}"))
        return found or {pointer: []}
    return {pointer: value}


def _collapse_items(mine: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A list item (keyed `[name=...]`) present on this side only becomes one entry, "(item)",
    instead of one per setting inside it."""
    other_items = {
        "/".join(parts[: i + 1])
        for pointer in other
        for parts in [pointer.split("/")]
        for i, part in enumerate(parts)
        if part.startswith("[")
    }
    collapsed: dict[str, Any] = {}
    for pointer, value in mine.items():
        parts = pointer.split("/")
        for i, part in enumerate(parts):
            prefix = "/".join(parts[: i + 1])
            if part.startswith("[") and prefix not in other_items:
                collapsed[prefix] = "(item)"
                break
        else:
            collapsed[pointer] = value
    return collapsed


def _item_key(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    for key in ("id", "name", "identity", "user", "userPrincipalName", "Identity", "domain", "arn"):
        value = item.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return f"[{key}={value}]"
    return None


def _paired(old: RunState, new: RunState) -> dict[str, str]:
    """New subject -> old subject, where each run has exactly one subject of a kind and the
    names differ (another tenant, a renamed account): compared as the same subject."""
    pairs: dict[str, str] = {}
    kinds = {(p, k) for p, k, _ in old.subjects} & {(p, k) for p, k, _ in new.subjects}
    for platform, kind in kinds:
        was = [s for p, k, s in old.subjects if (p, k) == (platform, kind)]
        now = [s for p, k, s in new.subjects if (p, k) == (platform, kind)]
        if len(was) == 1 and len(now) == 1 and was != now:
            pairs[now[0]] = was[0]
    return pairs


def compare(old: RunState, new: RunState) -> Diff:
    diff = Diff(old, new)
    pairs = _paired(old, new)
    diff.paired_subjects = [[was, now] for now, was in sorted(pairs.items())]
    renamed = {(c, pairs.get(s, s)): v for (c, s), v in new.statuses.items()}
    shown = {pairs.get(s, s): s for (_c, s) in new.statuses}
    new_sections = {(n, pairs.get(s, s)): v for (n, s), v in new.sections.items()}
    for key in sorted(set(old.statuses) | set(renamed)):
        before, after = old.statuses.get(key), renamed.get(key)
        if before == after:
            continue
        control, subject = key
        diff.status_changes.append(
            {
                "control": control,
                "subject": _both(subject, shown.get(subject, subject)),
                "severity": new.severities.get(control) or old.severities.get(control),
                "old": before,
                "new": after,
                "new_failure": after in _BAD and before not in _BAD,
                "resolved": before in _BAD and after not in _BAD and after is not None,
            }
        )
    diff.subjects_added = [list(s) for s in sorted(new.subjects - old.subjects)]
    diff.subjects_removed = [list(s) for s in sorted(old.subjects - new.subjects)]
    changes: list[dict[str, Any]] = []
    truncated = 0
    for key in sorted(set(old.sections) & set(new_sections)):
        found: list[dict[str, Any]] = []
        was, now = _leaves(old.sections[key]), _leaves(new_sections[key])
        was, now = _collapse_items(was, now), _collapse_items(now, was)
        for pointer in sorted(set(was) | set(now)):
            if was.get(pointer, _MISSING) != now.get(pointer, _MISSING):
                found.append(
                    {
                        "section": key[0],
                        "subject": _both(key[1], shown.get(key[1], key[1])),
                        "pointer": pointer,
                        "old": was.get(pointer),
                        "new": now.get(pointer),
                        **({"added": True} if pointer not in was else {}),
                        **({"removed": True} if pointer not in now else {}),
                    }
                )
        # Per section, so a long list (every mailbox) cannot crowd out the other sections.
        changes.extend(found[:_PER_SECTION])
        truncated += max(0, len(found) - _PER_SECTION)
    diff.setting_changes = changes[:_MAX_SETTINGS]
    diff.settings_truncated = truncated + max(0, len(changes) - _MAX_SETTINGS)
    return diff


_MISSING = object()


def _both(old_subject: str, new_subject: str) -> str:
    return old_subject if old_subject == new_subject else f"{old_subject} -> {new_subject}"


def render_text(diff: Diff) -> list[str]:
    lines = [
        f"Comparing run {diff.old.run_id} ({diff.old.started_at}, {diff.old.label})",
        f"     with run {diff.new.run_id} ({diff.new.started_at}, {diff.new.label})",
        "",
    ]
    for was, now in diff.paired_subjects:
        lines.append(f"Compared {now} with {was} (the only subject of its kind in each run).")
    if diff.paired_subjects:
        lines.append("")
    groups = _grouped(diff)
    if not diff.status_changes:
        lines.append("No control changed status.")
    for title, changes in (
        ("New failures", groups["new_failure"]),
        ("Resolved", groups["resolved"]),
        ("Other status changes", groups["changed"]),
    ):
        if changes:
            lines.append(f"{title} ({len(changes)}):")
            lines.extend(
                f"  {c['control']} ({c['subject']}): {c['old']} -> {c['new']}" for c in changes
            )
    for platform, (only_old, only_new) in sorted(_one_sided(groups).items()):
        lines.append(
            f"{platform}: {only_old} result(s) only in the old run, {only_new} only in the new "
            "(audited in one run only)"
        )
    lines.append("")
    if diff.setting_changes:
        total = len(diff.setting_changes) + diff.settings_truncated
        lines.append(f"Settings whose values changed ({total}):")
        for change in diff.setting_changes[:_TEXT_SETTINGS]:
            lines.append(
                f"  {change['section']} ({change['subject']}) {change['pointer']}: "
                f"{_short(change['old'])} -> {_short(change['new'])}"
            )
        unlisted = total - min(len(diff.setting_changes), _TEXT_SETTINGS)
        if unlisted:
            lines.append(f"  ... and {unlisted} more (--format json lists up to {_MAX_SETTINGS})")
    else:
        lines.append("No collected setting changed.")
    for title, subjects in (
        ("New subjects", diff.subjects_added),
        ("Vanished subjects", diff.subjects_removed),
    ):
        if subjects:
            lines.append("")
            lines.append(f"{title} ({len(subjects)}):")
            lines.extend(f"  {platform} {kind} {subject}" for platform, kind, subject in subjects)
    return lines


def _grouped(diff: Diff) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {
        "new_failure": [],
        "resolved": [],
        "changed": [],
        "one_sided": [],
    }
    for change in diff.status_changes:
        # A control with a result in one run only, or only the "not in scope" placeholder, was
        # not audited on both sides: counted, not listed.
        placeholder = change["subject"] == change["control"].split(".")[0]
        if change["old"] is None or change["new"] is None or placeholder:
            groups["one_sided"].append(change)
        elif change["new_failure"]:
            groups["new_failure"].append(change)
        elif change["resolved"]:
            groups["resolved"].append(change)
        else:
            groups["changed"].append(change)
    return groups


def _one_sided(groups: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for change in groups["one_sided"]:
        platform = change["control"].split(".")[0]
        old, new = counts.get(platform, (0, 0))
        in_old = change["old"] not in (None, "not_applicable")
        counts[platform] = (old + int(in_old), new + int(not in_old))
    return counts


def render_markdown(diff: Diff) -> list[str]:
    out = ["## Changes since the baseline", ""]
    out.append(
        f"Baseline: run {md_code(diff.old.run_id)} ({md_cell(diff.old.started_at)}). "
        f"{len(diff.new_failures)} new failure(s), {len(diff.status_changes)} status change(s), "
        f"{len(diff.setting_changes) + diff.settings_truncated} setting change(s), "
        f"{len(diff.subjects_added)} new and {len(diff.subjects_removed)} vanished subject(s)."
    )
    out.append("")
    groups = _grouped(diff)
    listed = [
        (label, change)
        for label, key in (
            ("**new failure**", "new_failure"),
            ("resolved", "resolved"),
            ("changed", "changed"),
        )
        for change in groups[key]
    ]
    if listed:
        out.append("| Change | Control | Subject | Was | Now |")
        out.append("|---|---|---|---|---|")
        for label, change in listed:
            out.append(
                f"| {label} | {md_code(str(change['control']), in_table=True)} | "
                f"{md_cell(change['subject'])} | {md_cell(str(change['old']))} | "
                f"{md_cell(str(change['new']))} |"
            )
        out.append("")
    for platform, (only_old, only_new) in sorted(_one_sided(groups).items()):
        out.append(
            f"- {platform}: {only_old} result(s) only in the baseline, {only_new} only in this run"
        )
    if groups["one_sided"]:
        out.append("")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:79] + "…"
