"""The audit service: config -> connectors -> snapshot -> policies -> results -> bundle -> reports.
The CLI is a thin layer over this."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import fnmatch
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from auditor import __version__
from auditor.collect import Collection, ProgressCallback, collect
from auditor.config import Config
from auditor.defaults import DEFAULT_DEADLINE_SECONDS, SIDE_FILES
from auditor.derive import derive
from auditor.diff import Diff, RunState, compare, read_bundle_state, state_from
from auditor.engine import Evaluation, EvaluationContext, evaluate
from auditor.errors import ConfigError
from auditor.evidence import layout, signing
from auditor.evidence.bundle import Signer, assemble, write_bundle, write_side_files
from auditor.evidence.manifest import build_manifest, ran_by, scope_of
from auditor.evidence.packing import Packer
from auditor.evidence.publish import Published, publish, targets_from_config
from auditor.jsonutil import JSON, dumps_pretty_bytes
from auditor.model.errors import InputError
from auditor.model.section import Platform
from auditor.model.snapshot import Snapshot
from auditor.policy import PolicySet, load_policies
from auditor.redact import Redactor, secret_env_values
from auditor.reports import html, oscal
from auditor.reports.common import ReportInput
from auditor.reports.location import locate_config
from auditor.reports.registry import REPORTS
from auditor.resources import policies_dir
from auditor.results import Results, RunInfo
from auditor.timeutil import isoz, utcnow
from connectors.base import Connector, RawRecord
from connectors.registry import CONNECTORS, derivations


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
    # The public key the baseline must be signed with (after a key change); without it, the
    # run's own signing key when [evidence] require_signature is set.
    baseline_key: Path | None = None
    # time.perf_counter() when the run began (the command's start, for the timings' startup
    # phase); None: when run_audit is called.
    clock_started: float | None = None
    # Code scanning's category for results.sarif; None: from the profile and the audited scope.
    sarif_category: str | None = None
    # Which SIDE_FILES to write beside the bundle; empty: all of them.
    output_formats: tuple[str, ...] = ()
    # Read every section, whatever the policies chosen read (`record` keeps whole tenants).
    read_everything: bool = False


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
    # One line per file beside the bundle that could not be written (each is whole or absent).
    write_problems: list[str] = field(default_factory=list)
    # Each connector instance ("m365", "m365-2" ...) and the config table that made it.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_policy_set(config: Config) -> PolicySet:
    return load_policies([policies_dir(), *config.policies.paths], built_in=policies_dir())


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
    controls = list(controls)
    for glob in config.policies.controls:
        _check_glob(all_policies, glob, "[policies] controls", config.label)
    for glob in controls:
        _check_glob(all_policies, glob, "--controls", None)
    # A skip that matches nothing is a typo too: the control the user meant still runs.
    skip = list(skip)
    for glob in config.policies.skip_controls:
        _check_glob(all_policies, glob, "[policies] skip_controls", config.label)
    for glob in skip:
        _check_glob(all_policies, glob, "--skip-controls", None)
    chosen = all_policies.select(
        profile,
        [*config.policies.controls, *controls],
        [*config.policies.skip_controls, *skip],
    )
    if not len(chosen):
        # Nothing judged would exit 0: a pass for a run that checked nothing.
        globs = ", ".join(repr(g) for g in [*config.policies.controls, *controls]) or "none"
        skipped = ", ".join(repr(g) for g in [*config.policies.skip_controls, *skip]) or "none"
        raise ConfigError(
            f"no control of profile {profile!r} is left to evaluate (controls: {globs}; "
            f"skipped: {skipped})",
            hint=f"`commsaudit policies list --profile {profile}` shows its controls",
        )
    return chosen


def check_waiver_lifetimes(config: Config, today: dt.date) -> None:
    """A waiver may last at most `[policies] waiver_max_days` (a year unless set): one that
    expires in 9999 is a permanent exception in disguise, and stops the run."""
    limit = config.policies.waiver_max_days
    for waiver in config.waivers:
        problem = waiver.lifetime_problem(today, limit)
        if problem is not None:
            raise ConfigError(
                f"{waiver.label()}: {problem}",
                where=config.label,
                hint="set an earlier expires (renew the waiver when it lapses), or raise "
                "[policies] waiver_max_days",
            )


def override_warnings(policies: PolicySet) -> list[str]:
    """One warning per selected control whose file replaced a built-in (or earlier) one."""
    return [policies.overridden[pid].warning(pid) for pid in sorted(policies.overridden)]


def overrides_for_manifest(policies: PolicySet) -> list[dict[str, JSON]]:
    """The manifest's record of replaced controls: the file in the bundle and what it replaced
    (the built-in control, or the name of an earlier policies directory)."""
    return [
        {
            "id": pid,
            "file": layout.POLICIES_DIR + policies.policies[pid].file_name,
            "replaces": override.replaces
            if override.replaces == "built-in"
            else Path(override.replaces).name,
        }
        for pid, override in sorted(policies.overridden.items())
    ]


def _check_glob(policies: PolicySet, glob: str, source: str, where: str | None) -> None:
    """A control glob that matches no control is a typo: without this check it selects
    nothing, and a run that evaluates nothing passes."""
    ids = sorted(policies.policies)
    if any(fnmatch.fnmatchcase(pid, glob) for pid in ids):
        return
    close = difflib.get_close_matches(glob, ids, n=1)
    hint = "`commsaudit policies list` shows the ids"
    raise ConfigError(
        f"{source}: {glob!r} matches no control"
        + (f"; did you mean {close[0]!r}?" if close else ""),
        where=where,
        hint=hint,
    )


def redactor_for(
    config: Config, environ: Mapping[str, str], into: Redactor | None = None
) -> Redactor:
    """The secrets a run knows before it starts: the environment's, and the values of the
    variables the config names in `secret_env`; added to `into` when it is given."""
    redactor = Redactor() if into is None else into
    for value in secret_env_values(environ):
        redactor.add(value)
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


def read_baseline(config: Config, options: AuditOptions, signer: Signer | None) -> RunState | None:
    """The previous run, verified like any bundle. Where signing is required, an unsigned or
    otherwise-signed baseline could have been edited to make a new failure look old, so it must
    carry the signature of this run's key (or of --baseline-key's)."""
    if options.baseline is None:
        return None
    key, hint = None, None
    if options.baseline_key is not None:
        key = signing.load_public_key_file(options.baseline_key)
    elif config.evidence.require_signature and signer is not None:
        key = signer.key.public_key()
        hint = (
            "[evidence] require_signature is set, so the baseline must be signed with this "
            "run's key; after a key change, pass the old public key as --baseline-key"
        )
    return read_bundle_state(options.baseline, key, hint=hint)


def build_connectors(config: Config, now: dt.datetime) -> list[Connector]:
    connectors = []
    seen: dict[str, int] = {}
    for name, section in config.instances or list(config.connectors.items()):
        connector = CONNECTORS[name](section, config.base_dir)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            connector.instance = f"{name}-{seen[name]}"
        connector.preflight(now)  # a malformed local input raises InputError: exit 2
        connectors.append(connector)
    return connectors


def raw_index(collection_raw: list[tuple[str, RawRecord]], digests: Mapping[str, str]) -> bytes:
    """raw/index.json: every raw response kept under raw/, described (request, status, time,
    hash). Their secrets were removed where they were collected, once."""
    index: list[dict[str, JSON]] = [
        {
            "path": layout.RAW_DIR + record.path,
            "connector": connector,
            "source": record.source,
            "request": record.request,
            "status": record.status,
            "collected_at": isoz(record.collected_at),
            "media_type": record.media_type,
            "sha256": digests[layout.RAW_DIR + record.path],
            "size": len(record.body),
        }
        for connector, record in collection_raw
    ]
    return dumps_pretty_bytes({"format": "commsaudit/raw-index/v1", "responses": index})


class _Timings:
    """Where a run's time went, phase by phase, for the manifest (people ask where a slow run
    went). Each phase runs from the end of the one before."""

    def __init__(self, started: float | None = None) -> None:
        self._last = time.perf_counter() if started is None else started
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now

    def to_json(self, redactor: Redactor) -> dict[str, JSON]:
        seconds: dict[str, JSON] = {k: round(v, 3) for k, v in self.phases.items()}
        # Not a phase of its own: processor time spent scrubbing, partly in worker threads
        # beside the phases above (as answers are kept, and in the last net).
        seconds["redaction"] = round(redactor.seconds, 3)
        return {"seconds": seconds}


def _evaluate(
    config: Config,
    policies: PolicySet,
    snapshot: Snapshot,
    profile: str,
    now: dt.datetime,
    timings: _Timings | None = None,
) -> tuple[Evaluation, EvaluationContext]:
    """Every policy over a derived snapshot, with the config's waivers and parameters."""
    context = EvaluationContext(
        profile=profile,
        now=now,
        waivers=list(config.waivers),
        parameters=config.policies.parameters,
        backend=config.policies.validator,
        timeout_seconds=config.policies.timeout_seconds,
    )
    evaluation = evaluate(policies, snapshot, context)
    if timings is not None:
        timings.lap("evaluate")
    return evaluation, context


