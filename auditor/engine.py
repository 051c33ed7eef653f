"""Evaluate policies against a snapshot. Fail closed: a control whose data is missing or failed
to collect is `error` with the connector's reason, never `pass`."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from auditor.failures import Failure
from auditor.jsonutil import (
    JSON,
    dumps_canonical,
    expand_pointer,
    pointer,
    pointer_parts,
    summarise,
)
from auditor.model.section import Section
from auditor.model.snapshot import Snapshot
from auditor.policy import PLATFORM_TITLES, Policy, PolicySet
from auditor.results import Evidence, Result
from auditor.timeutil import isoz
from auditor.validation import (
    DEFAULT_TIMEOUT_SECONDS,
    CompiledSchema,
    EvaluationError,
    EvaluationTimeout,
    ReferenceSchema,
    compile_schema,
    resolve_backend,
    time_limit,
)
from auditor.waivers import EXPIRY_NOTICE_DAYS, Waiver

# How many failures the one-line reason spells out; every failure stays in the evidence.
_REASON_FAILURES = 3


@dataclass
class EvaluationContext:
    profile: str
    now: dt.datetime
    waivers: list[Waiver] = field(default_factory=list)
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    backend: str = "auto"
    # The most one policy may take on one subject ([policies] timeout_seconds).
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    def to_json(self) -> dict[str, JSON]:
        """What `verify` needs to re-evaluate exactly as the run did."""
        return {
            "profile": self.profile,
            "evaluated_at": isoz(self.now),
            "waivers": [w.to_json() for w in self.waivers],
            "parameters": {k: dict(v) for k, v in self.parameters.items()},
            "validator": resolve_backend(self.backend),
            "timeout_seconds": self.timeout_seconds,
        }


@dataclass
class Verdict:
    status: str  # pass | fail | not_applicable
    failures: list[Failure]


@dataclass
class Evaluation:
    results: list[Result]
    warnings: list[str]
    # Seconds spent judging each (control, subject): a control's time shared among its subjects.
    durations: dict[tuple[str, str], float] = field(default_factory=dict)


class SchemaCache:
    """Compiled schemas by (policy, profile, parameter values): compiled once per run. A schema
    that cannot be compiled raises EvaluationError each time it is asked for."""

    def __init__(self, backend: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.backend = backend
        self.timeout_seconds = timeout_seconds
        self._cache: dict[tuple[str, str, str, str], CompiledSchema] = {}

    def get(
        self, policy: Policy, which: str, profile: str, values: Mapping[str, Any]
    ) -> CompiledSchema:
        key = (policy.id, which, profile, dumps_canonical(dict(values)))
        compiled = self._cache.get(key)
        if compiled is None:
            schema = (
                policy.applicable_for(values)
                if which == "applicable"
                else policy.schema_for(profile, values)
            )
            compiled = compile_schema(schema, self.backend)
            self._cache[key] = compiled
        return compiled


def judge(
    policy: Policy,
    instance: JSON,
    profile: str,
    values: Mapping[str, Any],
    compiled: SchemaCache | None = None,
) -> Verdict:
    """The verdict of one policy on one instance: the heart of evaluation, also used to run a
    policy's own examples. EvaluationError when the policy cannot be evaluated: its schema cannot
    be compiled, or evaluating it took longer than the cache's time limit."""
    compiled = compiled or SchemaCache("auto")
    with time_limit(compiled.timeout_seconds):
        return _judge(policy, instance, profile, values, compiled)


def _judge(
    policy: Policy, instance: JSON, profile: str, values: Mapping[str, Any], compiled: SchemaCache
) -> Verdict:
    if policy.applicable_schema is not None:
        applicable = compiled.get(policy, "applicable", profile, values)
        if not applicable.is_valid(instance):
            return Verdict("not_applicable", [])
    schema = compiled.get(policy, "schema", profile, values)
    if schema.is_valid(instance):
        return Verdict("pass", [])
    failures = schema.failures(instance)
    if not failures:
        # The fast backend and the reference disagree only if one has a bug: believe the
        # reference rather than fail without evidence.
        failures = ReferenceSchema(schema.schema).failures(instance)
        if not failures:
            return Verdict("pass", [])
    return Verdict("fail", failures)


def _section_for_pointer(policy: Policy, ptr: str) -> tuple[str, str]:
    """(instance property, pointer within that section's data)."""
    if isinstance(policy.source, str):
        return "", ptr
    parts = pointer_parts(ptr)
    if not parts:
        return "", ""
    head, rest = parts[0], ptr[len(parts[0].replace("~", "~0").replace("/", "~1")) + 1 :]
    return head, rest


