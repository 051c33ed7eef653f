"""The `commsaudit` command line. Exit codes: 0 every control passed (or was waived, inherited,
not applicable), 1 a control failed (or a bundle failed verification), 2 the run itself failed.

This module parses the command line with what it needs for that alone; `auditor.commands`, and
with it the engine, the SDKs and the reports, is imported once a command is to run."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from auditor import __version__, demo
from auditor.defaults import DEFAULT_DEADLINE_SECONDS, SIDE_FILES
from auditor.errors import PolicyError
from auditor.model.errors import AuditError
from auditor.results import SEVERITIES

log = logging.getLogger("commsaudit")


def _globs(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


_MAX_LATENCY_MS = 600_000


def _formats(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated list of SIDE_FILES names."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SIDE_FILES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(repr, unknown)) or 'nothing'} is not one of {', '.join(SIDE_FILES)}"
        )
    return names


def _within(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, or a usage error naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commsaudit",
        description="Policy-as-code auditor for communication platforms: HIPAA evidence "
        "you can verify.",
    )
    parser.add_argument("--version", action="version", version=f"commsaudit {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output on stderr (-vv: every HTTP request and header too)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False,
        help="no progress on stderr: only the summary, warnings and errors",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="config file (default: ./commsaudit.toml)")
        p.add_argument(
            "--profile",
            help="policy profile: hipaa (default), hipaa-nprm-2025, email-posture, scuba",
        )
        p.add_argument(
            "--controls",
            type=_globs,
            default=[],
            help="only these control ids or globs, comma-separated",
        )
        p.add_argument(
            "--skip-controls", type=_globs, default=[], help="leave out these control ids or globs"
        )
        p.add_argument(
            "--format", choices=["text", "json"], default="text", help="json: results on stdout"
        )
        p.add_argument(
            "--allow-errors",
            action="store_true",
            help="exit 0 instead of 3 when no control failed but some could not be judged "
            "(error); the errors stay in every report",
        )
        # The default since exit code 3 exists; kept so existing workflows keep working.
        p.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)

    audit = commands.add_parser(
        "audit", help="collect, evaluate, and write a signed evidence bundle"
    )
    selection(audit)
    audit.add_argument(
        "--out", type=Path, help="directory for the bundle and reports (default: ./commsaudit-out)"
    )
    audit.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="audit this mail domain's public email posture (repeatable); needs no credentials",
    )
    audit.add_argument(
        "--read-all",
        action="store_true",
        help="collect every section the connectors can read, not only those the chosen "
        "controls read (a bundle to evaluate later under another profile)",
    )
    audit.add_argument(
        "--no-smtp-probe",
        action="store_true",
        help="skip the STARTTLS probe of MX hosts (where outbound port 25 is blocked)",
    )
    audit.add_argument(
        "--demo",
        nargs="?",
        const=demo.DEMO_ORGANISATION,
        metavar="SAMPLE",
        help="audit a bundled sample organisation (contoso-health, the default, or "
        "fabrikam-clinic): no credentials, no network",
    )
    audit.add_argument(
        "--baseline",
        type=Path,
        metavar="BUNDLE",
        help="a previous run's bundle: the reports and diff.json say what changed since "
        "(it must verify; with [evidence] require_signature, signed with this run's key)",
    )
    audit.add_argument(
        "--baseline-key",
        type=Path,
        metavar="PUBLIC_KEY",
        help="public key the baseline must be signed with (PEM), e.g. the previous key after "
        "a key change",
    )
    audit.add_argument(
        "--output-formats",
        type=_formats,
        default=(),
        metavar="LIST",
        help="which files to write beside the bundle, comma-separated, from "
        f"{','.join(SIDE_FILES)} (default: all; the bundle always holds every one)",
    )
    audit.add_argument(
        "--sarif-category",
        metavar="NAME",
        help="code-scanning category of results.sarif (default: commsaudit/PROFILE/AUDITED "
        "SCOPE, so each tenant of a matrix keeps its own alerts)",
    )
    audit.add_argument(
        "--fail-on",
        choices=["any", "new", *SEVERITIES[:-1]],
        default="any",
        help="exit 1 for: any failure (default); only failures new since --baseline; or "
        "failures of at least this severity",
    )
    audit.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DEADLINE_SECONDS,
        metavar="SECONDS",
        help=f"deadline for collection (default {DEFAULT_DEADLINE_SECONDS:.0f})",
    )

    record = commands.add_parser(
        "record",
        help="audit, and also write each Microsoft 365 tenant's answers as a recorded tenant",
    )
    selection(record)
    record.add_argument("--out", type=Path, help="directory for the bundle and reports")
    record.add_argument(
        "--tenants",
        type=Path,
        required=True,
        metavar="DIR",
        help="where the recorded tenant goes (DIR/<tenant>/, the layout the sandbox serves)",
    )
    record.add_argument(
        "--pseudonymise",
        action="store_true",
        help="replace user names, addresses and ids with stable pseudonyms",
    )
    record.add_argument(
        "--timeout", type=float, default=DEFAULT_DEADLINE_SECONDS, metavar="SECONDS"
    )

    evaluate = commands.add_parser("evaluate", help="evaluate a snapshot file offline")
    evaluate.add_argument("snapshot", type=Path)
    selection(evaluate)

    verify = commands.add_parser("verify", help="check a bundle's hashes, signature and results")
    verify.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE")
    verify.add_argument("--key", type=Path, help="public key the bundle must be signed with (PEM)")
    verify.add_argument("--format", choices=["text", "json"], default="text")
    verify.add_argument(
        "--no-reevaluate", action="store_true", help="skip re-evaluating the snapshot"
    )
    verify.add_argument(
        "--require-signature",
        action="store_true",
        help="fail (exit 1) for a bundle that is not signed",
    )

    policies = commands.add_parser("policies", help="list, show, lint or test policies")
    policy_commands = policies.add_subparsers(
        dest="policies_command", required=True, metavar="ACTION"
    )
    listing = policy_commands.add_parser("list", help="the controls, one a line")
    listing.add_argument("--profile")
    listing.add_argument("--config", type=Path)
    listing.add_argument("--format", choices=["text", "json"], default="text")
    show = policy_commands.add_parser("show", help="one policy file")
    show.add_argument("id")
    show.add_argument("--config", type=Path)
    lint = policy_commands.add_parser(
        "lint",
        help="check policy files: the meta-schema, every $ref and pattern, both validators",
    )
    lint.add_argument("dirs", type=Path, nargs="*", metavar="DIR")
    test = policy_commands.add_parser("test", help="run every policy's pass and fail examples")
    test.add_argument("dirs", type=Path, nargs="*", metavar="DIR")

    keygen = commands.add_parser("keygen", help="make an ed25519 key pair for signing bundles")
    keygen.add_argument(
        "--out", type=Path, required=True, help="private key file; the public key goes beside it"
    )
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a recorded tenant, or mail domains, on 127.0.0.1 for trying and testing",
    )
    sandbox_kinds = sandbox.add_subparsers(dest="sandbox_kind", required=True, metavar="KIND")
    m365 = sandbox_kinds.add_parser("m365", help="a recorded Microsoft 365 tenant")
    m365.add_argument("directory", type=Path, metavar="DIR", help="recorded tenant directory")
    m365.add_argument(
        "--port",
        type=_within(0, 65535 - 4),
        default=0,
        help="first of five consecutive ports (default: any free)",
    )
    m365.add_argument(
        "--latency-ms",
        type=_within(0, _MAX_LATENCY_MS),
        default=0,
        help="every answer takes at least N ms from its request, the sandbox's own work included",
    )
    m365.add_argument(
        "--page-size", type=_within(1, 100_000), default=100, help="items per page of a collection"
    )
    m365.add_argument(
        "--throttle-every",
        type=_within(0, 1_000_000),
        default=0,
        metavar="N",
        help="answer every Nth request 429",
    )
    m365.add_argument(
        "--throttle-batch-items",
        type=_within(0, 1_000_000),
        default=0,
        metavar="N",
        help="answer every Nth item inside a Graph $batch 429 (with its own Retry-After), in a "
        "200 envelope as Graph does",
    )
    m365.add_argument(
        "--auth",
        choices=["client-secret", "certificate", "workload-identity"],
        default="client-secret",
        help="how the printed config signs in (all three are accepted)",
    )
    for fault, what in (
        ("fail", "503"),
        ("malformed", "200 with invalid JSON"),
        ("drop", "a closed connection"),
        ("forbid", "403"),
    ):
        m365.add_argument(
            f"--{fault}",
            action="append",
            default=[],
            metavar="GLOB",
            help=f"answer matching recorded paths with {what} (e.g. graph/v1.0/users, exo/*)",
        )
    email = sandbox_kinds.add_parser(
        "email", help="mail domains: DNS (with signed zones), MTA-STS hosts and SMTP servers"
    )
    email.add_argument(
        "file", type=Path, metavar="FILE", help="an email world (format commsaudit/email-world/v1)"
    )
    email.add_argument(
        "--latency-ms", type=_within(0, _MAX_LATENCY_MS), default=0, help="delay every DNS answer"
    )
    email.add_argument(
        "--ca-out",
        type=Path,
        default=Path("sandbox-ca.pem"),
        help="where to write the CA its certificates chain to (default: sandbox-ca.pem)",
    )
    init = commands.add_parser(
        "init",
        help="write a starter commsaudit.toml, attestations file and scheduled workflow, and "
        "print the sign-in setup (no stored secrets)",
    )
    init.add_argument("dir", type=Path, nargs="?", default=Path(), metavar="DIR")
    init.add_argument("--tenant", help="the Microsoft 365 tenant (id or domain)")
    init.add_argument("--aws-account", help="the AWS account id to audit")
    init.add_argument("--domain", action="append", default=[], help="a mail domain (repeatable)")
    init.add_argument("--repository", help="the GitHub repository that runs it (OWNER/REPO)")
    init.add_argument("--force", action="store_true", help="replace files that exist")
    portfolio = commands.add_parser(
        "report", help="one portfolio report from several bundles (an MSP's tenants)"
    )
    portfolio.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE")
    portfolio.add_argument(
        "--out", type=Path, default=Path(), help="where portfolio.html and portfolio.md go"
    )
    changes = commands.add_parser(
        "diff", help="what changed between two runs' bundles: statuses, settings, subjects"
    )
    changes.add_argument("old", type=Path, metavar="OLD_BUNDLE")
    changes.add_argument("new", type=Path, metavar="NEW_BUNDLE")
    changes.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    pulumi = commands.add_parser("pulumi", help="Pulumi: a CrossGuard policy pack")
    pulumi_commands = pulumi.add_subparsers(dest="pulumi_command", required=True, metavar="ACTION")
    pack = pulumi_commands.add_parser(
        "policy-pack",
        help="write a policy pack that enforces the aws.* policies at `pulumi preview`",
    )
    pack.add_argument("dir", type=Path, metavar="DIR", help="where to write the pack")
    pack.add_argument(
        "--profile", help="whose aws.* controls (default: the config's profile, else hipaa)"
    )
    pack.add_argument(
        "--config",
        type=Path,
        help="take [policies] paths, parameters and profile from this config (default: "
        "./commsaudit.toml if there is one), so the pack enforces what the audit judges",
    )
    pack.add_argument(
        "--advisory",
        action="store_true",
        help="report violations without blocking the update (default: mandatory)",
    )
    perms = commands.add_parser(
        "permissions", help="the least-privilege permissions each connector needs"
    )
    perms.add_argument("--format", choices=["text", "json"], default="text")
    # -v also works after the command (`commsaudit audit -v`); SUPPRESS keeps the top-level count.
    for sub in [
        *commands.choices.values(),
        *policy_commands.choices.values(),
        *sandbox_kinds.choices.values(),
        *pulumi_commands.choices.values(),
    ]:
        sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
        sub.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    return parser


class _Terminated(BaseException):
    """SIGTERM (a cancelled CI job, `timeout`, `docker stop`), raised where the run is, so every
    `with` on the way out runs: temporary directories go, no partial file takes a final name."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from auditor import commands
    from auditor.commands import _error
    from auditor.reports import terminal

    commands._setup_logging(args.verbose)
    console = terminal.make_console()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return commands._COMMANDS[args.command](args, console)
    except PolicyError as exc:
        for line in exc.problems:
            _error(f"error: {line}")
        return 2
    except AuditError as exc:
        _error(f"error: {exc.line()}")
        return 2
    except BrokenPipeError:
        # The reader went away (`commsaudit diff A B | head`): not an error of ours. Point
        # stdout at nothing so the interpreter's final flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except _Terminated:
        _error("terminated")
        return 128 + signal.SIGTERM
    except Exception as exc:  # a bug: say so in one line, with the traceback only when asked
        if args.verbose:
            log.exception("unexpected error")
        from auditor.redact import Redactor

        redacted = Redactor.from_environment(os.environ).text(f"{type(exc).__name__}: {exc}")
        _error(f"internal error: {redacted} (run with -v for the traceback, and please report it)")
        return 2


def run() -> NoReturn:
    """The `commsaudit` command: `main`, then exit without the interpreter's teardown. Every file
    is written and closed by then; freeing a large tenant's million objects one by one, only for
    the process to end, took a third of a second."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
