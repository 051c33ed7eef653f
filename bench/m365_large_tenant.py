"""Microsoft 365 on a large generated tenant: 100,000 users, 50,000 mailboxes and 300
Conditional Access policies, served by the sandbox (in its own process) with a fixed latency on
every answer.

By default it times what a user runs, `commsaudit audit --profile hipaa` as a process of its own
(wall time, peak memory, and the phase times the bundle's manifest records, redaction's share
among them), then the connector alone in this process, beside it. Each is compared with the lower
bound: the longest chain of requests that must follow one another, times the latency. The
sandbox answers each request `--latency-ms` after it arrives (its own work included) and runs in
its own process, so on a small machine they compete for the cores.

    python bench/m365_large_tenant.py [--users N] [--mailboxes N] [--policies N]
                                      [--latency-ms N] [--page-size N]
                                      [--mode both|command|connector] [--profile NAME]

Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.collect import paused_gc  # noqa: E402
from connectors.base import CollectContext  # noqa: E402
from connectors.m365.connector import M365Connector  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole_command import run_audit  # noqa: E402

GRAPH_PAGE = 999  # the most Graph hands out per page for these collections
EXO_PAGE = 1000


def _write(path: Path, body: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))


def generate(target: Path, users: int, mailboxes: int, policies: int) -> None:
    """A copy of contoso-health with its big collections blown up to size."""
    shutil.copytree(ROOT / "fixtures" / "tenants" / "contoso-health", target)
    domain = "contoso-health.org"
    ids = [str(uuid.UUID(int=i + 1)) for i in range(users)]
    _write(
        target / "graph/v1.0/users.json",
        {
            "value": [
                {
                    "id": ids[i],
                    "userPrincipalName": f"user{i:06d}@{domain}",
                    "displayName": f"User {i:06d}",
                    "accountEnabled": i % 40 != 0,
                    "userType": "Member" if i % 25 else "Guest",
                }
                for i in range(users)
            ]
        },
    )
    _write(
        target / "graph/v1.0/reports/authenticationMethods/userRegistrationDetails.json",
        {
            "value": [
                {
                    "id": ids[i],
                    "userPrincipalName": f"user{i:06d}@{domain}",
                    "userType": "member" if i % 25 else "guest",
                    "isAdmin": False,
                    "isMfaRegistered": i % 97 != 0,
                    "isMfaCapable": True,
                    "isSsprRegistered": True,
                    "methodsRegistered": ["microsoftAuthenticatorPush"],
                    "lastUpdatedDateTime": "2026-11-20T03:12:45Z",
                }
                for i in range(users)
            ]
        },
    )
    _write(
        target / "exo/Get-Mailbox.json",
        [
            {
                "Identity": f"user{i:06d}",
                "UserPrincipalName": f"user{i:06d}@{domain}",
                "RecipientTypeDetails": "UserMailbox",
                "AuditEnabled": True,
                "AuditLogAgeLimit": "90.00:00:00",
                "DefaultAuditSet": ["Admin", "Delegate", "Owner"],
                # A few of the many properties the audit does not ask for ($select drops them).
                "DisplayName": f"User {i:06d}",
                "Alias": f"user{i:06d}",
                "EmailAddresses": [f"SMTP:user{i:06d}@{domain}", f"smtp:u{i}@{domain}"],
                "ForwardingSmtpAddress": None,
                "LitigationHoldEnabled": False,
                "RetentionPolicy": "Default MRM Policy",
                "ProhibitSendQuota": "99 GB (106,300,440,576 bytes)",
                "WhenCreated": "2024-03-01T09:00:00Z",
            }
            for i in range(mailboxes)
        ],
    )
    # One entry per account, as Get-MailboxAuditBypassAssociation answers (none bypassing).
    _write(
        target / "exo/Get-MailboxAuditBypassAssociation.json",
        [
            {"Identity": f"user{i:06d}", "Name": f"user{i:06d}", "AuditBypassEnabled": False}
            for i in range(mailboxes)
        ],
    )
    base = json.loads((target / "graph/v1.0/identity/conditionalAccess/policies.json").read_text())
    template = base["value"][0]
    generated = []
    for i in range(policies):
        policy = json.loads(json.dumps(template))
        policy["id"] = str(uuid.UUID(int=10**9 + i))
        policy["displayName"] = f"Generated policy {i:03d}"
        policy["conditions"]["users"]["excludeGroups"] = [str(uuid.UUID(int=2 * 10**9 + i % 40))]
        generated.append(policy)
    base["value"] = base["value"] + generated
    _write(target / "graph/v1.0/identity/conditionalAccess/policies.json", base)
    for i in range(40):
        gid = str(uuid.UUID(int=2 * 10**9 + i))
        _write(target / f"graph/v1.0/groups/{gid}.json", {"id": gid, "displayName": f"Group {i}"})


def lower_bound(users: int, mailboxes: int, policies: int, groups: int) -> tuple[int, str]:
    """The longest chain of requests that cannot overlap, in requests."""
    chains = {
        "users pages": math.ceil(users / GRAPH_PAGE),
        "registration pages": math.ceil(users / GRAPH_PAGE),
        "Conditional Access pages, then group $batch calls": math.ceil((policies + 3) / GRAPH_PAGE)
        + math.ceil(groups / 20),
        "mailbox pages": math.ceil(mailboxes / EXO_PAGE),
        "audit bypass pages": math.ceil(mailboxes / EXO_PAGE),
        # Short chains that decide on a small tenant: Security & Compliance's own sign-in, its
        # region discovery, then the cmdlets; the SharePoint admin API's host comes from the
        # organization read, then its own sign-in, then the tenant settings.
        "Security & Compliance sign-in, region discovery, then the cmdlets": 3,
        "organization read, SharePoint admin sign-in, then the tenant settings": 3,
    }
    name = max(chains, key=lambda k: chains[k])
    # Every chain starts with the sign-in: the OpenID configuration, then the token request.
    return chains[name] + 2, name


def recorded_sizes(tenant: Path) -> tuple[int, int, int]:
    """Users, mailboxes and Conditional Access policies of a recorded tenant."""

    def count(path: str) -> int:
        file = tenant / path
        if not file.exists():
            return 0
        data = json.loads(file.read_text(encoding="utf-8"))
        return len(data.get("value", []) if isinstance(data, dict) else data)

    return (
        count("graph/v1.0/users.json"),
        count("exo/Get-Mailbox.json"),
        count("graph/v1.0/identity/conditionalAccess/policies.json"),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--mailboxes", type=int, default=50_000)
    parser.add_argument("--policies", type=int, default=300)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=EXO_PAGE, help="the sandbox's page size")
    parser.add_argument(
        "--per-host", type=int, default=8, help="the connector's concurrency cap per host"
    )
    parser.add_argument("--mode", choices=["both", "command", "connector"], default="both")
    parser.add_argument("--profile", default="hipaa", help="the profile the command audits with")
    parser.add_argument(
        "--tenant",
        type=Path,
        help="serve this recorded tenant (e.g. fixtures/tenants/contoso-health) instead of a "
        "generated one; --users, --mailboxes and --policies are then read from it",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="commsaudit-bench-"))
    groups = 40
    if args.tenant:
        tenant = args.tenant.resolve()
        args.users, args.mailboxes, args.policies = recorded_sizes(tenant)
        groups = len(list((tenant / "graph/v1.0/groups").glob("*.json")))
        print(
            f"recorded tenant {args.tenant}: {args.users:,} users, {args.mailboxes:,} "
            f"mailboxes, {args.policies} Conditional Access policies"
        )
    else:
        tenant = work / "tenant"
        started = time.perf_counter()
        generate(tenant, args.users, args.mailboxes, args.policies)
        os.sync()  # the tenant's files on disk before anything is timed, not written back then
        print(
            f"generated tenant: {args.users:,} users, {args.mailboxes:,} mailboxes, "
            f"{args.policies} Conditional Access policies ({time.perf_counter() - started:.1f} s)"
        )
    chain, which = lower_bound(args.users, args.mailboxes, args.policies, groups)
    bound = chain * args.latency_ms / 1000
    print(
        f"lower bound:         {bound:.2f} s "
        f"({chain} dependent requests x {args.latency_ms} ms: sign-in, then {which})"
    )

    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditor",
            "sandbox",
            "m365",
            str(tenant),
            "--auth",
            "certificate",
            "--latency-ms",
            str(args.latency_ms),
            "--page-size",
            str(args.page_size),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert sandbox.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("endpoints"):
            line = sandbox.stdout.readline()
            if not line:
                raise SystemExit("the sandbox did not start")
            lines.append(line)
        # The SharePoint admin API is opt-in (it needs Sites.FullControl.All): read it here too.
        lines.append("read_sharepoint_admin = true\n")
        limits = f"limits = {{ per_host = {args.per_host}, request_budget = 100000 }}\n"
        if args.mode in ("both", "command"):
            config = work / "commsaudit.toml"
            config.write_text("".join(lines) + limits)
            run = run_audit(config, work / "out", "--profile", args.profile, "--format", "json")
            print(
                f"the whole command: commsaudit audit --profile {args.profile} "
                "(its bytecode compiled beforehand, as an installed copy has it)"
            )
            print(f"  wall time:         {run.wall:.2f} s (exit {run.exit_code}; {run.summary})")
            print(f"  ratio to the bound: {_ratio(run.wall, bound)} (target: at most 1.5x)")
            print(f"  phases:            {run.phases()}")
            print(
                f"  processor time:    {run.cpu:.2f} s, user and system "
                f"({_ratio(run.cpu, bound)} the bound; the wall time cannot go below it)"
            )
            print(f"  peak memory:       {run.peak_mib:,.0f} MiB (target: under 1 GB)")
        if args.mode in ("both", "connector"):
            connector_only(lines, work, args, bound)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def connector_only(lines: list[str], work: Path, args: argparse.Namespace, bound: float) -> None:
    """The connector alone, in this process: the component figure beside the whole command's."""
    config = tomllib.loads("".join(lines))["m365"]
    config["limits"] = {"per_host": args.per_host, "request_budget": 100_000}
    connector = M365Connector(config, work)
    ctx = CollectContext(
        connector="m365", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 3600
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    with paused_gc():  # as the audit's collector runs connectors
        asyncio.run(connector.collect(ctx))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    problems = [f"{s.name}: {s.reason}" for s in ctx.sections if s.status != "ok"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats = connector.stats
    print("the connector alone (in this process)")
    print(
        f"  requests made:     {stats['requests']:,} ({stats['retries']} retried) "
        f"+ {stats['sign_ins']} sign-ins"
    )
    print(f"  wall time:         {wall:.2f} s (the connector's CPU time: {cpu:.2f} s)")
    print(f"  ratio to the bound: {_ratio(wall, bound)}")
    print(f"  peak memory:       {peak:,.0f} MiB (this process)")
    print(f"  sections in error: {len(problems)}" + (f" - {problems[:3]}" if problems else ""))


def _ratio(value: float, bound: float) -> str:
    return f"{value / bound:.2f}x" if bound > 0 else "n/a (no added latency)"


if __name__ == "__main__":
    main()
