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
from auditor.model.snapshot import Snapshot
from auditor.policy import PolicySet, load_policies
from auditor.redact import Redactor
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
) -> AuditOutcome:
    timings = _Timings(options.clock_started)
    env = dict(os.environ) if environ is None else dict(environ)
    started = utcnow().replace(microsecond=0)
    run_id = str(uuid.uuid4())
    redactor = redactor_for(config, env)

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
    # Every member of the bundle is hashed and deflated in worker threads as soon as it is
    # final: a raw answer once it is scrubbed, while the collection goes on; the snapshot and
    # reports while the policies are evaluated and the next report rendered.
    packer = Packer()
    # The bundle's HTML report: its template is compiled on another thread while the
    # collection waits on the network, not after it.
    threading.Thread(target=html.prepare, name="template", daemon=True).start()
    try:
        collection = collect(
            connectors,
            now=started,
            deadline_seconds=options.deadline_seconds,
            redactor=redactor,
            progress=progress,
            on_scrubbed=lambda record: packer.add(layout.RAW_DIR + record.path, record.body),
        )
        timings.lap("collect")
        run = _Run(
            config, options, policies, profile, redactor, signer, timings, env, started, run_id,
            baseline,
        )  # fmt: skip
        return _evaluate_and_keep(run, collection, packer)
    finally:
        packer.close()


@dataclass(frozen=True)
class _Run:
    """What a run settled before collecting, for the steps after it."""

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


def _evaluate_and_keep(run_: _Run, collection: Collection, packer: Packer) -> AuditOutcome:
    """Evaluate the collection, render the reports, and write the bundle beside them."""
    config, options, policies, profile = run_.config, run_.options, run_.policies, run_.profile
    redactor, signer, timings, env = run_.redactor, run_.signer, run_.timings, run_.env
    started, run_id, baseline = run_.started, run_.run_id, run_.baseline
    snapshot = collection.snapshot
    files: dict[str, bytes] = {}
    for _connector, record in collection.raw:
        files[layout.RAW_DIR + record.path] = record.body
        packer.add(layout.RAW_DIR + record.path, record.body)
    derive(snapshot, derivations())
    timings.lap("derive")
    # The snapshot is final once derived: it is deflated while the policies are evaluated.
    files[layout.SNAPSHOT] = dumps_pretty_bytes(snapshot.to_json())
    packer.add(layout.SNAPSHOT, files[layout.SNAPSHOT])
    timings.lap("reports")
    evaluation, context = _evaluate(config, policies, snapshot, profile, started, timings)
    finished = utcnow().replace(microsecond=0)
    warnings = [*override_warnings(policies), *evaluation.warnings]
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
        sarif_category=options.sarif_category,
        durations=evaluation.durations,
        config_location=locate_config(config.path, Path(env.get("GITHUB_WORKSPACE") or ".")),
    )

    # Built from what the collection scrubbed: the raw answers and the snapshot were kept as
    # they are; what else goes in the bundle passes one last net (config values, such as an
    # endpoint with a password in it, reach the reports through the scope).
    netted: list[str] = []

    def keep(name: str, content: bytes) -> None:
        cleaned = redactor.bytes(content)
        if cleaned != content:
            netted.append(name)
        files[name] = cleaned
        packer.add(name, cleaned)

    keep(layout.RESULTS, dumps_pretty_bytes(results.to_json()))
    for policy in policies:
        keep(layout.POLICIES_DIR + policy.file_name, policy.content)
    for kind in REPORTS:
        content = kind.render(report)
        if content is not None:
            keep(kind.file, content)
    files[layout.RAW_INDEX] = raw_index(collection.raw, packer.digests())
    packer.add(layout.RAW_INDEX, files[layout.RAW_INDEX])
    hashes = packer.digests()
    oscal_name = "oscal/assessment-results.json"
    keep(oscal_name, dumps_pretty_bytes(oscal.render(report, snapshot, hashes)))
    timings.lap("reports")
    # Every member deflated before the manifest is made, so it can say how long that took.
    hashes = packer.digests()
    packed = packer.packed()
    timings.lap("bundle")

    def make_manifest(
        listing: list[dict[str, JSON]], signature: dict[str, JSON] | None
    ) -> dict[str, JSON]:
        return build_manifest(
            run={"id": run_id, "started_at": isoz(started), "finished_at": isoz(finished)},
            who=who,
            scope=scope,
            policy_digest=policies.digest(),
            evaluation=context.to_json(),
            signature=signature,
            files=listing,
            redacted=sorted(netted),
            timings=timings.to_json(redactor),
            overridden=overrides_for_manifest(policies),
        )

    members = assemble(files, make_manifest, signer=signer, redactor=redactor, digests=hashes)
    bundle_path = out_dir / name
    write_bundle(bundle_path, members, started, packed)

    # The same reports beside the bundle under fixed names, for CI steps to pick up. Each is
    # written whole or not at all; one that fails (a full disk) does not stop the others.
    contents = dict(members)
    chosen = options.output_formats or tuple(SIDE_FILES)
    write_problems = write_side_files(
        out_dir, [(SIDE_FILES[f], contents[SIDE_FILES[f]]) for f in SIDE_FILES if f in chosen]
    )
    for name in (SIDE_FILES[f] for f in SIDE_FILES if f not in chosen):
        # An earlier run's file under that name must not pass for this run's.
        with contextlib.suppress(OSError):
            (out_dir / name).unlink(missing_ok=True)
    published: list[Published] = []
    publish_problems: list[str] = []
    if config.evidence.publish:
        targets = targets_from_config(config.evidence.publish, config.evidence.base_dir)
        published, publish_problems = publish(bundle_path, targets, finished)
        copies: dict[str, JSON] = {
            "format": "commsaudit/published/v1",
            "bundle": name,
            "copies": [p.to_json() for p in published],
            "problems": list(publish_problems),
        }
        write_problems += write_side_files(
            out_dir, [("published.json", dumps_pretty_bytes(copies))]
        )
    public_key = None
    if signer is not None and signer.ephemeral:
        key_name = name.removesuffix(".zip") + ".pub.pem"
        pem = signing.public_pem(signer.key.public_key())
        failed = write_side_files(out_dir, [(key_name, pem)])
        write_problems += failed
        public_key = None if failed else out_dir / key_name
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
        write_problems,
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