def bundle_name(started: dt.datetime, run_id: str) -> str:
    return f"commsaudit-{started.strftime('%Y%m%dT%H%M%SZ')}-{run_id[:8]}.zip"


def run_audit(
    config: Config,
    options: AuditOptions,
    *,
    progress: ProgressCallback | None = None,
    environ: Mapping[str, str] | None = None,
    redactor: Redactor | None = None,
) -> AuditOutcome:
    """A run, stage by stage: plan, collect, derive, evaluate, render, package, publish.
    `redactor`, when given, is the one the run scrubs with and adds to (the signing key, each
    token as it is issued): the caller's log lines are then scrubbed of them too."""
    run = _plan(config, options, environ, redactor)
    # Every member of the bundle is hashed and deflated in worker threads as soon as it is
    # final: a raw answer once it is scrubbed, while the collection goes on; the snapshot and
    # reports while the policies are evaluated and the next report rendered.
    members = _Members(Packer(), run.redactor)
    # The bundle's HTML report: its template is compiled on another thread while the
    # collection waits on the network, not after it.
    threading.Thread(target=html.prepare, name="template", daemon=True).start()
    try:
        collection = _collect(run, members, progress)
        snapshot = _derive(run, collection, members)
        evaluated = _evaluate_policies(run, snapshot)
        report = _render(run, snapshot, evaluated, members)
        bundle_path = _package(run, collection, snapshot, evaluated, report, members)
        return _publish(run, bundle_path, snapshot, evaluated, report, members)
    finally:
        members.packer.close()


