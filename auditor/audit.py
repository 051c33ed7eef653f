"""The audit service: config -> connectors -> snapshot -> policies -> results -> bundle -> reports.
The CLI is a thin layer over this."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auditor import __version__
from auditor.collect import ProgressCallback, collect
from auditor.config import Config
from auditor.derive import derive
from auditor.diff import Diff, compare, read_bundle_state, state_from
from auditor.engine import Evaluation, EvaluationContext, evaluate
from auditor.errors import ConfigError, InputError
from auditor.evidence import layout, signing
from auditor.evidence.bundle import Signer, assemble, write_atomically, write_bundle
from auditor.evidence.manifest import build_manifest, ran_by, scope_of
from auditor.evidence.publish import Published, publish, targets_from_config
from auditor.jsonutil import JSON, dumps_pretty, sha256_hex
from auditor.policy import PolicySet, load_policies
from auditor.redact import Redactor
from auditor.reports import html, junit, markdown, matrix, oscal, sarif
from auditor.reports.common import ReportInput
from auditor.resources import policies_dir
from auditor.results import Results, RunInfo
from auditor.snapshot import Snapshot
from auditor.timeutil import isoz, utcnow
from connectors.base import Connector, ConnectorInputError, RawRecord
from connectors.registry import CONNECTORS

DEFAULT_DEADLINE_SECONDS = 900.0


@dataclass
class AuditOptions:
    profile: str | None = None
    out: Path | None = None
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    controls: list[str] = field(default_factory=list)
    skip_controls: list[str] = field(default_factory=list)
    # The demo signs with a throwaway key when none is configured, so verify has something to check.
    ephemeral_key: bool = False
    # A previous run's bundle: the reports and diff.json say what changed since.
    baseline: Path | None = None


@dataclass
class AuditOutcome:
    results: Results
    snapshot: Snapshot
    bundle: Path
    report: ReportInput
    signer: Signer | None
    redactor: Redactor
    public_key: Path | None = None
    diff: Diff | None = None
    published: list[Published] = field(default_factory=list)
    publish_problems: list[str] = field(default_factory=list)


def load_policy_set(config: Config) -> PolicySet:
    return load_policies([policies_dir(), *config.policies.paths])


def select_policies(
    config: Config,
    all_policies: PolicySet,
    profile: str,
    controls: Iterable[str],
    skip: Iterable[str],
) -> PolicySet:
    known = set(all_policies.policies)
    for waiver in config.waivers:
        if waiver.control not in known:
            raise ConfigError(
                f"{waiver.label()}: no control has the id {waiver.control!r}",
                where=config.label,
                hint="`commsaudit policies list` shows the ids",
            )
    all_policies.check_parameters(config.policies.parameters)
    return all_policies.select(
        profile,
        [*config.policies.controls, *controls],
        [*config.policies.skip_controls, *skip],
    )


def redactor_for(config: Config, environ: Mapping[str, str]) -> Redactor:
    redactor = Redactor.from_environment(environ)
    for name in config.evidence.secret_env:
        if environ.get(name):
            redactor.add(environ[name])
    return redactor


def resolve_signer(config: Config, environ: Mapping[str, str], *, ephemeral: bool) -> Signer | None:
    evidence = config.evidence
    if evidence.signing_key_file is not None:
        try:
            data = evidence.signing_key_file.read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read the signing key: {exc.strerror}",
                where=str(evidence.signing_key_file),
            ) from exc
        key = signing.load_private_key(data, str(evidence.signing_key_file))
        return Signer(key, f"file {evidence.signing_key_file}")
    value = environ.get(evidence.signing_key_env)
    if value:
        key = signing.load_private_key(
            value.encode(), f"environment variable {evidence.signing_key_env}"
        )
        return Signer(key, f"environment variable {evidence.signing_key_env}")
    if evidence.require_signature:
        raise ConfigError(
            "[evidence] require_signature is set, but no signing key was found",
            where=config.label,
            hint=f"set {evidence.signing_key_env} or [evidence] signing_key_file; "
            "`commsaudit keygen` makes a key",
        )
    if ephemeral:
        return Signer(
            signing.generate_key(), "a throwaway key made for this demo run", ephemeral=True
        )
    return None


def build_connectors(config: Config, now: dt.datetime) -> list[Connector]:
    connectors = []
    seen: dict[str, int] = {}
    for name, section in config.instances or list(config.connectors.items()):
        connector = CONNECTORS[name](section, config.base_dir)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            connector.instance = f"{name}-{seen[name]}"
        try:
            connector.preflight(now)
        except ConnectorInputError as exc:
            raise InputError(exc.message, where=exc.where, hint=exc.hint) from exc
        connectors.append(connector)
    return connectors


def raw_files(collection_raw: list[tuple[str, RawRecord]], redactor: Redactor) -> dict[str, bytes]:
    """Every raw response under raw/, secrets removed, with raw/index.json describing each
    (request, status, time, hash)."""
    files: dict[str, bytes] = {}
    index: list[dict[str, JSON]] = []
    for connector, record in collection_raw:
        body = redactor.bytes(record.body)
        path = layout.RAW_DIR + record.path
        files[path] = body
        request = json.loads(redactor.text(json.dumps(record.request)))
        index.append(
            {
                "path": path,
                "connector": connector,
                "source": record.source,
                "request": request,
                "status": record.status,
                "collected_at": isoz(record.collected_at),
                "media_type": record.media_type,
                "sha256": sha256_hex(body),
                "size": len(body),
            }
        )
    files[layout.RAW_INDEX] = dumps_pretty(
        {"format": "commsaudit/raw-index/v1", "responses": index}
    ).encode()
    return files


def _evaluate(
    config: Config, policies: PolicySet, snapshot: Snapshot, profile: str, now: dt.datetime
) -> tuple[Evaluation, EvaluationContext]:
    """Derived sections, then every policy, with the config's waivers and parameters."""
    derive(snapshot)
    context = EvaluationContext(
        profile=profile,
        now=now,
        waivers=list(config.waivers),
        parameters=config.policies.parameters,
        backend=config.policies.validator,
    )
    return evaluate(policies, snapshot, context), context


