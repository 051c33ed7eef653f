"""Where signed AWS calls may go: HTTPS, or plain HTTP to this machine only (moto in the tests,
a local stack). Kept apart from the session so a config can be checked without importing boto3."""

from __future__ import annotations

import ipaddress
import urllib.parse


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_problem(url: str) -> str | None:
    """Why signed calls must not go to `url`, or None. Names the scheme and host only."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    shown = f"{parts.scheme}://{host}" if host else "(no host)"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and _is_loopback(host):
        return None
    return (
        f"the AWS endpoint {shown} is not HTTPS: signed calls (and the session token) go only "
        "over HTTPS, or over plain HTTP to a loopback address such as 127.0.0.1"
    )