@dataclass(frozen=True)
class _Run:
    """What a run settled before collecting, for the stages after it."""

    config: Config
    options: AuditOptions
    policies: PolicySet
    profile: str
    redactor: Redactor
    signer: Signer | None
    timings: _Timings
    env: dict[str, str]
    started: dt.datetime
    run_id: str
    baseline: RunState | None
    connectors: list[Connector]

    @property
    def name(self) -> str:
        return bundle_name(self.started, self.run_id)

    @property
    def out_dir(self) -> Path:
        return self.options.out or self.config.evidence.out


class _Members:
    """The bundle's members as they are made, each handed to the packer at once. `keep` passes
    a member through the last net first (config values, such as an endpoint with a password in
    it, reach the reports through the scope); the raw answers and the snapshot are built from
    what the collection scrubbed already."""

    def __init__(self, packer: Packer, redactor: Redactor) -> None:
        self.packer = packer
        self._redactor = redactor
        self.files: dict[str, bytes] = {}
        self.netted: list[str] = []  # members the last net changed, for the manifest

    def add(self, name: str, content: bytes) -> None:
        self.files[name] = content
        self.packer.add(name, content)

    def keep(self, name: str, content: bytes) -> None:
        cleaned = self._redactor.bytes(content)
        if cleaned != content:
            self.netted.append(name)
        self.add(name, cleaned)


@dataclass(frozen=True)
class _Evaluated:
    results: Results
    context: EvaluationContext
    durations: dict[tuple[str, str], float]  # (control, subject) -> seconds
    finished: dt.datetime


def _plan(
    config: Config,
    options: AuditOptions,
    environ: Mapping[str, str] | None,
    redactor: Redactor | None = None,
) -> _Run:
    """Everything that can stop a run settled before anything is collected: the policies and
    their selection, waivers, the signing key, the baseline, each connector's local inputs."""
    timings = _Timings(options.clock_started)
    env = dict(os.environ) if environ is None else dict(environ)
    started = utcnow().replace(microsecond=0)
    redactor = redactor_for(config, env, into=redactor)
    all_policies = load_policy_set(config)
    profile = options.profile or config.policies.profile
    policies = select_policies(
        config, all_policies, profile, options.controls, options.skip_controls
    )
    check_waiver_lifetimes(config, started.date())
    signer = resolve_signer(config, env, ephemeral=options.ephemeral_key)
    if signer is not None:
        redactor.add(signing.private_pem(signer.key).decode())
    # Read (and verified) before anything is collected: a bad baseline stops the run early.
    baseline = read_baseline(config, options, signer)
    connectors = build_connectors(config, started)
    timings.lap("startup")
    return _Run(
        config, options, policies, profile, redactor, signer, timings, env, started,
        str(uuid.uuid4()), baseline, connectors,
    )  # fmt: skip


