"""DNSSEC validated here, not taken on a resolver's word: signed zones served on 127.0.0.1,
each way a chain of trust can break, and DANE TLSA records checked against the certificate
an SMTP server really presents."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from connectors.dns.dnssec import ROOT_ANCHORS, TrustAnchorError, Validator, Verdict, parse_anchors
from connectors.dns.resolver import Resolver
from connectors.dns.sandbox import DnsSandbox, HttpsSandbox, MailHost, SmtpSandbox, WebHost, Zone
from connectors.pki import LocalCA

from helpers import run_cli

CHAIN: dict[str, Any] = {
    "example": ["DNSSEC"],
    "good.example": ["DNSSEC", {"MX": [10, "mx.good.example"]}],
    "mx.good.example": [{"A": "127.0.0.41"}],
    "deep.sub.good.example": [{"TXT": "inside good.example's zone"}],
    "expired.example": [{"DNSSEC": "expired"}, {"MX": [10, "mx.good.example"]}],
    "wrongds.example": [{"DNSSEC": "wrong-ds"}, {"MX": [10, "mx.good.example"]}],
    "island.example": [{"DNSSEC": "no-ds"}, {"MX": [10, "mx.good.example"]}],
    "unsigned.example": [{"DNSSEC": "unsigned"}, {"MX": [10, "mx.good.example"]}],
    "below.unsigned.example": [{"MX": [10, "mx.good.example"]}],
    "elsewhere.test": [{"MX": [10, "mx.good.example"]}],
}


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Zone, str]]:
    zone = Zone.from_data(CHAIN)
    with DnsSandbox(zone) as server:
        yield zone, server.nameserver


def _validate(nameserver: str, anchors: list[str], name: str, rdtype: str = "MX") -> Verdict:
    async def run() -> Verdict:
        validator = Validator(Resolver([nameserver], timeout=2.0, retries=0), anchors)
        return await validator.validate(name, rdtype)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("name", "rdtype", "status", "reason"),
    [
        ("good.example", "MX", "secure", "validates from example."),
        ("deep.sub.good.example", "TXT", "secure", "validates"),
        ("expired.example", "MX", "bogus", "signatures expired on"),
        ("wrongds.example", "MX", "bogus", "no DNSKEY of wrongds.example. matches its DS"),
        ("island.example", "MX", "insecure", "publishes no DS"),
        ("unsigned.example", "MX", "insecure", "carries no signature"),
        ("below.unsigned.example", "MX", "insecure", "closest signed zone above it is example."),
        ("elsewhere.test", "MX", "indeterminate", "no trust anchor covers"),
        ("absent.good.example", "MX", "indeterminate", "no MX records"),
    ],
)
def test_each_break_in_the_chain_of_trust_gets_its_verdict(
    chain: tuple[Zone, str], name: str, rdtype: str, status: str, reason: str
) -> None:
    zone, nameserver = chain
    verdict = _validate(nameserver, zone.trust_anchors(), name, rdtype)
    assert verdict.status == status, verdict
    assert reason in verdict.reason, verdict


def test_a_secure_verdict_names_the_chain_it_followed(chain: tuple[Zone, str]) -> None:
    zone, nameserver = chain
    verdict = _validate(nameserver, zone.trust_anchors(), "good.example")
    assert verdict.chain == ("example.", "good.example.")


def test_the_root_anchors_do_not_vouch_for_a_made_up_root(chain: tuple[Zone, str]) -> None:
    """With the real root's keys as anchors, a zone signed by some other key is bogus."""
    signed_root = Zone.from_data({".": ["DNSSEC"], "x.test": [{"TXT": "hello"}]})
    with DnsSandbox(signed_root) as server:
        verdict = _validate(server.nameserver, list(ROOT_ANCHORS), "x.test", "TXT")
    assert verdict.status == "bogus"
    assert "key tags [20326, 38696]" in verdict.reason


def test_trust_anchors_are_checked_when_read() -> None:
    assert list(parse_anchors(list(ROOT_ANCHORS))) == [__import__("dns.name").name.from_text(".")]
    with pytest.raises(TrustAnchorError, match="is not a DS record"):
        parse_anchors(["example. DNSKEY 257 3 13 AAAA"])
    with pytest.raises(TrustAnchorError, match="trust anchor"):
        parse_anchors(["example. DS 1 13 2 not-hex"])


# DANE through the whole command: TLSA records published for the certificates the SMTP
# servers really present.
DANE_DOMAINS = {
    # domain: (address, TLSA of the right key?, zone signed?, expected dns.dnssec-dane)
    "dane.example": ("127.0.0.42", True, True, "pass"),
    "wrongtlsa.example": ("127.0.0.43", False, True, "fail"),
    "unsignedtlsa.example": ("127.0.0.44", True, False, "fail"),
}