def _enclosing_item(data: JSON, ptr: str) -> tuple[str, JSON] | None:
    """(pointer, value) of the innermost list item that holds `ptr`, when `ptr` lies deeper;
    failing that, of the object directly holding `ptr` (its siblings often say why: a status
    next to its reason)."""
    parts = pointer_parts(ptr)
    node = data
    found: tuple[int, JSON] | None = None
    for depth, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            found = (depth + 1, node)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            break
    if found is None and len(parts) >= 2:
        holder = _walk(data, parts[:-1])
        return None if holder is None else (pointer(parts[:-1]), summarise(holder, limit=1000))
    if found is None or found[0] == len(parts):
        return None
    depth, item = found
    return pointer(parts[:depth]), summarise(item, limit=1000)


def _walk(data: JSON, parts: list[str]) -> JSON:
    node = data
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _base_result(policy: Policy, subject: str, status: str, reason: str) -> Result:
    return Result(
        control=policy.id,
        subject=subject,
        status=status,
        severity=policy.severity,
        responsibility=policy.responsibility,
        citations=list(policy.citations),
        title=policy.title,
        category=policy.category,
        platform=policy.platform,
        reason=reason,
        remediation=policy.remediation_text,
        scuba=list(policy.scuba),
    )


def _evidence(section: Section, ptr: str, value: JSON, message: str | None = None) -> Evidence:
    return Evidence(
        source=section.source,
        section=section.name,
        pointer=ptr,
        value=summarise(value),
        collected_at=isoz(section.collected_at),
        message=message,
        raw=list(section.raw),
    )


def _missing_reason(snapshot: Snapshot, policy: Policy, name: str, subject: str) -> str:
    failed = snapshot.failed_sources(policy.platform)
    if failed:
        return "; ".join(f"{src.title} failed: {src.error}" for _name, src in failed)
    # An audit collects what its own controls read: a snapshot evaluated later under other
    # controls may lack a section for that reason alone.
    return (
        f"section {name} was not collected for {subject} (an audit collects only the sections "
        "its controls read; `commsaudit audit --read-all` collects every one)"
    )