def wanted_sections(policies: PolicySet) -> frozenset[str]:
    """The sections the policies read, and those the derived ones among them are made from:
    a vendor agreement, a provider or the vendors in use need every platform's vendors and the
    agreements on file."""
    names = {section for policy in policies for section in policy.sections.values()}
    if any(_derived(name) for name in names):
        # Every platform's, named from the platforms (reading the section catalogue to find
        # them would cost each run tens of milliseconds): a name no connector emits is harmless.
        names |= {f"{platform}.vendors" for platform in get_args(Platform)} | {"org.baa"}
    return frozenset(names)


def _wanted(run: _Run) -> frozenset[str]:
    """What the policies read, and what a connector reads of another's (the DNS connector
    checks the domains Microsoft 365 and SES name)."""
    consumed = {name for connector in run.connectors for name in connector.consumes}
    return wanted_sections(run.policies) | consumed


def _derived(name: str) -> bool:
    return (
        name.startswith("provider.")
        or name.endswith(".vendor_agreements")
        or (name == "org.vendors_in_use")
    )


def _collect(run: _Run, members: _Members, progress: ProgressCallback | None) -> Collection:
    collection = collect(
        run.connectors,
        now=run.started,
        deadline_seconds=run.options.deadline_seconds,
        redactor=run.redactor,
        progress=progress,
        on_scrubbed=lambda record: members.packer.add(layout.RAW_DIR + record.path, record.body),
        wanted=None if run.options.read_everything else _wanted(run),
    )
    run.timings.lap("collect")
    for _connector, record in collection.raw:
        members.add(layout.RAW_DIR + record.path, record.body)
    return collection


def _derive(run: _Run, collection: Collection, members: _Members) -> Snapshot:
    snapshot = collection.snapshot
    derive(snapshot, derivations())
    run.timings.lap("derive")
    # The snapshot is final once derived: it is deflated while the policies are evaluated.
    members.add(layout.SNAPSHOT, dumps_pretty_bytes(snapshot.to_json()))
    run.timings.lap("reports")
    return snapshot


def _evaluate_policies(run: _Run, snapshot: Snapshot) -> _Evaluated:
    config, policies, started = run.config, run.policies, run.started
    evaluation, context = _evaluate(config, policies, snapshot, run.profile, started, run.timings)
    finished = utcnow().replace(microsecond=0)
    warnings = [*override_warnings(policies), *evaluation.warnings]
    if run.signer is None:
        warnings.append(
            "the evidence bundle is not signed: set COMMSAUDIT_SIGNING_KEY or "
            "[evidence] signing_key_file (make a key with `commsaudit keygen`)"
        )
    info = RunInfo(
        id=run.run_id,
        started_at=isoz(started),
        finished_at=isoz(finished),
        tool_version=__version__,
        profile=run.profile,
        policy_digest=policies.digest(),
        evaluated_at=isoz(started),
        validator=context.to_json()["validator"],
        warnings=warnings,
    )
    results = Results(run=info, results=evaluation.results)
    return _Evaluated(results, context, evaluation.durations, finished)


def _render(run: _Run, snapshot: Snapshot, evaluated: _Evaluated, members: _Members) -> ReportInput:
    """The results, the policies used and every report, into the bundle."""
    results = evaluated.results
    changes = None
    if run.baseline is not None:
        changes = compare(run.baseline, state_from(results, snapshot.to_json(), run.name))
    report = ReportInput(
        results=results,
        policies=run.policies,
        scope=scope_of(snapshot),
        ran_by=ran_by(run.env),
        bundle_name=run.name,
        diff=changes,
        sarif_category=run.options.sarif_category,
        durations=evaluated.durations,
        config_location=locate_config(
            run.config.path, Path(run.env.get("GITHUB_WORKSPACE") or ".")
        ),
    )
    members.keep(layout.RESULTS, dumps_pretty_bytes(results.to_json()))
    for policy in run.policies:
        members.keep(layout.POLICIES_DIR + policy.file_name, policy.content)
    for kind in REPORTS:
        content = kind.render(report)
        if content is not None:
            members.keep(kind.file, content)
    return report


