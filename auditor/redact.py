"""Keep secrets out of every log line, report and bundle file.

Two nets: the exact values of secrets this run knows about (environment variables that hold
credentials, secrets connectors read, the signing key), and the shapes of credentials in general
(bearer tokens, JWTs, PEM private keys, client secrets, cloud and CI tokens, passwords in URLs).

Answers are scrubbed once, where they are collected (`auditor.collect`); what is built from them
is clean already. Each shape's pattern runs only where a cheap literal test says it could match
(no `eyJ`, no JWT scan), so a text without secrets costs a few substring searches. No pattern can
match across a JSON string's closing quote: scrubbing a JSON text changes string contents only,
never the structure, so an item can never vanish from an answer because two of its neighbours
look like the ends of a private key. And no pattern matches a name that only resembles a secret:
each needs the secret's own form (a JWT's three segments, a PEM block with both its markers in
one string, a token's prefix and length).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import re2  # type: ignore[import-untyped]

REDACTED = "[REDACTED]"

# Environment variables whose values are credentials whatever the name's prefix.
_SECRET_ENV_NAME = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|PRIVATE|CREDENTIAL|API_?KEY|SIGNING_KEY|"
    r"ACCESS_KEY|SAS|CONNECTION_STRING|_KEY$)",
    re.IGNORECASE,
)
# Shorter values are too likely to be ordinary words ("true", a region name) to scrub everywhere.
_MIN_SECRET_LENGTH = 8

_KEY_NAMES = (
    "client_secret",
    "clientsecret",
    "client_assertion",
    "password",
    "access_token",
    "refresh_token",
    "id_token",
    "secretaccesskey",
    "secret_access_key",
    "sessiontoken",
    "session_token",
    "private_key",
)
_KEYS = "|".join(_KEY_NAMES)
# A JSON string's body: anything but an unescaped quote. Patterns that cross text use it, so
# they stop at the end of the string they started in.
_IN_STRING = r'(?:[^"\\]|\\.)'


@dataclass(frozen=True)
class _Shape:
    """A credential's shape. `hint` (RE2 syntax) is what must be in a text for `pattern` (Python
    `re`, which runs only then) to match: every hint is looked for in one linear pass."""

    key: str
    hint: str
    pattern: re.Pattern[str]
    replacement: str = REDACTED


_KEEP = r"\g<1>" + REDACTED
_SHAPES: tuple[_Shape, ...] = (
    # PEM private keys of any kind, both markers within one string (or one plain text), at most
    # 16 KiB apart: linear however many markers a hostile answer repeats.
    _Shape(
        "private_key",
        r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----"
            + _IN_STRING
            + r"{0,16384}?-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----"
        ),
    ),
    # JSON Web Tokens (access tokens, ID tokens, client assertions).
    _Shape(
        "jwt",
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    ),
    # Authorization headers: bearer tokens, and basic credentials after "Authorization".
    _Shape(
        "bearer",
        r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16}",
        re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{16,}"),
        _KEEP,
    ),
    _Shape(
        "basic",
        r"(?i:authorization)\\?[\"']?\s*[:=]\s*\\?[\"']?(?i:basic)\s+[A-Za-z0-9+/]{6}",
        # The quotes may be escaped: a header inside a JSON string.
        re.compile(
            r"""(?i)(authorization\\?["']?\s*[:=]\s*\\?["']?basic\s+)[A-Za-z0-9+/]{6,}={0,2}"""
        ),
        _KEEP,
    ),
    # Entra ID client secrets (the `Q~` form issued since 2021).
    _Shape(
        "entra_secret",
        r"[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31}",
        re.compile(r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}"),
    ),
    # GitHub tokens.
    _Shape(
        "github",
        r"gh[pousr]_[A-Za-z0-9]{30}|github_pat_[A-Za-z0-9_]{40}",
        re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    ),
    # AWS access key ids (long-term AKIA…, temporary ASIA…: four letters and 16 of base32).
    _Shape(
        "aws_key_id",
        r"(?:AKIA|ASIA)[A-Z2-7]{16}",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z2-7]{16}(?![A-Z0-9])"),
    ),
    # Pulumi access tokens.
    _Shape("pulumi", r"pul-[a-f0-9]{40}", re.compile(r"\bpul-[a-f0-9]{40}\b")),
    # Slack tokens: xoxb-<team digits>-<digits>-<secret>, and the user and app forms alike.
    _Shape(
        "slack",
        r"xox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{10}",
        re.compile(r"\bxox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{10,}"),
    ),
    # A user name and password in a URL: https://user:password@host.
    _Shape(
        "url_credentials",
        r"://[^/\s:@\"'<>]{1,256}:[^/\s@\"'<>]{1,256}@",
        re.compile(r"""://[^/\s:@"'<>]{1,256}:[^/\s@"'<>]{1,256}@"""),
        "://" + REDACTED + "@",
    ),
    # Azure storage keys and shared access signatures in connection strings.
    _Shape(
        "azure_storage",
        r"(?i:accountkey|sharedaccesssignature)=",
        re.compile(r"""(?i)((?:AccountKey|SharedAccessSignature)=)[^;\s"'&]+"""),
        _KEEP,
    ),
    # Credentials in form bodies or query strings, and as JSON members.
    _Shape(
        "parameter",
        rf"(?i:{_KEYS}|sig)=",
        re.compile(rf"""(?i)((?:{_KEYS}|sig)=)[^&\s"']+"""),
        _KEEP,
    ),
    _Shape(
        "member",
        rf"\"(?i:{_KEYS})\"\s*:\s*\"",
        re.compile(rf"""(?i)("(?:{_KEYS})"\s*:\s*"){_IN_STRING}+"""),
        _KEEP,
    ),
)


