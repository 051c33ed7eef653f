"""The email posture of 1,000 generated domains, and checkdmarc on the same zones.

Each domain has an SPF record whose includes go three deep, two MX hosts, DMARC, TLS-RPT and a
DKIM selector; half publish MTA-STS. A DNS server (in its own process, with a fixed latency on
every answer) serves the zones, and an HTTPS server the MTA-STS policies.

By default it times what a user runs, `commsaudit audit --profile email-posture --no-smtp-probe`
as a process of its own (wall time, peak memory, the phase times its manifest records), then the
email-posture connector alone in this process, beside it. Prints domains per second, the ratio
to the lower bound (the deepest chain of lookups that must follow one another, times the
latency), and checkdmarc's figures on the same run.

    python bench/dns_posture.py [--domains N] [--latency-ms N] [--concurrency N]
                                [--checkdmarc-domains N] [--mode both|command|connector]

checkdmarc checks one domain after another, so its rate does not depend on how many domains it
is given: by default it runs on the first 100 (set --checkdmarc-domains to the full count to
run it on all; 0 skips it). It needs `pip install -e '.[bench]'` (checkdmarc); without it, only
commsaudit's figures print.
The STARTTLS probe is off for both (checkdmarc's is opt-in). checkdmarc fetches MTA-STS policies
from port 443, so its policy fetches only succeed when this runs as root; otherwise they fail
fast and it is said so.

Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.collect import paused_gc  # noqa: E402
from connectors.base import CollectContext  # noqa: E402
from connectors.dns.connector import DnsConnector  # noqa: E402
from connectors.dns.sandbox import DnsSandbox, HttpsSandbox, WebHost, Zone  # noqa: E402
from connectors.pki import LocalCA  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole_command import CommandRun, run_audit  # noqa: E402

SUFFIX = "bench.test"
PROVIDERS = 20
# A real RSA-2048 public key, so DKIM parsing does real work.
DKIM_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0DbLBcud1UXPX+DwC71OeFxE9n6pD9YaOngMyf5qog6d4xQV"
    "8fKtJnRPUh0ZmfI+RENdVbkKrO4I7nHNDgtwbuut32inm1HvEzf/PX7jhikISXub6xeKPuIjWB3sHvBmER1rDV7Fq28d"
    "oy7etnpwjfLzp/meVWyf0H2JRXkL9z4v1WUjiWTShY5+VauatLxOqUHuhn++81ksTd2Z6fxTCklCpjHEZgtJI4Vif1mn"
    "WkdmitbNXFchHX5B54q9EUe6qFHPiMyWlAJigMHZvBidWqaE2u9zrR0Ob/nyMFKbuh4eCbTCeLmeTClKDix5HisPgcPj"
    "QMzMRXq8a/ASGqKbNwIDAQAB"
)
# The deepest chain of lookups each domain needs, one after another: its SPF record, then the
# three includes below it.
DEPENDENT_LOOKUPS = 4


def domain_name(i: int) -> str:
    return f"d{i:04d}.{SUFFIX}"


def generate(count: int) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """(zone data, MTA-STS policy host -> policy text)."""
    zone: dict[str, list[Any]] = {}
    web: dict[str, str] = {}
    for k in range(PROVIDERS):
        zone[f"spf{k}.provider.{SUFFIX}"] = [
            {"TXT": f"v=spf1 ip4:198.51.{k}.0/24 ip6:2001:db8:{k:x}::/48 -all"}
        ]
    for i in range(count):
        name = domain_name(i)
        mx1, mx2 = f"mx1.{name}", f"mx2.{name}"
        zone[name] = [
            {"TXT": f"v=spf1 include:_spf.{name} ip4:192.0.2.{i % 250}/32 -all"},
            {"TXT": f"bench-verification={i:08x}"},
            {"MX": [10, mx1]},
            {"MX": [20, mx2]},
        ]
        zone[f"_spf.{name}"] = [{"TXT": f"v=spf1 include:_spf2.{name} a:{mx1} ~all"}]
        zone[f"_spf2.{name}"] = [
            {"TXT": f"v=spf1 include:spf{i % PROVIDERS}.provider.{SUFFIX} ~all"}
        ]
        zone[mx1] = [{"A": f"10.{i // 250}.{i % 250}.1"}]
        zone[mx2] = [{"A": f"10.{i // 250}.{i % 250}.2"}]
        zone[f"_dmarc.{name}"] = [
            {"TXT": f"v=DMARC1; p={'reject' if i % 3 else 'quarantine'}; rua=mailto:d@{name}"}
        ]
        zone[f"_smtp._tls.{name}"] = [{"TXT": f"v=TLSRPTv1; rua=mailto:tls@{name}"}]
        zone[f"selector1._domainkey.{name}"] = [{"TXT": f"v=DKIM1; k=rsa; p={DKIM_KEY}"}]
        if i % 2 == 0:
            zone[f"_mta-sts.{name}"] = [{"TXT": f"v=STSv1; id=2026{i:04d}"}]
            zone[f"mta-sts.{name}"] = [{"A": "127.0.0.1"}]
            web[f"mta-sts.{name}"] = (
                f"version: STSv1\nmode: enforce\nmx: *.{name}\nmax_age: 604800\n"
            )
    return zone, web


def serve(spec: Path) -> None:
    """Child process: serve the zones and policies until stdin closes."""
    data = json.loads(spec.read_text())
    ca = LocalCA()
    Path(data["ca"]).write_bytes(ca.pem)
    web = {host: WebHost(body.encode()) for host, body in data["web"].items()}
    https_port = 443 if os.geteuid() == 0 else 0
    with (
        DnsSandbox(Zone.from_data(data["zone"]), latency_ms=data["latency_ms"]) as dns,
        HttpsSandbox(ca, web, port=https_port) as https,
    ):
        print(json.dumps({"dns_port": dns.port, "https_port": https.port}), flush=True)
        sys.stdin.read()


def _dns_config(
    domains: list[str], dns_port: int, https_port: int, ca: Path, concurrency: int
) -> dict[str, Any]:
    return {
        "domains": domains,
        "nameservers": [f"127.0.0.1:{dns_port}"],
        "https_port": https_port,
        "ca_bundle": str(ca),
        "smtp_probe": False,
        "dkim_selectors": ["selector1"],
        "concurrency": concurrency,
        "timeout_seconds": 5.0,
    }


def run_command(config: dict[str, Any], work: Path) -> CommandRun:
    """`commsaudit audit --profile email-posture --no-smtp-probe`, as a process."""
    lines = ["[dns]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    path = work / "commsaudit.toml"
    path.write_text("\n".join(lines) + "\n")
    return run_audit(
        path, work / "out", "--profile", "email-posture", "--no-smtp-probe", "--format", "json"
    )


def run_commsaudit(
    domains: list[str], dns_port: int, https_port: int, ca: Path, concurrency: int
) -> tuple[float, DnsConnector, CollectContext]:
    config = _dns_config(domains, dns_port, https_port, ca, concurrency)
    connector = DnsConnector(config, ca.parent)
    ctx = CollectContext(
        connector="dns", now=dt.datetime.now(dt.UTC), deadline=time.monotonic() + 3600
    )
    started, cpu = time.perf_counter(), time.process_time()
    with paused_gc():  # as the audit's collector runs connectors
        asyncio.run(connector.collect(ctx))
    connector.stats["cpu_seconds"] = time.process_time() - cpu
    return time.perf_counter() - started, connector, ctx


def run_checkdmarc(domains: list[str], dns_port: int, ca: Path) -> tuple[float, list[Any]] | None:
    try:
        import checkdmarc
        from dns.nameserver import Do53Nameserver
    except ImportError:
        return None
    # checkdmarc fetches MTA-STS policies through the system resolver: point the generated
    # names at 127.0.0.1, as an /etc/hosts entry would, and trust the bench's CA.
    real = socket.getaddrinfo

    def local(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(SUFFIX):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = local
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    started = time.perf_counter()
    results = checkdmarc.check_domains(
        domains,
        nameservers=[Do53Nameserver("127.0.0.1", dns_port)],
        bimi_selector=None,  # type: ignore[arg-type]  # commsaudit does not check BIMI
        timeout=5.0,
    )
    wall = time.perf_counter() - started
    socket.getaddrinfo = real
    return wall, results if isinstance(results, list) else [results]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64, help="[dns] concurrency")
    parser.add_argument("--checkdmarc-domains", type=int, default=100)
    parser.add_argument("--mode", choices=["both", "command", "connector"], default="both")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    work = Path(tempfile.mkdtemp(prefix="commsaudit-dns-bench-"))
    zone, web = generate(args.domains)
    domains = [domain_name(i) for i in range(args.domains)]
    ca = work / "ca.pem"
    spec = work / "world.json"
    spec.write_text(
        json.dumps({"zone": zone, "web": web, "latency_ms": args.latency_ms, "ca": str(ca)})
    )
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline() or "{}")
        if not ports:
            raise SystemExit("the DNS and HTTPS servers did not start")
        command = None
        if args.mode in ("both", "command"):
            config = _dns_config(
                domains, ports["dns_port"], ports["https_port"], ca, args.concurrency
            )
            command = run_command(config, work)
        connector_run = None
        if args.mode in ("both", "connector"):
            connector_run = run_commsaudit(
                domains, ports["dns_port"], ports["https_port"], ca, args.concurrency
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sample = domains[: args.checkdmarc_domains]
        theirs = run_checkdmarc(sample, ports["dns_port"], ca)
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"zones: {args.domains:,} domains (SPF includes three deep, MTA-STS on half), "
        f"{args.latency_ms} ms added to every DNS answer; STARTTLS probe off"
    )
    bound = DEPENDENT_LOOKUPS * args.latency_ms / 1000
    rates: dict[str, float] = {}
    if command is not None:
        rates["the whole command"] = args.domains / command.wall
        print(
            "the whole command: commsaudit audit --profile email-posture --no-smtp-probe "
            "(its bytecode compiled beforehand, as an installed copy has it)"
        )
        print(
            f"  wall time:            {command.wall:.2f} s   "
            f"({rates['the whole command']:,.0f} domains/s; exit {command.exit_code}; "
            f"{command.summary['error']} errors)"
        )
        print(f"  phases:               {command.phases()}")
        print(f"  peak memory:          {command.peak_mib:,.0f} MiB")
    if connector_run is not None:
        wall, connector, ctx = connector_run
        rates["the connector alone"] = args.domains / wall
        _connector_figures(args, wall, connector, ctx, bound, peak)
    if not sample:
        return
    if theirs is None:
        print("checkdmarc: not installed (pip install -e '.[bench]') - no comparison")
        return
    their_wall, results = theirs
    their_rate = len(results) / their_wall
    fetched = sum(1 for r in results if (r.get("mta_sts") or {}).get("valid") is True)
    print(f"checkdmarc {_version()} (check_domains, one domain after another)")
    print(
        f"  wall time:            {their_wall:.2f} s for {len(results):,} domains   "
        f"({their_rate:,.1f} domains/s)"
    )
    print(
        f"  MTA-STS policies read: {fetched:,} of {sum(1 for d in sample if _sts(d)):,}"
        + ("" if os.geteuid() == 0 else " (not root: its port-443 fetches cannot succeed)")
    )
    for what, rate in rates.items():
        print(f"throughput ratio, {what}: {rate / their_rate:.1f}x checkdmarc's")


def _connector_figures(
    args: argparse.Namespace,
    wall: float,
    connector: DnsConnector,
    ctx: CollectContext,
    bound: float,
    peak: float,
) -> None:
    stats = connector.stats
    problems = [f"{s.name} {s.subject}: {s.reason}" for s in ctx.sections if s.status == "error"]
    sts_ok = sum(
        1
        for s in ctx.sections
        if s.name == "dns.mta_sts" and s.status == "ok" and (s.data or {}).get("mode") == "enforce"
    )
    floor = stats["queries"] * args.latency_ms / 1000 / args.concurrency
    rate = args.domains / wall
    print("the email-posture connector alone (in this process)")
    print(f"  wall time:            {wall:.2f} s   ({rate:,.0f} domains/s)")
    print(
        f"  DNS queries:          {stats['queries']:,} ({stats['cached']:,} answered from the "
        f"run's cache), concurrency {args.concurrency}"
    )
    print(
        f"  lower bound:          {bound:.2f} s ({DEPENDENT_LOOKUPS} dependent lookups x "
        f"{args.latency_ms} ms); ratio {_ratio(wall, bound)}"
    )
    print(
        f"  concurrency floor:    {floor:.2f} s (queries x latency / concurrency); "
        f"ratio {_ratio(wall, floor)}"
    )
    print(f"  MTA-STS enforce read: {sts_ok:,} of {args.domains // 2 + args.domains % 2:,}")
    unread = [
        (s.data or {}).get("problems")
        for s in ctx.sections
        if s.name == "dns.mta_sts"
        and s.status == "ok"
        and (s.data or {}).get("status") == "invalid"
    ]
    if unread:
        print(f"    not read: {len(unread)}, e.g. {unread[0]}")
    print(f"  sections in error:    {len(problems)}" + (f" - {problems[:2]}" if problems else ""))
    print(
        f"  CPU time:             {stats['cpu_seconds']:.2f} s in this process (the DNS and "
        "HTTPS servers use the other core)"
    )
    print(f"  peak memory:          {peak:,.0f} MiB")


def _ratio(value: float, bound: float) -> str:
    return f"{value / bound:.1f}x" if bound > 0 else "n/a (no added latency)"


def _sts(domain: str) -> bool:
    return int(domain[1:5]) % 2 == 0


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("checkdmarc")
    except Exception:
        return "(unknown version)"


if __name__ == "__main__":
    main()
