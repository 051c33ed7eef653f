"""Local stand-ins for the internet an email-posture audit reads, for tests, the demo and the
benchmark: an authoritative DNS server (with signed zones), HTTPS hosts for MTA-STS policies,
and SMTP servers offering STARTTLS. Everything listens on 127.0.0.x only."""

from connectors.dns.sandbox.dns_server import DnsSandbox
from connectors.dns.sandbox.https_server import HttpsSandbox, WebHost
from connectors.dns.sandbox.smtp_server import MailHost, SmtpSandbox
from connectors.dns.sandbox.zone import Zone

__all__ = ["DnsSandbox", "HttpsSandbox", "MailHost", "SmtpSandbox", "WebHost", "Zone"]
