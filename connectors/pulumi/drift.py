"""Drift between a Pulumi stack's declared state and the live AWS account: for each audited
setting the stack declares, the live value of the same resource. The comparison is a derived
section (`pulumi.drift`, one per stack) that `pulumi.declared-matches-live` judges.

Only what the stack declares is compared: live resources the stack does not own are not drift,
and a declared resource missing live is. When a live section could not be read, the comparison
is `error` unless a difference was found elsewhere (that is drift either way)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditor.model.section import Section, SectionStatus
from auditor.model.snapshot import Snapshot


@dataclass(frozen=True)
class Compared:
    """How one section's items are matched (by `key` within `items`) and which settings."""

    items: str | None  # None: the section is one object (the account's password policy)
    key: str
    settings: tuple[str, ...]


def _has(value: Any) -> bool:
    return bool(value)


# "has:x" compares only whether x is set: declared key ids and ARNs are placeholders
# before deployment, or aliases where the live side answers with an ARN.
SECTIONS: dict[str, Compared] = {
    "aws.s3.account_public_access_block": Compared(
        None,
        "",
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
    ),
    "aws.iam.password_policy": Compared(
        None, "", ("minimum_length", "reuse_prevention", "max_age_days")
    ),
    "aws.s3.buckets": Compared(
        "buckets",
        "name",
        ("encryption.algorithm", "public_access_block", "versioning", "object_lock"),
    ),
    "aws.cloudtrail.trails": Compared(
        "trails",
        "name",
        (
            "multi_region",
            "logging",
            "log_file_validation",
            "has:kms_key_id",
            "management_events",
            "data_events",
        ),
    ),
    "aws.ses.configuration_sets": Compared("configuration_sets", "name", ("tls_policy",)),
    "aws.ses.event_destinations": Compared("configuration_sets", "name", ("event_destinations",)),
    # DKIM signing is left out: SES turns it on by default and stacks rarely say so, and
    # aws.ses.dkim-enabled judges the live value anyway.
    "aws.ses.identities": Compared("identities", "identity", ("configuration_set",)),
    "aws.kms.keys": Compared("keys", "key_id", ("state", "rotation_enabled")),
    "aws.sns.topics": Compared("topics", "name", ("has:kms_key",)),
    "aws.logs.log_groups": Compared("log_groups", "name", ("retention_days",)),
}


def _setting(item: Any, path: str) -> Any:
    transform: Callable[[Any], Any] = lambda v: v  # noqa: E731
    if path.startswith("has:"):
        path, transform = path[4:], _has
    value = item
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if path == "event_destinations" and isinstance(value, list):
        value = sorted(
            (
                {k: d.get(k) for k in ("name", "enabled", "events")}
                for d in value
                if isinstance(d, dict)
            ),
            key=lambda d: str(d["name"]),
        )
    return transform(value)


def _index(data: Any, compared: Compared) -> dict[str, Any]:
    if compared.items is None:
        return {"": data}
    return {
        str(item.get(compared.key)): item
        for item in (data or {}).get(compared.items, [])
        if isinstance(item, dict) and item.get(compared.key) is not None
    }


def _live_account(snapshot: Snapshot, stack: Section) -> str | None:
    configured = (stack.data or {}).get("account")
    if configured:
        return str(configured)
    live = [a for a in snapshot.scope.get("aws", {}).get("account", []) if ":" not in a]
    return live[0] if len(live) == 1 else None


def compare(snapshot: Snapshot, stack: Section) -> tuple[SectionStatus, dict[str, Any], str | None]:
    """The drift of one stack: (status, data, reason)."""
    name = str(stack.data["name"])
    account = _live_account(snapshot, stack)
    live_accounts = [a for a in snapshot.scope.get("aws", {}).get("account", []) if ":" not in a]
    if account is None:
        why = (
            "no live AWS account is in this audit ([aws] is not configured)"
            if not live_accounts
            else f"several live accounts are audited ({', '.join(live_accounts)}); "
            "set `account` for this stack in [pulumi]"
        )
        return "not_applicable", {"stack": name}, f"needs declared and live state: {why}"
    differences: list[dict[str, Any]] = []
    unread: list[str] = []
    skipped: list[str] = []
    compared_count = 0
    declared_subjects = [str(s) for s in stack.data.get("declared_subjects", [])]
    for declared_subject in declared_subjects:
        suffix = declared_subject.removeprefix(f"pulumi:{name}")
        live_subject = account + suffix
        for section_name, how in SECTIONS.items():
            declared = snapshot.section(section_name, declared_subject)
            if declared is None or declared.status != "ok":
                continue
            live = snapshot.section(section_name, live_subject)
            if live is None or live.status == "error":
                why = (live.reason if live is not None else None) or "not collected"
                unread.append(f"{section_name} for {live_subject} ({why})")
                continue
            live_items = _index(live.data if live.status == "ok" else None, how)
            declared_items = list(_index(declared.data, how).items())
            if how.items == "keys":  # a program's keys have no id until deployed
                declared_items += [
                    ("", k) for k in declared.data.get("keys", []) if not k.get("key_id")
                ]
            for key, item in declared_items:
                if how.items == "keys" and not key:
                    skipped.append(
                        f"{section_name} {item.get('resource')}: no key id before deployment"
                    )
                    continue
                where = {
                    "section": section_name,
                    "resource": key or section_name,
                    "declared_subject": declared_subject,
                    "live_subject": live_subject,
                }
                other = live_items.get(key)
                if other is None:
                    differences.append(
                        {
                            **where,
                            "setting": "(exists)",
                            "declared": True,
                            "live": False,
                            "matches": False,
                        }
                    )
                    continue
                for setting in how.settings:
                    compared_count += 1
                    want, have = _setting(item, setting), _setting(other, setting)
                    if want is None and not setting.startswith("has:"):
                        continue  # the stack leaves it to AWS's default
                    if want != have:
                        differences.append(
                            {
                                **where,
                                "setting": setting.removeprefix("has:"),
                                "declared": want,
                                "live": have,
                                "matches": False,
                            }
                        )
    data = {
        "stack": name,
        "live_account": account,
        "settings_compared": compared_count,
        "differences": differences,
        "not_compared": skipped,
    }
    data["not_compared"] = [*unread, *skipped]
    # A difference found is drift whatever else could not be read; no difference found is
    # only a pass when everything was compared.
    if unread and not differences:
        return "error", data, "could not compare with the live account: " + "; ".join(unread)
    return "ok", data, None


def derive_drift(snapshot: Snapshot) -> None:
    for name in snapshot.scope.get("pulumi", {}).get("stack", []):
        stack = snapshot.section("pulumi.stack", name)
        if stack is None:
            continue
        if stack.status != "ok":
            status: SectionStatus = "error"
            data: dict[str, Any] | None = None
            reason = stack.reason
        else:
            status, data, reason = compare(snapshot, stack)
        snapshot.sections.append(
            Section(
                name="pulumi.drift",
                platform="pulumi",
                subject=name,
                status=status,
                data=data,
                source="derived from the stack's declared sections and the live AWS sections",
                collected_at=snapshot.collected_at,
                raw=stack.raw,
                reason=reason,
                connector="derive",
            )
        )
        snapshot.derived.add(("pulumi.drift", name))
