"""Hostile mail and DNS servers: what an MX host or a zone can send the email-posture connector.

A silent, dripping, endless or garbled SMTP server must end as `error` for its host, naming the
host and what happened, within the run's deadline and with bounded memory; never `fail` (no
answer is not evidence of no STARTTLS) and never a crash of the connector. A CNAME loop must be
`error` for the lookup that met it, whether the loop is served by the sandbox or found by the
resolver. Every server here listens on 127.0.0.x and is started by the test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.dns import starttls
from connectors.dns.connector import MAX_MX_HOSTS
from connectors.dns.resolver import DnsLookupError, Resolver
from connectors.dns.sandbox import DnsSandbox, MailHost, SmtpSandbox, Zone
from connectors.dns.sandbox.smtp_server import STREAM_CAP
from connectors.pki import LocalCA

from helpers import email_sandbox, members, run_cli

# Far beyond what any probe here needs: only there so a regression fails instead of hanging.
HANG_GUARD = 60.0
PROBE_TIMEOUT = 3.0

# address -> (behaviour, words the error must carry besides the host's name)
HOSTILE: dict[str, tuple[str, tuple[str, ...]]] = {
    "127.0.0.51": ("silent", ("timed out", "waiting for the banner")),
    "127.0.0.52": ("drip", ("timed out", "waiting for the banner")),
    "127.0.0.53": ("endless-banner", ("banner", "more than")),
    "127.0.0.54": ("endless-ehlo", ("EHLO", "more than")),
    "127.0.0.55": ("garbage", ("banner", "not an SMTP reply")),
    "127.0.0.56": ("long-line", ("banner", "longer than")),
}


def _host(address: str) -> str:
    return f"mx.{HOSTILE[address][0]}.example"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSandbox]:
    hosts = {a: MailHost(_host(a), behaviour=b) for a, (b, _w) in HOSTILE.items()}
    hosts["127.0.0.57"] = MailHost("mx.plain.example", starttls=False)
    with SmtpSandbox(LocalCA(), hosts) as server:
        yield server


def _probe(server: SmtpSandbox, address: str) -> starttls.Probe:
    name = server.hosts[address].name
    coro = starttls.probe(name, [address], port=server.port, timeout=PROBE_TIMEOUT)
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD))


@pytest.mark.parametrize("address", sorted(HOSTILE), ids=[b for b, _ in HOSTILE.values()])
def test_a_misbehaving_smtp_server_is_an_error_for_its_host(
    smtp: SmtpSandbox, address: str
) -> None:
    result = _probe(smtp, address)
    assert result.status == "error", (result.status, result.error)
    assert result.error is not None and _host(address) in result.error, result.error
    for words in HOSTILE[address][1]:
        assert words in result.error, result.error
    assert not result.starttls and result.certificate is None


@pytest.mark.parametrize("behaviour", ["endless-banner", "endless-ehlo"])
def test_an_endless_reply_is_not_read_past_the_cap(smtp: SmtpSandbox, behaviour: str) -> None:
    address = next(a for a, (b, _w) in HOSTILE.items() if b == behaviour)
    before = len(smtp.conversations.get(address, []))
    result = _probe(smtp, address)
    # The probe hung up on the server long before the server's own safety stop: what the
    # kernel buffered is all the server got out, not the endless reply.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        talks = smtp.conversations.get(address, [])[before:]
        if talks and talks[-1].hung_up:
            break
        time.sleep(0.05)
    talk = smtp.conversations[address][before]
    assert talk.hung_up and talk.sent < STREAM_CAP, talk
    assert result.status == "error", result.error


def test_a_server_without_starttls_is_still_no_starttls(smtp: SmtpSandbox) -> None:
    result = _probe(smtp, "127.0.0.57")
    assert (result.status, result.starttls, result.error) == ("no-starttls", False, None)


def test_a_refused_connection_names_the_host_and_the_address() -> None:
    coro = starttls.probe("mx.gone.example", ["127.0.0.9"], port=1, timeout=2)
    result = asyncio.run(asyncio.wait_for(coro, HANG_GUARD))
    assert result.status == "unreachable" and result.error
    assert "mx.gone.example" in result.error and "127.0.0.9" in result.error


# ---- the control: dns.mx.starttls through the whole connector and engine ----


# An MX host at an address where nothing listens: it cannot be probed either.
GONE = ("mx.gone.example", "127.0.0.58")


def _zone(mail: dict[str, MailHost]) -> dict[str, Any]:
    zone: dict[str, Any] = {}
    for address, name in [*((a, h.name) for a, h in mail.items()), GONE[::-1]]:
        domain = name.removeprefix("mx.")
        zone[domain] = [{"TXT": "v=spf1 mx -all"}, {"MX": [10, name]}]
        zone[name] = [{"A": address}]
    return zone


@pytest.fixture(scope="module")
def audit(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpSandbox
) -> tuple[int, str, dict[tuple[str, str], Any]]:
    work = tmp_path_factory.mktemp("hostile-mail")
    with DnsSandbox(Zone.from_data(_zone(smtp.hosts))) as dns:
        (work / "commsaudit.toml").write_text(
            f'[dns]\nnameservers = ["{dns.nameserver}"]\nsmtp_port = {smtp.port}\n'
            'timeout_seconds = 1.0\nretries = 0\n[evidence]\nout = "out"\n'
        )
        domains = [n.removeprefix("mx.") for n in (*(h.name for h in smtp.hosts.values()), GONE[0])]
        proc = run_cli(
            "audit",
            "--config",
            work / "commsaudit.toml",
            *[a for d in domains for a in ("--domain", d)],
            "--profile",
            "email-posture",
            "--controls",
            "dns.mx.starttls,dns.spf.enforced",
            "--format",
            "json",
            # A short deadline: the probes of silent and dripping servers must end inside it
            # and leave the rest of the connector's work standing.
            "--timeout",
            "10",
            cwd=work,
            timeout=HANG_GUARD * 2,
        )
    assert "Traceback" not in proc.stderr, proc.stderr
    results = {(r["control"], r["subject"]): r for r in json.loads(proc.stdout)["results"]}
    return proc.returncode, proc.stderr, results


@pytest.mark.parametrize("address", sorted(HOSTILE), ids=[b for b, _ in HOSTILE.values()])
def test_the_starttls_control_is_error_for_a_misbehaving_host(
    audit: tuple[int, str, dict[tuple[str, str], Any]], address: str
) -> None:
    _code, _stderr, results = audit
    domain = _host(address).removeprefix("mx.")
    result = results[("dns.mx.starttls", domain)]
    assert result["status"] == "error", result
    assert _host(address) in result["reason"], result["reason"]
    for words in HOSTILE[address][1]:
        assert words in result["reason"], result["reason"]
    # The connector lived on and finished inside the deadline: the domain's other answers count.
    assert results[("dns.spf.enforced", domain)]["status"] == "pass", results


def test_an_mx_host_that_refuses_the_connection_is_error_not_fail(
    audit: tuple[int, str, dict[tuple[str, str], Any]],
) -> None:
    _code, _stderr, results = audit
    result = results[("dns.mx.starttls", "gone.example")]
    assert result["status"] == "error", result
    assert GONE[0] in result["reason"] and GONE[1] in result["reason"], result["reason"]


def test_no_starttls_still_fails_beside_the_hostile_hosts(
    audit: tuple[int, str, dict[tuple[str, str], Any]],
) -> None:
    code, _stderr, results = audit
    assert results[("dns.mx.starttls", "plain.example")]["status"] == "fail"
    assert code == 1


# ---- CNAME loops ----

LOOP_ZONE: dict[str, Any] = {
    "loop.example": [{"TXT": "v=spf1 -all"}, {"MX": [10, "mx.loop.example"]}],
    "mx.loop.example": [{"CNAME": "mx2.loop.example"}],
    "mx2.loop.example": [{"CNAME": "mx.loop.example"}],
    "_dmarc.loop.example": [{"CNAME": "_dmarc.loop.example"}],
}


def test_the_sandbox_zone_answers_a_cname_loop_without_recursing_forever() -> None:
    rcode, records = Zone.from_data(LOOP_ZONE).answer("mx.loop.example", "A")
    assert rcode == "NOERROR"
    assert records == [
        ("mx.loop.example", "CNAME", "mx2.loop.example"),
        ("mx2.loop.example", "CNAME", "mx.loop.example"),
    ]


def test_the_resolver_reports_a_served_cname_loop_as_an_error_for_that_lookup() -> None:
    async def ask() -> None:
        resolver = Resolver([dns.nameserver], timeout=1.0, retries=0)
        for name in ("mx.loop.example", "_dmarc.loop.example"):
            with pytest.raises(DnsLookupError) as caught:
                await asyncio.wait_for(resolver.query(name, "A"), HANG_GUARD)
            assert "CNAME loop" in caught.value.reason, caught.value.reason
            assert name in str(caught.value)

    with DnsSandbox(Zone.from_data(LOOP_ZONE)) as dns:
        asyncio.run(ask())


def test_sandbox_email_serves_a_cname_loop_and_the_audit_reports_it(tmp_path: Path) -> None:
    """Loops are legitimate test data: real zones have them, and the resolver must meet them
    somewhere. The sandbox serves them as an authoritative server would; the audit says
    `error` for the lookups that met the loop."""
    world = tmp_path / "world.json"
    world.write_text(
        json.dumps(
            {
                "format": "commsaudit/email-world/v1",
                "domains": ["loop.example"],
                "zone": LOOP_ZONE,
            }
        )
    )
    with email_sandbox(world, tmp_path, "timeout_seconds") as served:
        config = served.config + 'retries = 0\n[evidence]\nout = "out"\n'
        (tmp_path / "commsaudit.toml").write_text(config)
        proc = run_cli(
            "audit",
            "--config",
            tmp_path / "commsaudit.toml",
            "--profile",
            "email-posture",
            "--format",
            "json",
            cwd=tmp_path,
            timeout=HANG_GUARD * 2,
        )
    assert "Traceback" not in served.stderr, served.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    results = {r["control"]: r for r in json.loads(proc.stdout)["results"]}
    for control in ("dns.mx.starttls", "dns.dmarc.enforced"):
        assert results[control]["status"] == "error", results[control]
        assert "CNAME loop" in results[control]["reason"], results[control]["reason"]
    assert results["dns.spf.enforced"]["status"] == "pass"


def test_a_domain_naming_more_mx_hosts_than_the_cap_is_error_and_none_is_probed(
    tmp_path: Path,
) -> None:
    # A zone may list thousands of MX hosts (anyone's addresses): the audit neither looks them
    # up nor connects to them, and judges none of the MX-based controls on a part of them.
    hosts = MAX_MX_HOSTS + 8
    zone: dict[str, Any] = {
        "many.example": [{"MX": [10, f"mx{i}.many.example"]} for i in range(hosts)]
        + [{"TXT": "v=spf1 -all"}],
        "_dmarc.many.example": [{"TXT": "v=DMARC1; p=reject"}],
        **{f"mx{i}.many.example": [{"A": "127.0.0.1"}] for i in range(hosts)},
    }
    world = tmp_path / "world.json"
    world.write_text(
        json.dumps(
            {"format": "commsaudit/email-world/v1", "domains": ["many.example"], "zone": zone}
        )
    )
    with email_sandbox(world, tmp_path, "timeout_seconds") as served:
        (tmp_path / "commsaudit.toml").write_text(served.config + '[evidence]\nout = "out"\n')
        proc = run_cli(
            "audit", "--profile", "email-posture", "--format", "json", cwd=tmp_path,
            timeout=HANG_GUARD * 2,
        )  # fmt: skip
    results = {r["control"]: r for r in json.loads(proc.stdout)["results"]}
    why = f"many.example names {hosts} MX hosts, more than the {MAX_MX_HOSTS} commsaudit"
    for control in ("dns.mx.starttls", "dns.mta-sts.enforced"):
        assert results[control]["status"] == "error", results[control]
        assert why in results[control]["reason"], results[control]["reason"]
    assert results["dns.dmarc.enforced"]["status"] != "error"  # the rest is still judged
    bundle = next((tmp_path / "out").glob("*.zip"))
    smtp = [name for name in members(bundle) if name.endswith("/smtp.json")]
    assert smtp == []  # no host was probed