class Engine:
    def __init__(self, context: EvaluationContext) -> None:
        self.context = context
        self.compiled = SchemaCache(context.backend, context.timeout_seconds)
        self._sections_seen: dict[tuple[str, str], Evidence] = {}

    def evaluate(self, policies: PolicySet, snapshot: Snapshot) -> Evaluation:
        results: list[Result] = []
        durations: dict[tuple[str, str], float] = {}
        for policy in policies:
            started = time.perf_counter()
            judged = self.evaluate_policy(policy, snapshot)
            share = (time.perf_counter() - started) / max(len(judged), 1)
            durations.update(((r.control, r.subject), share) for r in judged)
            results.extend(judged)
        warnings = self._apply_waivers(results)
        results.sort(key=lambda r: (r.control, r.subject))
        return Evaluation(results, warnings, durations)

    def evaluate_policy(self, policy: Policy, snapshot: Snapshot) -> list[Result]:
        title = PLATFORM_TITLES.get(policy.platform, policy.platform)
        if policy.platform not in snapshot.scope:
            return [
                _base_result(
                    policy,
                    policy.platform,
                    "not_applicable",
                    f"{title} is not in this audit's scope: no connector for it is configured",
                )
            ]
        subjects = snapshot.scope[policy.platform].get(policy.subject_kind, [])
        if not subjects:
            failed = snapshot.failed_sources(policy.platform)
            reason = (
                "; ".join(f"{src.title} failed: {src.error}" for _n, src in failed)
                if failed
                else f"no {policy.subject_kind} of {title} was found to evaluate"
            )
            return [_base_result(policy, policy.platform, "error", reason)]
        values = policy.resolve_parameters(self.context.parameters.get(policy.id))
        return [self._evaluate_subject(policy, snapshot, subject, values) for subject in subjects]

    def _evaluate_subject(
        self, policy: Policy, snapshot: Snapshot, subject: str, values: Mapping[str, Any]
    ) -> Result:
        sections: dict[str, Section] = {}
        for prop, name in policy.sections.items():
            section = snapshot.section(name, subject)
            if section is None:
                reason = _missing_reason(snapshot, policy, name, subject)
                return _base_result(policy, subject, "error", reason)
            if section.status != "ok":
                status = "not_applicable" if section.status == "not_applicable" else "error"
                result = _base_result(
                    policy, subject, status, section.reason or f"section {name} is {section.status}"
                )
                result.evidence.append(_evidence(section, "", None, section.reason))
                return result
            sections[prop] = section

        instance: JSON
        if isinstance(policy.source, str):
            instance = sections[""].data
        else:
            instance = {prop: s.data for prop, s in sections.items()}

        try:
            verdict = judge(policy, instance, self.context.profile, values, self.compiled)
        except EvaluationError as exc:
            return self._not_evaluated(policy, subject, exc)
        if verdict.status == "not_applicable":
            return _base_result(policy, subject, "not_applicable", policy.applicable_reason or "")
        if verdict.status == "pass":
            status = "inherited" if policy.responsibility == "provider" else "pass"
            result = _base_result(policy, subject, status, self._pass_reason(policy, status))
            result.evidence = self._pass_evidence(policy, sections, instance)
            return result
        result = _base_result(policy, subject, "fail", self._fail_reason(policy, verdict.failures))
        for failure in verdict.failures:
            prop, inner = _section_for_pointer(policy, failure.pointer)
            section = sections.get(prop) or next(iter(sections.values()))
            item = _enclosing_item(section.data, inner)
            evidence = _evidence(section, inner, failure.value, failure.message)
            if item is not None:
                evidence.context_pointer, evidence.context = item
            result.evidence.append(evidence)
        return result

    @staticmethod
    def _not_evaluated(policy: Policy, subject: str, exc: EvaluationError) -> Result:
        """`error`, never a verdict, for a policy that could not be evaluated; the run goes on."""
        if isinstance(exc, EvaluationTimeout):
            reason = (
                f"the policy was not evaluated: it {exc} (the limit, [policies] timeout_seconds); "
                "its schema does work that grows steeply with the data"
            )
        else:
            reason = f"the policy was not evaluated: {exc}"
        return _base_result(policy, subject, "error", reason)

    @staticmethod
    def _pass_reason(policy: Policy, status: str) -> str:
        text = policy.explain_pass or "the settings satisfy the policy"
        if status == "inherited":
            return f"provider responsibility, backed by the attestation: {text}"
        return text

    @staticmethod
    def _fail_reason(policy: Policy, failures: list[Failure]) -> str:
        head = policy.explain_fail or "the settings do not satisfy the policy"
        shown = [
            f"{f.pointer or '(whole section)'} {f.message}" for f in failures[:_REASON_FAILURES]
        ]
        more = len(failures) - len(shown)
        tail = f"; and {more} more" if more > 0 else ""
        return f"{head}: " + "; ".join(shown) + tail

    def _pass_evidence(
        self, policy: Policy, sections: dict[str, Section], instance: JSON
    ) -> list[Evidence]:
        evidence: list[Evidence] = []
        if policy.evidence_pointers:
            for pattern in policy.evidence_pointers:
                for ptr, value in expand_pointer(instance, pattern):
                    prop, inner = _section_for_pointer(policy, ptr)
                    section = sections.get(prop) or next(iter(sections.values()))
                    evidence.append(_evidence(section, inner, value))
        if not evidence:
            evidence = [self._whole_section(s) for s in sections.values()]
        return evidence

    def _whole_section(self, section: Section) -> Evidence:
        """Evidence of a whole section; summarising a large one means hashing all of it, so it is
        done once a run however many policies read the section."""
        key = (section.name, section.subject)
        cached = self._sections_seen.get(key)
        if cached is None:
            cached = _evidence(section, "", section.data)
            self._sections_seen[key] = cached
        return replace(cached)

    def _apply_waivers(self, results: list[Result]) -> list[str]:
        today = self.context.now.date()
        warnings: list[str] = []
        used: set[int] = set()
        for waiver in self.context.waivers:
            if waiver.expired(today):
                warnings.append(
                    f"{waiver.label()} expired on {waiver.expires.isoformat()} and was ignored"
                )
        for result in results:
            if result.status != "fail":
                continue
            matching = [
                w for w in self.context.waivers if w.matches(result.control, result.subject)
            ]
            # A waiver for this exact subject speaks louder than one for the whole control.
            matching.sort(key=lambda w: w.subject is None)
            current = [w for w in matching if not w.expired(today)]
            if not current:
                for waiver in matching:
                    result.reason += (
                        f" (waiver {waiver.label()} expired on {waiver.expires.isoformat()})"
                    )
                continue
            waiver = current[0]
            used.add(waiver.index)
            result.status = "waived"
            result.waiver = waiver.to_json()
            result.reason = (
                f"waived until {waiver.expires.isoformat()}, approved by {waiver.approved_by}: "
                f"{waiver.reason.rstrip('.')}. Underlying failure: {result.reason}"
            )
        for waiver in self.context.waivers:
            if waiver.index not in used and not waiver.expired(today):
                warnings.append(f"{waiver.label()} matched no failing result")
            elif waiver.index in used and waiver.days_left(today) < EXPIRY_NOTICE_DAYS:
                left = waiver.days_left(today)
                warnings.append(
                    f"{waiver.label()} expires on {waiver.expires.isoformat()}, "
                    + ("today" if left == 0 else f"in {left} day{'s' if left > 1 else ''}")
                    + ": renew it, or fix what it waives"
                )
        return warnings


def evaluate(policies: PolicySet, snapshot: Snapshot, context: EvaluationContext) -> Evaluation:
    return Engine(context).evaluate(policies, snapshot)
