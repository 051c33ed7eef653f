"""The STARTTLS probe against SMTP servers on 127.0.0.x with certificates from a local CA."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.dns import starttls
from connectors.dns.sandbox import MailHost, SmtpSandbox
from connectors.pki import LocalCA

HOSTS = {
    "127.0.0.2": MailHost("mx1.good.example"),
    "127.0.0.3": MailHost("mx.plain.example", starttls=False),
    "127.0.0.4": MailHost("mx.expired.example", certificate="expired"),
    "127.0.0.5": MailHost("mx.wrong.example", certificate="wrong-name"),
    "127.0.0.6": MailHost("mx.soon.example", certificate="expiring"),
}


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmtpSandbox, str]]:
    ca = LocalCA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    bundle.write_bytes(ca.pem)
    with SmtpSandbox(ca, HOSTS) as server:
        yield server, str(bundle)


def _probe(smtp: tuple[SmtpSandbox, str], address: str) -> starttls.Probe:
    server, bundle = smtp
    return asyncio.run(
        starttls.probe(
            HOSTS[address].name, [address], port=server.port, ca_bundle=bundle, timeout=5
        )
    )


def test_good_host(smtp: tuple[SmtpSandbox, str]) -> None:
    result = _probe(smtp, "127.0.0.2")
    assert (result.status, result.starttls, result.verified, result.name_matches) == (
        "ok",
        True,
        True,
        True,
    )
    assert result.modern_tls and result.certificate and result.certificate.days_left >= 88
    assert result.banner and "ESMTP" in result.banner


def test_no_starttls(smtp: tuple[SmtpSandbox, str]) -> None:
    result = _probe(smtp, "127.0.0.3")
    assert (result.status, result.starttls, result.tls_version) == ("no-starttls", False, None)


def test_expired_certificate_is_reported_with_what_was_presented(
    smtp: tuple[SmtpSandbox, str],
) -> None:
    result = _probe(smtp, "127.0.0.4")
    assert not result.verified and "expired" in (result.verify_error or "")
    assert result.certificate is not None and result.certificate.days_left < 0


def test_mismatched_name(smtp: tuple[SmtpSandbox, str]) -> None:
    result = _probe(smtp, "127.0.0.5")
    assert not result.verified and not result.name_matches
    assert "mismatch" in (result.verify_error or "").lower()


def test_expiring_soon_still_verifies_but_shows_the_days(smtp: tuple[SmtpSandbox, str]) -> None:
    result = _probe(smtp, "127.0.0.6")
    assert result.verified and result.certificate is not None and result.certificate.days_left <= 5


def test_unreachable_host(tmp_path: Path) -> None:
    result = asyncio.run(starttls.probe("mx.gone.example", ["127.0.0.9"], port=1, timeout=2))
    assert result.status == "unreachable" and result.error


def test_certificate_names() -> None:
    assert starttls.names_match("mx1.example.com", ["*.example.com"])
    assert not starttls.names_match("a.mx1.example.com", ["*.example.com"])
    assert starttls.names_match("MX1.example.com.", ["mx1.example.com"])
