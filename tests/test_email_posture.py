"""`commsaudit audit --domain …` against a DNS server, MTA-STS hosts and SMTP servers on
127.0.0.1: every planted problem gets the expected verdict."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.dns.sandbox import DnsSandbox, HttpsSandbox, MailHost, SmtpSandbox, WebHost, Zone
from connectors.pki import LocalCA

from helpers import email_sandbox, run_cli

POLICY = "version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 604800\n"


def _domain(
    name: str,
    address: str,
    *,
    spf: str = "v=spf1 mx -all",
    dmarc: str | None = None,
    sts: str | None = "enforce",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    mx = f"mx.{name}"
    zone: dict[str, Any] = {
        name: [{"TXT": spf}, {"MX": [10, mx]}],
        mx: [{"A": address}],
        f"_dmarc.{name}": [{"TXT": dmarc or f"v=DMARC1; p=reject; rua=mailto:dmarc@{name}"}],
        f"_smtp._tls.{name}": [{"TXT": f"v=TLSRPTv1; rua=mailto:tls@{name}"}],
    }
    if sts:
        zone[f"_mta-sts.{name}"] = [{"TXT": "v=STSv1; id=1"}]
        zone[f"mta-sts.{name}"] = [{"A": "127.0.0.1"}]
    zone.update(extra or {})
    return zone


ZONE: dict[str, Any] = {}
WEB: dict[str, WebHost] = {}
MAIL: dict[str, MailHost] = {}
PLANTED: dict[str, tuple[str, str]] = {}  # domain -> (control that must fail, why)


def plant(
    name: str,
    address: str,
    fails: tuple[str, str] | None,
    *,
    mode: str = "enforce",
    mx_pattern: str | None = None,
    mail: MailHost | None = None,
    **kwargs: Any,
) -> None:
    ZONE.update(_domain(name, address, **kwargs))
    WEB[f"mta-sts.{name}"] = WebHost(
        POLICY.format(mode=mode, mx=mx_pattern or f"mx.{name}").encode()
    )
    MAIL[address] = mail or MailHost(f"mx.{name}")
    if fails:
        PLANTED[name] = fails


plant("clean.example", "127.0.0.11", None)
plant(
    "overlimit.example",
    "127.0.0.12",
    ("dns.spf.enforced", "lookup-limit"),
    spf="v=spf1 " + " ".join(f"include:inc{i}.overlimit.example" for i in range(11)) + " -all",
    extra={f"inc{i}.overlimit.example": [{"TXT": "v=spf1 ip4:192.0.2.1 -all"}] for i in range(11)},
)
plant(
    "twospf.example",
    "127.0.0.13",
    ("dns.spf.enforced", "multiple-records"),
    extra={
        "twospf.example": [
            {"TXT": "v=spf1 mx -all"},
            {"TXT": "v=spf1 -all"},
            {"MX": [10, "mx.twospf.example"]},
        ]
    },
)
plant("plusall.example", "127.0.0.14", ("dns.spf.enforced", "+all"), spf="v=spf1 mx +all")
plant(
    "void.example",
    "127.0.0.15",
    ("dns.spf.enforced", "void-limit"),
    spf="v=spf1 a:gone1.void.example a:gone2.void.example a:gone3.void.example -all",
)
plant(
    "pnone.example",
    "127.0.0.16",
    ("dns.dmarc.enforced", "p=none"),
    dmarc="v=DMARC1; p=none; rua=mailto:d@pnone.example",
)
plant(
    "foreignrua.example",
    "127.0.0.17",
    ("dns.dmarc.enforced", "unauthorised rua"),
    dmarc="v=DMARC1; p=reject; rua=mailto:reports@collector.example",
)
plant("ststesting.example", "127.0.0.18", ("dns.mta-sts.enforced", "testing"), mode="testing")
plant(
    "stsuncovered.example",
    "127.0.0.19",
    ("dns.mta-sts.enforced", "MX not covered"),
    mx_pattern="mx.elsewhere.example",
)
plant(
    "expired.example",
    "127.0.0.20",
    ("dns.mx.starttls", "expired certificate"),
    mail=MailHost("mx.expired.example", certificate="expired"),
)
plant(
    "mismatch.example",
    "127.0.0.21",
    ("dns.mx.starttls", "certificate for another name"),
    mail=MailHost("mx.mismatch.example", certificate="wrong-name"),
)
plant(
    "plain.example",
    "127.0.0.22",
    ("dns.mx.starttls", "no STARTTLS"),
    mail=MailHost("mx.plain.example", starttls=False),
)
plant(
    "bulk.example",
    "127.0.0.23",
    ("dns.senders.baa-covered", "bulk mailer without a BAA"),
    spf="v=spf1 mx include:servers.mcsv.net -all",
    extra={"servers.mcsv.net": [{"TXT": "v=spf1 ip4:205.201.128.0/20 -all"}]},
)
ZONE["servfail.example"] = ["SERVFAIL"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ca = LocalCA()
    work = tmp_path_factory.mktemp("posture")
    (work / "ca.pem").write_bytes(ca.pem)
    with (
        DnsSandbox(Zone.from_data(ZONE)) as dns,
        HttpsSandbox(ca, WEB) as web,
        SmtpSandbox(ca, MAIL) as smtp,
    ):
        (work / "commsaudit.toml").write_text(
            f'[dns]\nnameservers = ["{dns.nameserver}"]\nhttps_port = {web.port}\nsmtp_port = {smtp.port}\n'
            'ca_bundle = "ca.pem"\ntimeout_seconds = 1.0\nretries = 0\n[evidence]\nout = "out"\n'
        )
        yield work


@pytest.fixture(scope="module")
def results(world: Path) -> dict[tuple[str, str], dict[str, Any]]:
    domains = [*PLANTED, "clean.example", "servfail.example"]
    args = [a for d in domains for a in ("--domain", d)]
    proc = run_cli(
        "audit",
        "--config",
        world / "commsaudit.toml",
        *args,
        "--profile",
        "email-posture",
        "--format",
        "json",
        cwd=world,
    )
    assert proc.returncode == 1, proc.stderr
    return {(r["control"], r["subject"]): r for r in json.loads(proc.stdout)["results"]}


@pytest.mark.parametrize("domain", sorted(PLANTED))
def test_each_planted_problem_fails_its_control(
    results: dict[tuple[str, str], dict[str, Any]], domain: str
) -> None:
    control, why = PLANTED[domain]
    result = results[(control, domain)]
    assert result["status"] == "fail", (domain, why, result["reason"])


def test_each_planted_problem_fails_nothing_else(
    results: dict[tuple[str, str], dict[str, Any]],
) -> None:
    advisory = {"dns.dnssec-dane"}  # the test zone is unsigned: advisory for every domain
    for (control, domain), result in results.items():
        if domain in PLANTED and control != PLANTED[domain][0] and control not in advisory:
            assert result["status"] in ("pass", "not_applicable"), (
                control,
                domain,
                result["reason"],
            )


def test_the_clean_domain_passes(results: dict[tuple[str, str], dict[str, Any]]) -> None:
    clean = {c: r["status"] for (c, d), r in results.items() if d == "clean.example"}
    assert clean.pop("dns.dnssec-dane") == "fail"
    assert clean.pop("dns.dkim.published") == "not_applicable"  # no selector known
    assert clean.pop("dns.senders.baa-covered") == "not_applicable"
    assert set(clean.values()) == {"pass"}, clean


def test_servfail_is_error_never_a_verdict(results: dict[tuple[str, str], dict[str, Any]]) -> None:
    statuses = {c: r for (c, d), r in results.items() if d == "servfail.example"}
    for control in (
        "dns.spf.enforced",
        "dns.dmarc.enforced",
        "dns.tls-rpt.configured",
        "dns.mx.starttls",
    ):
        assert statuses[control]["status"] == "error", control
        assert "SERVFAIL" in statuses[control]["reason"]


def test_evidence_points_at_the_offending_values(
    results: dict[tuple[str, str], dict[str, Any]],
) -> None:
    def evidence(control: str, domain: str) -> dict[tuple[str, str], Any]:
        return {
            (e["section"], e["pointer"]): e["value"] for e in results[(control, domain)]["evidence"]
        }

    assert evidence("dns.spf.enforced", "plusall.example")[("dns.spf", "/all")] == "+all"
    assert evidence("dns.dmarc.enforced", "pnone.example")[("dns.dmarc", "/p")] == "none"
    assert (
        evidence("dns.mta-sts.enforced", "ststesting.example")[("dns.mta_sts", "/mode")]
        == "testing"
    )
    assert evidence("dns.mta-sts.enforced", "stsuncovered.example")[
        ("dns.mta_sts", "/uncovered_mx")
    ] == ["mx.stsuncovered.example"]
    assert (
        evidence("dns.mx.starttls", "plain.example")[("dns.starttls", "/hosts/0/starttls")] is False
    )
    assert (
        evidence("dns.senders.baa-covered", "bulk.example")[
            ("dns.vendor_agreements", "/vendors/0/covered")
        ]
        is False
    )
    overlimit = results[("dns.spf.enforced", "overlimit.example")]
    assert "status" in overlimit["evidence"][0]["pointer"]


def test_no_smtp_probe_makes_starttls_not_applicable(world: Path) -> None:
    proc = run_cli(
        "audit",
        "--config",
        world / "commsaudit.toml",
        "--domain",
        "clean.example",
        "--no-smtp-probe",
        "--profile",
        "email-posture",
        "--controls",
        "dns.mx.starttls",
        "--format",
        "json",
        cwd=world,
    )
    result = json.loads(proc.stdout)["results"][0]
    assert result["status"] == "not_applicable" and "SMTP probe is turned off" in result["reason"]


def test_sandbox_email_serves_a_world_that_an_audit_reads(tmp_path: Path) -> None:
    """`commsaudit sandbox email FILE` prints a [dns] section; pasted into a config, it audits
    the demo's two mail domains with the stories they were written to tell."""
    from auditor.resources import demo_dir

    world = demo_dir() / "contoso-health" / "email-world.json"
    with email_sandbox(world, tmp_path, "trust_anchors") as served:
        assert (tmp_path / "sandbox-ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
        (tmp_path / "commsaudit.toml").write_text(served.config + '[evidence]\nout = "out"\n')
        proc = run_cli(
            "audit",
            "--config",
            tmp_path / "commsaudit.toml",
            "--domain",
            "contoso-health.org",
            "--profile",
            "email-posture",
            "--format",
            "json",
            cwd=tmp_path,
        )
    assert served.returncode == 0
    results = {
        (r["control"], r["subject"]): r["status"] for r in json.loads(proc.stdout)["results"]
    }
    news, clean = "contoso-health-news.org", "contoso-health.org"
    assert results[("dns.dmarc.enforced", news)] == "fail"
    assert results[("dns.mta-sts.enforced", news)] == "fail"
    assert results[("dns.dmarc.enforced", clean)] == "pass"
    assert results[("dns.mta-sts.enforced", clean)] == "pass"
    assert results[("dns.mx.starttls", clean)] == "pass"


def test_sandbox_email_refuses_a_file_that_is_not_a_world(tmp_path: Path) -> None:
    (tmp_path / "world.json").write_text('{"format": "something/else"}')
    proc = run_cli("sandbox", "email", tmp_path / "world.json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not an email world" in proc.stderr
