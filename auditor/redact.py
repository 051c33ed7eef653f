"""Keep secrets out of every log line, report and bundle file.

Two nets: the exact values of secrets this run knows about (environment variables that hold
credentials, secrets connectors read, the signing key), and the shapes of credentials in general
(bearer tokens, JWTs, PEM private keys, client secrets in request bodies). Connectors redact at
the source; the bundle writer and the log handler pass everything through here once more.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

# Environment variables whose values are credentials whatever the name's prefix.
_SECRET_ENV_NAME = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|PRIVATE|CREDENTIAL|API_?KEY|SIGNING_KEY|"
    r"ACCESS_KEY|SAS|CONNECTION_STRING|_KEY$)",
    re.IGNORECASE,
)
# Shorter values are too likely to be ordinary words ("true", a region name) to scrub everywhere.
_MIN_SECRET_LENGTH = 8

_KEYS = (
    r"client_secret|clientsecret|client_assertion|password|access_token|refresh_token|id_token|"
    r"secretaccesskey|secret_access_key|sessiontoken|session_token|private_key"
)
# (pattern, replacement): group 1, where present, is context kept in front of the secret.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys of any kind.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
            re.DOTALL,
        ),
        REDACTED,
    ),
    # JSON Web Tokens (access tokens, ID tokens, client assertions).
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Authorization headers.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{16,}"), r"\g<1>" + REDACTED),
    # Entra ID client secrets (the `Q~` form issued since 2021).
    (re.compile(r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}"), REDACTED),
    # GitHub tokens.
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"), REDACTED),
    # Credentials in form bodies or query strings.
    (re.compile(rf"(?i)((?:{_KEYS}|sig)=)[^&\s\"']+"), r"\g<1>" + REDACTED),
    # Credentials as JSON members.
    (re.compile(rf"(?i)(\"(?:{_KEYS})\"\s*:\s*\")[^\"]+"), r"\g<1>" + REDACTED),
]


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_ENV_NAME.search(k) and v]


class Redactor:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        for value in secrets or []:
            self.add(value)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        return cls(secret_env_values(environ))

    def add(self, value: str) -> None:
        """Remember a secret; its JSON-escaped form is scrubbed too, since files are JSON."""
        for candidate in (value, value.strip()):
            if len(candidate) >= _MIN_SECRET_LENGTH:
                self._secrets.add(candidate)
                escaped = json.dumps(candidate, ensure_ascii=False)[1:-1]
                self._secrets.add(escaped)
                self._secrets.add(json.dumps(candidate)[1:-1])
                # Multi-line secrets (PEM keys) also leak line by line.
                for line in candidate.splitlines():
                    if len(line.strip()) >= 16:
                        self._secrets.add(line.strip())

    def text(self, value: str) -> str:
        # Longest first, so a secret that contains another is removed whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def json(self, value: Any) -> Any:
        """A JSON-like value with secrets removed from every string in it. The whole value is
        scanned as one text, which is far faster than visiting each string of a large section."""
        text = json.dumps(value, ensure_ascii=False)
        cleaned = self.text(text)
        if cleaned == text:
            return value
        try:
            return json.loads(cleaned)
        except json.JSONDecodeError:
            # A replacement broke the JSON structure (a secret spanning syntax): fall back to
            # cleaning string by string.
            return self._json_walk(value)

    def _json_walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._json_walk(v) for v in value]
        if isinstance(value, dict):
            return {k: self._json_walk(v) for k, v in value.items()}
        return value

    def bytes(self, data: bytes) -> bytes:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # Binary content: scrub the exact secret bytes that can be found.
            for secret in sorted(self._secrets, key=len, reverse=True):
                data = data.replace(secret.encode("utf-8"), REDACTED.encode())
            return data
        cleaned = self.text(text)
        return data if cleaned == text else cleaned.encode("utf-8")


class RedactingFilter(logging.Filter):
    """Scrubs every log record before any handler writes it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = self.redactor.text(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        return True