def _hints() -> Any:
    """Every shape's hint as one RE2 expression, a named group each: RE2 scans a text once, in
    time linear in its length, whatever the expression (Python's `re` would try each
    alternative at each position)."""
    options = re2.Options()
    options.max_mem = 64 << 20
    return re2.compile("|".join(f"(?P<{s.key}>{s.hint})" for s in _SHAPES), options)


_HINTS = _hints()


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_ENV_NAME.search(k) and v]


class Redactor:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        self._ordered: list[str] = []
        # Time spent scrubbing, for the run's timings.
        self.seconds = 0.0
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
        # Longest first, so a secret that contains another is removed whole.
        self._ordered = sorted(self._secrets, key=len, reverse=True)

    def text(self, value: str) -> str:
        started = time.perf_counter()
        try:
            return self._scrub(value)
        finally:
            self.seconds += time.perf_counter() - started

    def _scrub(self, value: str) -> str:
        for secret in self._ordered:
            if secret in value:
                value = value.replace(secret, REDACTED)
        present = {match.lastgroup for match in _HINTS.finditer(value)}
        if present:
            for shape in _SHAPES:
                if shape.key in present:
                    value = shape.pattern.sub(shape.replacement, value)
        return value

    def json(self, value: Any) -> Any:
        """A JSON-like value with secrets removed from its strings. The value is scanned as one
        text (far faster than visiting each string of a large section); no pattern crosses a
        string's end, so the text stays the same structure."""
        try:
            text = orjson.dumps(value).decode()
        except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits, odd keys
            text = json.dumps(value, ensure_ascii=False)
        cleaned = self.text(text)
        if cleaned == text:
            return value
        try:
            return json.loads(cleaned)
        except json.JSONDecodeError:
            # A known secret's exact value spanned JSON syntax: clean string by string.
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
            started = time.perf_counter()
            for secret in self._ordered:
                data = data.replace(secret.encode("utf-8"), REDACTED.encode())
            self.seconds += time.perf_counter() - started
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