def bundle_name(started: dt.datetime, run_id: str) -> str:
    return f"commsaudit-{started.strftime('%Y%m%dT%H%M%SZ')}-{run_id[:8]}.zip"


def run_audit(
    config: Config,
    options: AuditOptions,
    *,
    progress: ProgressCallback | None = None,
    environ: Mapping[str, str] | None = None,
) -> AuditOutcome:
    env = dict(os.environ) if environ is None else dict(environ)
    started = utcnow().replace(microsecond=0)
    run_id = str(uuid.uuid4())
    redactor = redactor_for(config, env)

    all_policies = load_policy_set(config)
    profile = options.profile or config.policies.profile
    policies = select_policies(
        config, all_policies, profile, options.controls, options.skip_controls
    )
    # Read (and verified) before anything is collected: a bad baseline stops the run early.
    baseline = read_bundle_state(options.baseline) if options.baseline else None
    signer = resolve_signer(config, env, ephemeral=options.ephemeral_key)
    if signer is not None:
        redactor.add(signing.private_pem(signer.key).decode())
    connectors = build_connectors(config, started)

    collection = collect(
        connectors,
        now=started,
        deadline_seconds=options.deadline_seconds,
        redactor=redactor,
        progress=progress,
    )
    snapshot = collection.snapshot
    evaluation, context = _evaluate(config, policies, snapshot, profile, started)
    finished = utcnow().replace(microsecond=0)
    warnings = list(evaluation.warnings)
    if signer is None:
        warnings.append(
            "the evidence bundle is not signed: set COMMSAUDIT_SIGNING_KEY or "
            "[evidence] signing_key_file (make a key with `commsaudit keygen`)"
        )
    run = RunInfo(
        id=run_id,
        started_at=isoz(started),
        finished_at=isoz(finished),
        tool_version=__version__,
        profile=profile,
        policy_digest=policies.digest(),
        evaluated_at=isoz(started),
        validator=context.to_json()["validator"],
        warnings=warnings,
    )
    results = Results(run=run, results=evaluation.results)

    out_dir = options.out or config.evidence.out
    name = bundle_name(started, run_id)
    who = ran_by(env)
    scope = scope_of(snapshot)
    changes = None
    if baseline is not None:
        current = state_from(results, snapshot.to_json(), name)
        changes = compare(baseline, current)
    report = ReportInput(
        results=results,
        policies=policies,
        scope=scope,
        ran_by=who,
        bundle_name=name,
        diff=changes,
    )

    files = raw_files(collection.raw, redactor)
    files[layout.SNAPSHOT] = dumps_pretty(snapshot.to_json()).encode()
    files[layout.RESULTS] = dumps_pretty(results.to_json()).encode()
    for policy in policies:
        files[layout.POLICIES_DIR + policy.file_name] = policy.content
    files["report.md"] = markdown.render(report).encode()
    files["report.html"] = html.render(report).encode()
    files["matrix.csv"] = matrix.to_csv(matrix.rows(report)).encode()
    if changes is not None:
        files["diff.json"] = dumps_pretty(changes.to_json()).encode()
    files["junit.xml"] = junit.render(report).encode()
    files["results.sarif"] = dumps_pretty(sarif.render(report)).encode()
    hashes = {n: sha256_hex(redactor.bytes(c)) for n, c in files.items()}
    files["oscal/assessment-results.json"] = dumps_pretty(
        oscal.render(report, snapshot, hashes)
    ).encode()

    def make_manifest(
        listing: list[dict[str, JSON]], redacted: list[str], signature: dict[str, JSON] | None
    ) -> dict[str, JSON]:
        return build_manifest(
            run={"id": run_id, "started_at": isoz(started), "finished_at": isoz(finished)},
            who=who,
            scope=scope,
            policy_digest=policies.digest(),
            evaluation=context.to_json(),
            signature=signature,
            files=listing,
            redacted=redacted,
        )

    members = assemble(files, make_manifest, signer=signer, redactor=redactor)
    bundle_path = out_dir / name
    write_bundle(bundle_path, members, started)

    # The same reports beside the bundle under fixed names, for CI steps to pick up.
    contents = dict(members)
    for report_name in (
        "report.md",
        "report.html",
        "matrix.csv",
        "junit.xml",
        "results.sarif",
        layout.RESULTS,
    ):
        write_atomically(out_dir / report_name, contents[report_name])
    published: list[Published] = []
    publish_problems: list[str] = []
    if config.evidence.publish:
        targets = targets_from_config(config.evidence.publish, config.evidence.base_dir)
        published, publish_problems = publish(bundle_path, targets, finished)
        write_atomically(
            out_dir / "published.json",
            dumps_pretty(
                {
                    "format": "commsaudit/published/v1",
                    "bundle": name,
                    "copies": [p.to_json() for p in published],
                    "problems": list(publish_problems),
                }
            ).encode(),
        )
    public_key = None
    if signer is not None and signer.ephemeral:
        public_key = out_dir / (name.removesuffix(".zip") + ".pub.pem")
        write_atomically(public_key, signing.public_pem(signer.key.public_key()))
    return AuditOutcome(
        results,
        snapshot,
        bundle_path,
        report,
        signer,
        redactor,
        public_key,
        changes,
        published,
        publish_problems,
    )


def evaluate_snapshot(
    config: Config,
    snapshot: Snapshot,
    profile: str | None,
    controls: Iterable[str] = (),
    skip: Iterable[str] = (),
    now: dt.datetime | None = None,
) -> tuple[Results, ReportInput]:
    """Offline evaluation of a snapshot file (`commsaudit evaluate`)."""
    moment = (now or utcnow()).replace(microsecond=0)
    all_policies = load_policy_set(config)
    chosen = profile or config.policies.profile
    policies = select_policies(config, all_policies, chosen, controls, skip)
    evaluation, context = _evaluate(config, policies, snapshot, chosen, moment)
    run = RunInfo(
        id=str(uuid.uuid4()),
        started_at=isoz(moment),
        finished_at=isoz(utcnow()),
        tool_version=__version__,
        profile=chosen,
        policy_digest=policies.digest(),
        evaluated_at=isoz(moment),
        validator=context.to_json()["validator"],
        warnings=evaluation.warnings,
    )
    results = Results(run=run, results=evaluation.results)
    return results, ReportInput(results=results, policies=policies, scope=scope_of(snapshot))