def _package(
    run: _Run,
    collection: Collection,
    snapshot: Snapshot,
    evaluated: _Evaluated,
    report: ReportInput,
    members: _Members,
) -> Path:
    """The raw answers' index, the OSCAL results (which cite the other members' hashes), the
    manifest, the sums and the signature: the bundle, written."""
    packer = members.packer
    members.add(layout.RAW_INDEX, raw_index(collection.raw, packer.digests()))
    members.keep(
        "oscal/assessment-results.json",
        dumps_pretty_bytes(oscal.render(report, snapshot, packer.digests())),
    )
    run.timings.lap("reports")
    # Every member deflated before the manifest is made, so it can say how long that took.
    hashes = packer.digests()
    packed = packer.packed()
    run.timings.lap("bundle")

    def make_manifest(
        listing: list[dict[str, JSON]], signature: dict[str, JSON] | None
    ) -> dict[str, JSON]:
        return build_manifest(
            run={
                "id": run.run_id,
                "started_at": isoz(run.started),
                "finished_at": isoz(evaluated.finished),
            },
            who=report.ran_by,
            scope=report.scope,
            policy_digest=run.policies.digest(),
            evaluation=evaluated.context.to_json(),
            signature=signature,
            files=listing,
            redacted=sorted(members.netted),
            timings=run.timings.to_json(run.redactor),
            overridden=overrides_for_manifest(run.policies),
        )

    assembled = assemble(
        members.files, make_manifest, signer=run.signer, redactor=run.redactor, digests=hashes
    )
    members.files = dict(assembled)
    bundle_path = run.out_dir / run.name
    write_bundle(bundle_path, assembled, run.started, packed)
    return bundle_path


def _publish(
    run: _Run,
    bundle_path: Path,
    snapshot: Snapshot,
    evaluated: _Evaluated,
    report: ReportInput,
    members: _Members,
) -> AuditOutcome:
    """The reports beside the bundle under fixed names, copies of the bundle where the config
    sends them, and an ephemeral key's public half."""
    out_dir = run.out_dir
    # Each side file is written whole or not at all; one that fails (a full disk) does not stop
    # the others.
    contents = members.files
    chosen = run.options.output_formats or tuple(SIDE_FILES)
    write_problems = write_side_files(
        out_dir, [(SIDE_FILES[f], contents[SIDE_FILES[f]]) for f in SIDE_FILES if f in chosen]
    )
    for name in (SIDE_FILES[f] for f in SIDE_FILES if f not in chosen):
        # An earlier run's file under that name must not pass for this run's.
        with contextlib.suppress(OSError):
            (out_dir / name).unlink(missing_ok=True)
    published: list[Published] = []
    publish_problems: list[str] = []
    if run.config.evidence.publish:
        targets = targets_from_config(run.config.evidence.publish, run.config.evidence.base_dir)
        published, publish_problems = publish(bundle_path, targets, evaluated.finished)
        copies: dict[str, JSON] = {
            "format": "commsaudit/published/v1",
            "bundle": run.name,
            "copies": [p.to_json() for p in published],
            "problems": list(publish_problems),
        }
        write_problems += write_side_files(
            out_dir, [("published.json", dumps_pretty_bytes(copies))]
        )
    public_key = None
    signer = run.signer
    if signer is not None and signer.ephemeral:
        key_name = run.name.removesuffix(".zip") + ".pub.pem"
        pem = signing.public_pem(signer.key.public_key())
        failed = write_side_files(out_dir, [(key_name, pem)])
        write_problems += failed
        public_key = None if failed else out_dir / key_name
    return AuditOutcome(
        evaluated.results,
        snapshot,
        bundle_path,
        report,
        signer,
        run.redactor,
        public_key,
        report.diff,
        published,
        publish_problems,
        write_problems,
        {c.instance: c.config for c in run.connectors},
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
    check_waiver_lifetimes(config, moment.date())
    derive(snapshot, derivations())
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
        warnings=[*override_warnings(policies), *evaluation.warnings],
    )
    results = Results(run=run, results=evaluation.results)
    report = ReportInput(
        results=results,
        policies=policies,
        scope=scope_of(snapshot),
        durations=evaluation.durations,
    )
    return results, report
