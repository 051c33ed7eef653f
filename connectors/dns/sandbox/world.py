"""An email world: zones, MTA-STS policy hosts and SMTP servers described in one JSON file
(format `commsaudit/email-world/v1`), served together on 127.0.0.x. The demo's mail domains are
one (`fixtures/demo/<organisation>/email-world.json`); `commsaudit sandbox email FILE` serves any.

    {"format": "commsaudit/email-world/v1",
     "domains": ["example.org"],                      # the domains an audit of it should read
     "zone": {"example.org": [{"MX": [10, "mx.example.org"]}, ...], ...},   # see zone.py
     "web": {"mta-sts.example.org": {"body": "version: STSv1\\n...", "certificate": "valid"}},
     "mail": {"127.0.0.31": {"name": "mx.example.org", "starttls": true}}}

A mail host may also misbehave on purpose ("behaviour": "silent", "drip", "endless-banner",
"endless-ehlo", "garbage" or "long-line"; see smtp_server.py), and the zone may hold CNAME loops:
both are served as given, since what a resolver or a probe does with them is what is tested.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.dns.sandbox.dns_server import DnsSandbox
from connectors.dns.sandbox.https_server import HttpsSandbox, WebHost
from connectors.dns.sandbox.smtp_server import MailHost, SmtpSandbox
from connectors.dns.sandbox.zone import Zone
from connectors.pki import LocalCA

FORMATS = ("commsaudit/email-world/v1",)


class WorldError(ValueError):
    pass


@dataclass
class EmailWorld:
    """A running email world: its servers, the CA their certificates chain to, its domains."""

    dns: DnsSandbox
    web: HttpsSandbox
    smtp: SmtpSandbox
    ca_pem: bytes
    domains: list[str]

    def config_toml(self, ca_path: Path) -> str:
        """The `[dns]` section that points an audit at this world (its CA saved at ca_path)."""
        domains = ", ".join(json.dumps(d) for d in self.domains)
        anchors = self.dns.zone.trust_anchors()
        lines = [
            "[dns]",
            f"domains = [{domains}]",
            f"nameservers = [{json.dumps(self.dns.nameserver)}]",
            f"https_port = {self.web.port}",
            f"smtp_port = {self.smtp.port}",
            f"ca_bundle = {json.dumps(str(ca_path))}",
            "timeout_seconds = 2.0",
        ]
        if anchors:
            # Signed zones here chain up to their own keys, not the real root's.
            lines.append(f"trust_anchors = [{', '.join(json.dumps(a) for a in anchors)}]")
        return "\n".join(lines) + "\n"


def read_world(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorldError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        raise WorldError(f"{path}: not an email world (format must be {FORMATS[0]!r})")
    for key, kind in (("zone", dict), ("web", dict), ("mail", dict), ("domains", list)):
        if not isinstance(data.get(key, kind()), kind):
            raise WorldError(f"{path}: {key!r} must be a JSON {kind.__name__}")
    return data


@contextlib.contextmanager
def serve_world(path: Path, *, latency_ms: int = 0) -> Iterator[EmailWorld]:
    data = read_world(path)
    ca = LocalCA()
    try:
        web = {
            host: WebHost(**{**spec, "body": str(spec.get("body", "")).encode()})
            for host, spec in data.get("web", {}).items()
        }
        mail = {address: MailHost(**spec) for address, spec in data.get("mail", {}).items()}
        zone = Zone.from_data(data.get("zone", {}))
    except (TypeError, ValueError) as exc:
        raise WorldError(f"{path}: {exc}") from None
    with (
        DnsSandbox(zone, latency_ms=latency_ms) as dns,
        HttpsSandbox(ca, web) as https,
        SmtpSandbox(ca, mail) as smtp,
    ):
        yield EmailWorld(dns, https, smtp, ca.pem, list(data.get("domains", [])))
