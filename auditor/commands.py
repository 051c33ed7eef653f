"""What each `commsaudit` command does. `auditor.cli` parses the command line and imports this
only then, so `--help` and `--version` answer at once."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import os
import signal
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor import STARTED, __version__, demo
from auditor.audit import (
    AuditOptions,
    AuditOutcome,
    evaluate_snapshot,
    load_policy_set,
    redactor_for,
    run_audit,
)
from auditor.config import Config, default_config, load_config
from auditor.errors import ConfigError
from auditor.evidence import signing
from auditor.evidence.bundle import write_atomically
from auditor.jsonutil import dumps_pretty
from auditor.model.snapshot import read_snapshot
from auditor.policy import catalogue_problems, read_policy_files
from auditor.policytest import run_examples
from auditor.redact import RedactingFilter, Redactor
from auditor.reports import terminal
from auditor.resources import policies_dir
from auditor.results import SEVERITIES
from auditor.timeutil import utcnow
from connectors.registry import CONNECTORS, catalogue

log = logging.getLogger("commsaudit")


def _config(path: Path | None) -> Config:
    if path is not None:
        return load_config(path)
    default = Path("commsaudit.toml")
    if default.is_file():
        return load_config(default)
    raise ConfigError(
        "no config file: ./commsaudit.toml does not exist",
        hint="pass --config FILE, or run `commsaudit audit --demo` to see the sample",
    )


def _optional_config(path: Path | None) -> Config:
    if path is not None or Path("commsaudit.toml").is_file():
        return _config(path)
    return default_config(Path.cwd())


def _apply_domain_options(config: Config, args: argparse.Namespace) -> None:
    """--domain adds mail domains to [dns]; --no-smtp-probe turns the probe off."""
    if args.domain:
        section = config.connectors.setdefault("dns", {})
        section["domains"] = list(dict.fromkeys([*section.get("domains", []), *args.domain]))
    if args.no_smtp_probe and "dns" in config.connectors:
        config.connectors["dns"]["smtp_probe"] = False


def _audit_options(args: argparse.Namespace) -> AuditOptions:
    if getattr(args, "fail_on", "any") == "new" and getattr(args, "baseline", None) is None:
        raise ConfigError(
            "--fail-on new needs --baseline: new since what?",
            hint="pass the previous run's bundle as --baseline BUNDLE",
        )
    if getattr(args, "baseline_key", None) is not None and getattr(args, "baseline", None) is None:
        raise ConfigError("--baseline-key needs --baseline: the key of which bundle?")
    return AuditOptions(
        baseline=getattr(args, "baseline", None),
        baseline_key=getattr(args, "baseline_key", None),
        profile=args.profile,
        out=args.out,
        deadline_seconds=args.timeout,
        controls=args.controls,
        skip_controls=args.skip_controls,
        clock_started=STARTED,
        sarif_category=getattr(args, "sarif_category", None),
        output_formats=getattr(args, "output_formats", ()),
        read_everything=getattr(args, "read_all", False),
    )


def _progress(console: Console, args: argparse.Namespace) -> terminal.CollectionProgress:
    """The collection's progress display; without a terminal, a line per connector every
    COMMSAUDIT_PROGRESS_SECONDS (5 unless set)."""
    interval = terminal.PROGRESS_INTERVAL_SECONDS
    given = os.environ.get("COMMSAUDIT_PROGRESS_SECONDS", "")
    if given:
        try:
            seconds = float(given)
            if not math.isfinite(seconds):
                raise ValueError(given)
            interval = min(max(seconds, 0.2), 3600.0)
        except ValueError:
            raise ConfigError(
                f"COMMSAUDIT_PROGRESS_SECONDS={given[:20]!r} is not a number of seconds"
            ) from None
    return terminal.CollectionProgress(
        console, _log_filter.redactor, quiet=args.quiet, interval=interval
    )


def _cmd_audit(args: argparse.Namespace, console: Console) -> int:
    options = _audit_options(args)
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="commsaudit-demo-"))
        if args.demo:
            if args.config is not None:
                raise ConfigError("--demo audits the bundled sample; leave out --config")
            sample = demo.sample(args.demo)
            sandbox = stack.enter_context(demo.sandbox_for(sample))
            world = stack.enter_context(demo.email_world(sample))
            config = load_config(
                demo.prepare(Path(workdir), utcnow().date(), sample, sandbox=sandbox, world=world)
            )
            options.out = args.out or Path.cwd() / "commsaudit-out"
            options.ephemeral_key = True
            if not args.quiet:
                console.print(
                    "Auditing the bundled sample organisation (no credentials, no network)."
                )
        elif args.domain and args.config is None and not Path("commsaudit.toml").is_file():
            config = default_config(Path.cwd())
            options.profile = options.profile or "email-posture"
        else:
            config = _config(args.config)
        _apply_domain_options(config, args)
        _redact_config_secrets(config)
        with _progress(console, args) as progress:
            # The run's secrets (the signing key, each token as it is issued) are scrubbed
            # from the log lines too, not from the bundle only.
            outcome = run_audit(
                config, options, progress=progress.update, redactor=_log_filter.redactor
            )
    terminal.render(console, outcome.report, bundle=str(outcome.bundle), redactor=outcome.redactor)
    if outcome.public_key is not None and outcome.signer is not None:
        console.print(
            f"Signed with {outcome.signer.origin}; its public key: {outcome.public_key}\n"
            f"Check it: commsaudit verify {outcome.bundle} --key {outcome.public_key}"
        )
    for copy in outcome.published:
        locked = f", locked ({copy.mode}) until {copy.retain_until}" if copy.retain_until else ""
        destination = outcome.redactor.text(copy.destination)
        console.print(f"Kept a copy: {escape(destination)} (sha256 checked{locked})")
    for problem in outcome.publish_problems:
        _error(f"error: evidence not kept: {problem}")
    for problem in outcome.write_problems:
        _error(f"error: {problem}")
    if args.format == "json":
        # Built from redacted data already; the last net costs little.
        sys.stdout.write(outcome.redactor.text(dumps_pretty(outcome.results.to_json())))
        sys.stdout.flush()
    if outcome.publish_problems or outcome.write_problems:
        return 2  # the run's evidence is not where it must be kept: the job must not pass
    return _audit_exit_code(outcome, args)


def _audit_exit_code(outcome: AuditOutcome, args: argparse.Namespace) -> int:
    """The contract's codes: --fail-on narrows which failures give 1; it never hides 3 (a
    control that could not be judged), which only --allow-errors turns into 0."""
    results = outcome.results
    if args.fail_on == "any":
        return results.exit_code(allow_errors=args.allow_errors)
    if args.fail_on == "new":
        assert outcome.diff is not None  # checked before the run
        failed = any(c["new"] == "fail" for c in outcome.diff.new_failures)
    else:
        worst = SEVERITIES.index(args.fail_on)
        failed = any(
            r.status == "fail"
            and SEVERITIES.index(r.severity if r.severity in SEVERITIES else "info") <= worst
            for r in results.results
        )
    if failed:
        return 1
    return 3 if results.summary["error"] and not args.allow_errors else 0


def _cmd_init(args: argparse.Namespace, console: Console) -> int:
    from auditor.scaffold import setup_steps, write_starter

    written = write_starter(
        args.dir,
        tenant=args.tenant,
        aws_account=args.aws_account,
        domains=args.domain,
        force=args.force,
    )
    for path in written:
        print(f"wrote {path}")
    print()
    print(setup_steps(args.tenant, args.aws_account, args.repository), end="")
    return 0


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from auditor.reports import portfolio

    entries = [portfolio.read_entry(path) for path in args.bundles]
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "portfolio.html", portfolio.render_html(entries).encode())
    write_atomically(args.out / "portfolio.md", portfolio.render_markdown(entries).encode())
    failing = sum(1 for e in entries if e.counts["fail"])
    print(
        f"Portfolio of {len(entries)} run(s), {failing} with failures: "
        f"{args.out / 'portfolio.html'}, {args.out / 'portfolio.md'}"
    )
    return 1 if failing else 0


def _cmd_diff(args: argparse.Namespace, console: Console) -> int:
    from auditor.diff import compare, read_bundle_state, render_markdown, render_text

    changes = compare(read_bundle_state(args.old), read_bundle_state(args.new))
    if args.format == "json":
        sys.stdout.write(dumps_pretty(changes.to_json()))
    elif args.format == "markdown":
        print("\n".join(render_markdown(changes)))
    else:
        print("\n".join(render_text(changes)))
    return 1 if changes.new_failures else 0


def _cmd_record(args: argparse.Namespace, console: Console) -> int:
    from auditor.evidence.recorded import write_recorded_tenants
    from connectors.m365.pseudonymise import pseudonymise_tenant

    config = _config(args.config)
    _redact_config_secrets(config)
    if "m365" not in config.connectors:
        raise ConfigError(
            "record needs an [m365] section: it records Microsoft 365 tenants", where=config.label
        )
    options = _audit_options(args)
    options.read_everything = True  # a recorded tenant is whole, whatever the profile
    with _progress(console, args) as progress:
        outcome = run_audit(
            config, options, progress=progress.update, redactor=_log_filter.redactor
        )
    terminal.render(console, outcome.report, bundle=str(outcome.bundle), redactor=outcome.redactor)
    for instance, target in write_recorded_tenants(outcome.bundle, args.tenants):
        if args.pseudonymise:
            pseudonyms = pseudonymise_tenant(target)
            glass = outcome.tables.get(instance, {}).get("break_glass_accounts", [])
            renamed = [
                pseudonyms.email(a) if "@" in a else pseudonyms.mapping.get(a, a) for a in glass
            ]
            if glass:
                console.print(f"break_glass_accounts in the recording: {renamed}", markup=False)
        console.print(
            f"Recorded tenant: {target} (serve it with: commsaudit sandbox m365 {target})",
            markup=False,
        )
    for problem in outcome.write_problems:
        _error(f"error: {problem}")
    if args.format == "json":
        sys.stdout.write(outcome.redactor.text(dumps_pretty(outcome.results.to_json())))
    if outcome.write_problems:
        return 2
    return outcome.results.exit_code(allow_errors=args.allow_errors)


def _cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    config = _optional_config(args.config)
    _redact_config_secrets(config)
    snapshot = catalogue().held_to(read_snapshot(args.snapshot), "the snapshot's data")
    results, report = evaluate_snapshot(
        config, snapshot, args.profile, args.controls, args.skip_controls
    )
    terminal.render(console, report, redactor=_log_filter.redactor)
    if args.format == "json":
        sys.stdout.write(dumps_pretty(results.to_json()))
    return results.exit_code(allow_errors=args.allow_errors)


def _cmd_verify(args: argparse.Namespace, console: Console) -> int:
    from auditor.evidence.verify import describe, verify_bundle

    key = signing.load_public_key_file(args.key) if args.key else None
    reports = [
        verify_bundle(
            path,
            key,
            reevaluate=not args.no_reevaluate,
            require_signature=args.require_signature,
        )
        for path in args.bundles
    ]
    for report in reports:
        # Unwrapped lines: people grep verify's output for the file it names.
        for line in describe(report):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if report.ok and report.signature != "valid":
            # Intact, but nothing shows who made it: whoever edited it could redo every hash.
            console.print(
                "[yellow]OK (unsigned)[/]: the bundle verifies, but it is not signed, so anyone "
                "could have made it (--require-signature refuses unsigned bundles)",
                highlight=False,
                soft_wrap=True,
            )
        elif report.ok:
            console.print("[green]OK[/]: the bundle verifies")
        else:
            for problem in report.problems:
                console.print(
                    f"[red]FAILED[/] {escape(problem.line())}", highlight=False, soft_wrap=True
                )
    if args.format == "json":
        document = [r.to_json() for r in reports]
        sys.stdout.write(dumps_pretty(document[0] if len(document) == 1 else document))
    return 0 if all(r.ok for r in reports) else 1


def _cmd_policies(args: argparse.Namespace, console: Console) -> int:
    if args.policies_command in ("lint", "test"):
        loaded, problems = read_policy_files(args.dirs or [policies_dir()])
        count = len(loaded)
        sections = catalogue()
        for path, policy in loaded:
            problems.extend(catalogue_problems(str(path), policy, sections))
        failures = 0
        # One problem a line, never folded: people grep these and CI logs keep long lines.
        out = Console(highlight=False, soft_wrap=True)
        if args.policies_command == "test":
            for path, policy in loaded:
                for outcome in run_examples(policy):
                    if not outcome.ok:
                        failures += 1
                        problems.append(f"{path}: example {outcome.example!r}: {outcome.problem}")
        for line in problems:
            out.print(line, markup=False)
        if problems:
            return 2 if args.policies_command == "lint" or failures < len(problems) else 1
        verb = (
            "checked (meta-schema, references, patterns, both validators)"
            if args.policies_command == "lint"
            else "tested, every example gave its expected verdict"
        )
        out.print(f"{count} policies {verb}: no problems", markup=False)
        return 0

    config = _optional_config(args.config)
    policies = load_policy_set(config)
    if args.policies_command == "show":
        shown = policies.policies.get(args.id)
        if shown is None:
            raise ConfigError(
                f"no control has the id {args.id!r}", hint="`commsaudit policies list` shows them"
            )
        sys.stdout.write(shown.content.decode("utf-8"))
        return 0
    chosen = policies.select(args.profile) if args.profile else policies
    if args.format == "json":
        sys.stdout.write(
            dumps_pretty(
                [
                    {
                        "id": p.id,
                        "title": p.title,
                        "severity": p.severity,
                        "responsibility": p.responsibility,
                        "citations": list(p.citations),
                        "category": p.category,
                        "platform": p.platform,
                        "profiles": list(p.profiles),
                    }
                    for p in chosen
                ]
            )
        )
        return 0
    table = Table(box=None, pad_edge=False)
    for column in ("id", "severity", "resp.", "citations", "profiles", "title"):
        table.add_column(column)
    for p in chosen:
        table.add_row(
            p.id,
            p.severity,
            p.responsibility,
            ", ".join(p.citations),
            ", ".join(p.profiles),
            p.title,
        )
    Console(highlight=False, width=200).print(table)
    return 0


def _cmd_keygen(args: argparse.Namespace, console: Console) -> int:
    private, public, fingerprint = signing.write_keypair(args.out, overwrite=args.force)
    print(f"private key: {private} (keep it secret; mode 0600)")
    print(f"public key:  {public} (give it to whoever verifies bundles)")
    print(f"fingerprint: {fingerprint}")
    print(
        f'Use it: export COMMSAUDIT_SIGNING_KEY="$(cat {private})"  '
        f'or  [evidence] signing_key_file = "{private}"'
    )
    return 0


def _cmd_sandbox(args: argparse.Namespace, console: Console) -> int:
    from connectors.m365.sandbox.server import Faults, ListenError, Sandbox

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if args.sandbox_kind == "email":
        return _serve_email(args, stop)
    directory = args.directory
    if not (directory / "tenant.json").is_file():
        raise ConfigError(
            f"{directory} is not a recorded tenant (no tenant.json)",
            hint="try fixtures/tenants/contoso-health",
        )
    faults = Faults(
        latency_ms=args.latency_ms,
        throttle_every=args.throttle_every,
        throttle_batch_items=args.throttle_batch_items,
        fail=tuple(args.fail),
        malformed=tuple(args.malformed),
        drop=tuple(args.drop),
        forbid=tuple(args.forbid),
    )
    try:
        sandbox = Sandbox(
            directory,
            faults=faults,
            page_size=args.page_size,
            port=args.port,
            verbose=bool(args.verbose),
        ).start()
    except ListenError as exc:
        raise ConfigError(
            f"the sandbox could not listen on {exc}",
            hint="choose another --port, or leave it out to take any free ports",
        ) from None
    try:
        # The tenant is read and encoded: out of the cyclic collector's sight, a large one's
        # million objects are not walked again and again while answers are served (each walk
        # held every answer in flight longer than its latency).
        gc.freeze()
        sys.stdout.write(sandbox.config_toml(auth=args.auth))
        if args.auth == "client-secret":
            for name, value in sandbox.environment().items():
                sys.stdout.write(f"export {name}={value}\n")
        sys.stdout.flush()
        sys.stderr.write(f"serving {directory} on 127.0.0.1; Ctrl-C stops\n")
        stop.wait()
    finally:
        sandbox.stop()
    return 0


def _serve_email(args: argparse.Namespace, stop: threading.Event) -> int:
    from connectors.dns.sandbox.world import WorldError, serve_world

    try:
        with serve_world(args.file, latency_ms=args.latency_ms) as world:
            args.ca_out.write_bytes(world.ca_pem)
            sys.stdout.write(world.config_toml(args.ca_out.resolve()))
            sys.stdout.flush()
            sys.stderr.write(
                f"serving {args.file} on 127.0.0.1 (CA in {args.ca_out}); Ctrl-C stops\n"
            )
            stop.wait()
    except WorldError as exc:
        raise ConfigError(
            str(exc), hint="try fixtures/demo/contoso-health/email-world.json"
        ) from None
    return 0


def _cmd_permissions(args: argparse.Namespace, console: Console) -> int:
    data: dict[str, dict[str, Any]] = {}
    guides: dict[str, str] = {}
    for name, connector in CONNECTORS.items():
        extra, guides[name] = connector.grant_guide()
        data[name] = {
            "title": connector.title,
            "permissions": [{"name": p.name, "why": p.why} for p in connector.permissions()],
            **extra,
        }
    if args.format == "json":
        sys.stdout.write(dumps_pretty(data))
        return 0
    for name, entry in data.items():
        print(f"[{name}] {entry['title']}")
        for perm in entry["permissions"]:
            print(f"  - {perm['name']}: {perm['why']}")
        if guides[name]:
            print(textwrap.indent(guides[name], "  "))
    return 0


def _cmd_pulumi(args: argparse.Namespace, console: Console) -> int:
    from auditor.crossguard import PACK_NAME, write_pack

    if (
        args.dir.exists()
        and any(args.dir.iterdir())
        and not (args.dir / "PulumiPolicy.yaml").exists()
    ):
        raise ConfigError(
            f"{args.dir} is not empty and holds no policy pack",
            hint="choose an empty (or new) directory, or one this command wrote before",
        )
    config = _optional_config(args.config)
    chosen = write_pack(
        args.dir,
        profile=args.profile or config.policies.profile,
        mandatory=not args.advisory,
        version=__version__,
        policy_dirs=config.policies.paths,
        parameters=config.policies.parameters,
    )
    level = "advisory" if args.advisory else "mandatory"
    print(f"Wrote policy pack {PACK_NAME} to {args.dir}: {len(chosen)} {level} controls")
    for policy in chosen:
        print(f"  {policy.id}: {policy.title}")
    print(
        "Try it on a stack (in the stack's project directory):\n"
        f"  python -m venv {args.dir}/venv && {args.dir}/venv/bin/pip install -r "
        f"{args.dir}/requirements.txt\n"
        f"  pulumi preview --policy-pack {args.dir}"
    )
    return 0


_COMMANDS = {
    "audit": _cmd_audit,
    "evaluate": _cmd_evaluate,
    "verify": _cmd_verify,
    "policies": _cmd_policies,
    "keygen": _cmd_keygen,
    "sandbox": _cmd_sandbox,
    "record": _cmd_record,
    "permissions": _cmd_permissions,
    "pulumi": _cmd_pulumi,
    "diff": _cmd_diff,
    "report": _cmd_report,
    "init": _cmd_init,
}


# Scrubs log records and error lines: the environment's secrets from the start, and the
# config's `secret_env` values too once a config is read (`_redact_config_secrets`).
_log_filter = RedactingFilter(Redactor())


def _redact_config_secrets(config: Config) -> None:
    _log_filter.redactor = redactor_for(config, os.environ)


def _setup_logging(verbosity: int) -> None:
    # stderr is the Actions log: no record may start a workflow command there.
    handler = logging.StreamHandler(terminal.log_stream())
    _log_filter.redactor = Redactor.from_environment()
    handler.addFilter(_log_filter)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(
        logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING
    )
    # The SDKs log every request, with its headers, at INFO: that is -vv's, not -v's.
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity > 1 else logging.WARNING)
    # azure-identity warns of every failed sign-in (one an audience, as they run side by side);
    # the connector reports the failure itself, once, with what to do: the SDK's lines are -v's.
    logging.getLogger("azure.identity").setLevel(
        logging.NOTSET if verbosity > 1 else logging.WARNING if verbosity else logging.ERROR
    )


_CHATTY_LOGGERS = ("azure", "msal", "httpx", "httpcore", "botocore", "urllib3", "kiota_http")


def _error(text: str) -> None:
    """One unwrapped line on stderr, whatever the terminal width: errors get grepped."""
    stream = terminal.log_stream()
    stream.write(f"commsaudit: {_log_filter.redactor.text(text)}\n")
    stream.flush()
