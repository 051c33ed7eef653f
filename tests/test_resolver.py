"""The resolver's nameserver syntax, and DNS over TLS to a local server with its own CA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.nameserver
import pytest

from connectors.dns.resolver import DnsLookupError, Resolver, parse_nameserver
from connectors.dns.sandbox import DnsSandbox, Zone
from connectors.pki import LocalCA


@pytest.mark.parametrize(
    ("text", "kind", "address", "port"),
    [
        ("192.0.2.53", dns.nameserver.Do53Nameserver, "192.0.2.53", 53),
        ("192.0.2.53:5353", dns.nameserver.Do53Nameserver, "192.0.2.53", 5353),
        ("[2001:db8::53]:5353", dns.nameserver.Do53Nameserver, "2001:db8::53", 5353),
        ("2001:db8::53", dns.nameserver.Do53Nameserver, "2001:db8::53", 53),
        ("tls://192.0.2.53#dns.example", dns.nameserver.DoTNameserver, "192.0.2.53", 853),
        ("tls://192.0.2.53:8853", dns.nameserver.DoTNameserver, "192.0.2.53", 8853),
    ],
)
def test_nameserver_syntax(text: str, kind: type, address: str, port: int) -> None:
    server = parse_nameserver(text)
    assert isinstance(server, kind)
    assert server.address == address and server.port == port


def test_dns_over_https_takes_a_url() -> None:
    server = parse_nameserver("https://dns.example/dns-query")
    assert isinstance(server, dns.nameserver.DoHNameserver)
    assert server.url == "https://dns.example/dns-query"


@pytest.mark.parametrize("text", ["dns.example", "192.0.2.300", "192.0.2.53:port", "192.0.2.53:0"])
def test_nameservers_that_are_not_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


def test_a_bad_nameserver_stops_the_audit_before_any_query(tmp_path: Path) -> None:
    from helpers import run_cli

    (tmp_path / "commsaudit.toml").write_text('[dns]\nnameservers = ["dns.example"]\n')
    proc = run_cli(
        "audit", "--config", tmp_path / "commsaudit.toml", "--domain", "x.example", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "[dns] nameservers: 'dns.example' is not a nameserver" in proc.stderr


def test_dns_over_tls_verifies_the_server_certificate(tmp_path: Path) -> None:
    ca = LocalCA()
    issued = ca.issue(["dns.sandbox.test"])
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    zone = Zone.from_data({"example.test": [{"TXT": "over tls"}]})
    with DnsSandbox(zone, tls=issued.server_context()) as server:
        assert server.tls_port is not None
        target = f"tls://127.0.0.1:{server.tls_port}#dns.sandbox.test"

        async def ask(ca_bundle: str | None, name: str = target) -> list[str]:
            resolver = Resolver([name], timeout=2.0, retries=0, ca_bundle=ca_bundle)
            return list((await resolver.query("example.test", "TXT")).records)

        assert asyncio.run(ask(str(tmp_path / "ca.pem"))) == ["over tls"]
        # Without the CA, or for a name the certificate does not carry, nothing is answered.
        with pytest.raises(DnsLookupError):
            asyncio.run(ask(None))
        wrong = f"tls://127.0.0.1:{server.tls_port}#other.test"
        with pytest.raises(DnsLookupError):
            asyncio.run(ask(str(tmp_path / "ca.pem"), wrong))