def _spki_sha256(certificate: Any) -> str:
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.fixture(scope="module")
def dane_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    ca = LocalCA()
    work = tmp_path_factory.mktemp("dane")
    (work / "ca.pem").write_bytes(ca.pem)
    mail = {address: MailHost(f"mx.{d}") for d, (address, *_) in DANE_DOMAINS.items()}
    web = {
        f"mta-sts.{d}": WebHost(
            f"version: STSv1\nmode: enforce\nmx: mx.{d}\nmax_age: 86400\n".encode()
        )
        for d in DANE_DOMAINS
    }
    data: dict[str, Any] = {"example": ["DNSSEC"]}
    with SmtpSandbox(ca, mail) as smtp, HttpsSandbox(ca, web) as https:
        for domain, (address, right_key, signed, _) in DANE_DOMAINS.items():
            certificate = smtp.certificates[f"mx.{domain}"]
            digest = _spki_sha256(certificate if right_key else LocalCA().certificate)
            data[domain] = [
                "DNSSEC" if signed else {"DNSSEC": "unsigned"},
                {"TXT": "v=spf1 mx -all"},
                {"MX": [10, f"mx.{domain}"]},
            ]
            data[f"mx.{domain}"] = [{"A": address}]
            data[f"_25._tcp.mx.{domain}"] = [{"TLSA": [3, 1, 1, digest]}]
        zone = Zone.from_data(data)
        with DnsSandbox(zone) as dns:
            anchors = json.dumps(zone.trust_anchors())
            (work / "commsaudit.toml").write_text(
                f'[dns]\nnameservers = ["{dns.nameserver}"]\nhttps_port = {https.port}\n'
                f'smtp_port = {smtp.port}\nca_bundle = "ca.pem"\ntimeout_seconds = 1.0\n'
                f'trust_anchors = {anchors}\n[evidence]\nout = "out"\n'
            )
            args = [a for d in DANE_DOMAINS for a in ("--domain", d)]
            proc = run_cli(
                "audit",
                "--config",
                work / "commsaudit.toml",
                *args,
                "--profile",
                "email-posture",
                "--format",
                "json",
                cwd=work,
            )
    assert proc.returncode in (0, 1), proc.stderr
    return {
        r["subject"]: r
        for r in json.loads(proc.stdout)["results"]
        if r["control"] == "dns.dnssec-dane"
    }


@pytest.mark.parametrize("domain", sorted(DANE_DOMAINS))
def test_dane_verdicts_follow_the_certificate_and_the_signatures(
    dane_results: dict[str, dict[str, Any]], domain: str
) -> None:
    expected = DANE_DOMAINS[domain][3]
    assert dane_results[domain]["status"] == expected, dane_results[domain]["reason"]


def test_dane_evidence_says_what_broke(dane_results: dict[str, dict[str, Any]]) -> None:
    def evidence(domain: str) -> dict[str, Any]:
        return {e["pointer"]: e for e in dane_results[domain]["evidence"]}

    good = {e["pointer"]: e["value"] for e in dane_results["dane.example"]["evidence"]}
    assert good["/validated"] is True
    assert good["/mx"][0]["tlsa_dnssec"] == "secure" and good["/mx"][0]["matches"] is True
    wrong = evidence("wrongtlsa.example")
    assert set(wrong) == {"/mx/0/matches"}
    assert wrong["/mx/0/matches"]["value"] is False
    assert wrong["/mx/0/matches"]["context"]["host"] == "mx.wrongtlsa.example"
    unsigned = evidence("unsignedtlsa.example")
    assert unsigned["/dnssec/status"]["value"] == "insecure"
    assert "carries no signature" in unsigned["/dnssec/status"]["context"]["reason"]
    tlsa = unsigned["/mx/0/tlsa_dnssec"]
    assert tlsa["value"] == "insecure"
    assert tlsa["context"]["matches"] is True  # matching, but unusable without DNSSEC


def test_resolver_mode_trusts_only_the_ad_flag(tmp_path: Path, chain: tuple[Zone, str]) -> None:
    """`dnssec_validation = "resolver"`: an authoritative server sets no AD flag, so even a
    signed zone is reported insecure, and the evidence says why."""
    _, nameserver = chain
    (tmp_path / "commsaudit.toml").write_text(
        f'[dns]\nnameservers = ["{nameserver}"]\ndnssec_validation = "resolver"\n'
        'smtp_probe = false\ntimeout_seconds = 1.0\nretries = 0\n[evidence]\nout = "out"\n'
    )
    proc = run_cli(
        "audit",
        "--config",
        tmp_path / "commsaudit.toml",
        "--domain",
        "good.example",
        "--profile",
        "email-posture",
        "--format",
        "json",
        cwd=tmp_path,
    )
    result = next(
        r for r in json.loads(proc.stdout)["results"] if r["control"] == "dns.dnssec-dane"
    )
    assert result["status"] == "fail"
    evidence = {e["pointer"]: e for e in result["evidence"]}
    assert "did not set the AD flag" in evidence["/dnssec/status"]["context"]["reason"]


def test_a_malformed_trust_anchor_stops_the_audit_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "commsaudit.toml").write_text(
        '[dns]\ntrust_anchors = ["example. DNSKEY 257 3 13 AAAA"]\n[evidence]\nout = "out"\n'
    )
    proc = run_cli(
        "audit", "--config", tmp_path / "commsaudit.toml", "--domain", "x.example", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "[dns] trust_anchors" in proc.stderr and "is not a DS record" in proc.stderr
