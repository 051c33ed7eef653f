"""DMARC, TLS-RPT, MTA-STS and DKIM checks against a DNS server and HTTPS policy hosts on
127.0.0.1 (certificates from a local CA)."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.dns import dkim, dmarc, mta_sts, tlsrpt
from connectors.dns.resolver import Resolver
from connectors.dns.sandbox import DnsSandbox, HttpsSandbox, WebHost, Zone
from connectors.pki import LocalCA


def _rsa_key(bits: int) -> str:
    if bits >= 1024:
        public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    else:  # too weak for cryptography to generate; a published key only needs its modulus
        public = rsa.RSAPublicNumbers(
            65537, (1 << (bits - 1)) | secrets.randbits(bits - 1) | 1
        ).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


KEY_2048 = _rsa_key(2048)
KEY_1024 = _rsa_key(1024)
KEY_512 = _rsa_key(512)
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.good.example\r\nmx: *.mail.good.example\r\nmax_age: 604800\r\n"

ZONE: dict[str, Any] = {
    "_dmarc.good.example": [
        {
            "TXT": "v=DMARC1; p=reject; rua=mailto:dmarc@good.example,mailto:r@reports.example; ruf=mailto:f@good.example"
        }
    ],
    "good.example._report._dmarc.reports.example": [{"TXT": "v=DMARC1"}],
    "_dmarc.none.example": [{"TXT": "v=DMARC1; p=none; rua=mailto:d@none.example"}],
    "_dmarc.leak.example": [
        {"TXT": "v=DMARC1; p=quarantine; pct=50; t=y; rua=mailto:x@collector.example"}
    ],
    "_dmarc.double.example": [{"TXT": "v=DMARC1; p=reject"}, {"TXT": "v=DMARC1; p=none"}],
    "_dmarc.bad.example": [{"TXT": "v=DMARC1; p=block"}],
    "_dmarc.org.example": [{"TXT": "v=DMARC1; p=reject; sp=quarantine; np=reject"}],
    "deep.sub.org.example": [{"A": "192.0.2.1"}],
    # A subdomain reporting to its organisation's own domain needs no authorisation...
    "_dmarc.news.org.example": [{"TXT": "v=DMARC1; p=reject; rua=mailto:d@org.example"}],
    # ...unless a psd=y record says the parent is a public suffix (each child its own org).
    "_dmarc.psd.example": [{"TXT": "v=DMARC1; p=reject; psd=y"}],
    "_dmarc.a.psd.example": [{"TXT": "v=DMARC1; p=reject; rua=mailto:d@b.psd.example"}],
    "_dmarc.b.psd.example": [{"TXT": "v=DMARC1; p=reject"}],
    "_smtp._tls.good.example": [
        {"TXT": "v=TLSRPTv1; rua=mailto:tls@good.example,https://reports.good.example/tls"}
    ],
    "_smtp._tls.bad.example": [{"TXT": "v=TLSRPTv1; rua=ftp://x.example/"}],
    "_mta-sts.good.example": [{"TXT": "v=STSv1; id=20261101T000000"}],
    "mta-sts.good.example": [{"A": "127.0.0.1"}],
    "_mta-sts.testing.example": [{"TXT": "v=STSv1; id=1"}],
    "mta-sts.testing.example": [{"A": "127.0.0.1"}],
    "_mta-sts.redirect.example": [{"TXT": "v=STSv1; id=1"}],
    "mta-sts.redirect.example": [{"A": "127.0.0.1"}],
    "_mta-sts.expired.example": [{"TXT": "v=STSv1; id=1"}],
    "mta-sts.expired.example": [{"A": "127.0.0.1"}],
    "_mta-sts.html.example": [{"TXT": "v=STSv1; id=1"}],
    "mta-sts.html.example": [{"A": "127.0.0.1"}],
    "selector1._domainkey.good.example": [
        {"CNAME": "selector1-good-example._domainkey.tenant.onmicrosoft.example"}
    ],
    "selector1-good-example._domainkey.tenant.onmicrosoft.example": [
        {"TXT": f"v=DKIM1; k=rsa; p={KEY_2048}"}
    ],
    "s1024._domainkey.good.example": [{"TXT": f"v=DKIM1; p={KEY_1024}"}],
    "weak._domainkey.good.example": [{"TXT": f"v=DKIM1; p={KEY_512}"}],
    "revoked._domainkey.good.example": [{"TXT": "v=DKIM1; p="}],
    "broken._domainkey.good.example": ["SERVFAIL"],
}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DnsSandbox, HttpsSandbox, str]]:
    ca = LocalCA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    bundle.write_bytes(ca.pem)
    hosts = {
        "mta-sts.good.example": WebHost(POLICY),
        "mta-sts.testing.example": WebHost(POLICY.replace(b"enforce", b"testing")),
        "mta-sts.redirect.example": WebHost(status=301, location="https://elsewhere.example/"),
        "mta-sts.expired.example": WebHost(POLICY, certificate="expired"),
        "mta-sts.html.example": WebHost(b"<html>", content_type="text/html"),
    }
    with DnsSandbox(Zone.from_data(ZONE)) as dns, HttpsSandbox(ca, hosts) as web:
        yield dns, web, str(bundle)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _resolver(dns: DnsSandbox) -> Resolver:
    return Resolver([dns.nameserver], timeout=2.0, retries=0)


def test_dmarc_reject_with_an_authorised_external_destination(servers: Any) -> None:
    dns, _web, _ca = servers
    result = _run(dmarc.analyse("good.example", _resolver(dns))).to_json()
    assert (result["status"], result["p"], result["sp"], result["np"]) == (
        "valid",
        "reject",
        "reject",
        "reject",
    )
    assert result["unauthorised_destinations"] == []
    external = [d for d in result["rua"] if d["external"]]
    assert external == [
        {
            "uri": "mailto:r@reports.example",
            "domain": "reports.example",
            "external": True,
            "authorised": True,
        }
    ]


def test_dmarc_weaknesses_are_facts(servers: Any) -> None:
    dns, _web, _ca = servers
    result = _run(dmarc.analyse("leak.example", _resolver(dns))).to_json()
    assert (result["p"], result["pct"], result["testing"]) == ("quarantine", 50, True)
    assert result["unauthorised_destinations"] == ["mailto:x@collector.example"]
    assert _run(dmarc.analyse("none.example", _resolver(dns))).to_json()["p"] == "none"


@pytest.mark.parametrize(
    ("domain", "status"),
    [("double.example", "invalid"), ("bad.example", "invalid"), ("nothing.example", "none")],
)
def test_dmarc_invalid_or_missing(servers: Any, domain: str, status: str) -> None:
    dns, _web, _ca = servers
    assert _run(dmarc.analyse(domain, _resolver(dns))).status == status


def test_dmarc_tree_walk_finds_the_organisational_record(servers: Any) -> None:
    dns, _web, _ca = servers
    result = _run(dmarc.analyse("deep.sub.org.example", _resolver(dns))).to_json()
    assert (result["found_at"], result["inherited"], result["p"]) == ("org.example", True, "reject")
    assert result["queried"] == [
        "_dmarc.deep.sub.org.example",
        "_dmarc.sub.org.example",
        "_dmarc.org.example",
    ]
    assert dmarc.walk_names("a.b.c.d.e.f.g.h.i.example")[1] == "d.e.f.g.h.i.example"


def test_report_destinations_inside_the_organisational_domain_need_no_authorisation(
    servers: Any,
) -> None:
    dns, _web, _ca = servers
    news = _run(dmarc.analyse("news.org.example", _resolver(dns))).to_json()
    assert news["organisational_domain"] == "org.example"
    assert news["rua"][0]["external"] is False and news["unauthorised_destinations"] == []
    sibling = _run(dmarc.analyse("a.psd.example", _resolver(dns))).to_json()
    assert sibling["organisational_domain"] == "a.psd.example"
    assert sibling["unauthorised_destinations"] == ["mailto:d@b.psd.example"]


def test_tlsrpt(servers: Any) -> None:
    dns, _web, _ca = servers
    good = _run(tlsrpt.analyse("good.example", _resolver(dns)))
    assert good.status == "valid" and len(good.rua) == 2
    assert _run(tlsrpt.analyse("bad.example", _resolver(dns))).status == "invalid"
    assert _run(tlsrpt.analyse("nothing.example", _resolver(dns))).status == "none"


def _sts(servers: Any, domain: str, mx: list[str]) -> dict[str, Any]:
    dns, web, ca = servers
    fetch = mta_sts.Fetch(port=web.port, ca_bundle=ca)
    return _run(mta_sts.analyse(domain, _resolver(dns), mx, fetch)).to_json()


def test_mta_sts_enforced_and_covering_every_mx(servers: Any) -> None:
    result = _sts(servers, "good.example", ["mx1.good.example", "a.mail.good.example"])
    assert (result["status"], result["mode"], result["max_age"]) == ("valid", "enforce", 604800)
    assert result["uncovered_mx"] == []


def test_mta_sts_uncovered_mx_and_testing_mode(servers: Any) -> None:
    result = _sts(
        servers, "good.example", ["mx1.good.example", "a.b.mail.good.example", "mx2.other.example"]
    )
    assert result["uncovered_mx"] == [
        "a.b.mail.good.example",
        "mx2.other.example",
    ]  # a wildcard covers one label
    assert _sts(servers, "testing.example", ["mx1.good.example"])["mode"] == "testing"


@pytest.mark.parametrize(
    ("domain", "problem"),
    [
        ("redirect.example", "answered 301"),
        ("expired.example", "CERTIFICATE_VERIFY_FAILED"),
        ("html.example", "not text/plain"),
    ],
)
def test_mta_sts_policy_fetch_rules(servers: Any, domain: str, problem: str) -> None:
    result = _sts(servers, domain, [])
    assert result["status"] == "invalid"
    assert any(problem in p for p in result["problems"]), result["problems"]


def test_mx_patterns() -> None:
    assert mta_sts.mx_matches("*.example.com", "mx.example.com")
    assert not mta_sts.mx_matches("*.example.com", "a.mx.example.com")
    assert not mta_sts.mx_matches("*.example.com", "example.com")
    assert mta_sts.mx_matches("MX.Example.com.", "mx.example.com")


@pytest.mark.parametrize(
    ("selector", "status", "bits"),
    [
        ("selector1", "valid", 2048),
        ("s1024", "valid", 1024),
        ("weak", "valid", 512),
        ("revoked", "invalid", None),
        ("absent", "missing", None),
    ],
)
def test_dkim_selectors(servers: Any, selector: str, status: str, bits: int | None) -> None:
    dns, _web, _ca = servers
    found = _run(dkim.check_selector("good.example", selector, "config", _resolver(dns)))
    assert (found.status, found.key_bits) == (status, bits)
    if selector == "selector1":
        assert found.cname_chain  # followed through the CNAME into the provider's zone


def test_dkim_lookup_failure_is_an_error(servers: Any) -> None:
    dns, _web, _ca = servers
    found = _run(dkim.check_selector("good.example", "broken", "config", _resolver(dns)))
    assert found.status == "error" and "SERVFAIL" in (found.error or "")
