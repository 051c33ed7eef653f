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
import threading
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
    alternative at each position). Used where the one-pass set below is not at hand."""
    return re2.compile("|".join(f"(?P<{s.key}>{s.hint})" for s in _SHAPES), _re2_options())


def _re2_options() -> Any:
    options = re2.Options()
    options.max_mem = 64 << 20
    return options


_HINTS = _hints()
_KNOWN = "known secret"


class _Finder:
    """What may be in a text, in one linear pass: an RE2 set of every shape's hint and of the
    exact secrets known, which reports each that occurs anywhere (overlaps included, unlike an
    alternation, where a hint's match can hide a secret that starts inside it). The set scans
    bytes without decoding them and lets go of the GIL while it scans.

    Its first member matches only at the end of a text: a scan that did not reach the end (RE2
    gives up when its memory runs out) does not report it, and is then not trusted."""

    def __init__(self, secrets: list[str]) -> None:
        found = re2.Set.SearchSet(_re2_options())
        found.Add(r"\z")
        self.labels = ["end", *(shape.key for shape in _SHAPES)]
        for shape in _SHAPES:
            found.Add(shape.hint)
        if secrets:
            found.Add("|".join(re2.escape(secret) for secret in secrets))
            self.labels.append(_KNOWN)
        found.Compile()
        self._set = found

    def present(self, data: bytes) -> set[str] | None:
        """The labels found in `data`; None when the scan cannot be trusted."""
        indices = self._set.Match(data) or []
        if 0 not in indices:
            return None
        return {self.labels[i] for i in indices if i}


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_ENV_NAME.search(k) and v]


class Redactor:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        self._ordered: list[str] = []
        # Changes whenever a secret is learnt: a text scrubbed before then is scrubbed again.
        self.generation = 0
        self._finder: _Finder | None = None
        self._finder_generation = -1
        self._finder_lock = threading.Lock()
        # Processor time spent scrubbing, summed over the threads that scrub, for the run's
        # timings. Processor time, not elapsed: a scrub in a worker thread that waits for the
        # interpreter's lock while the collection goes on is not scrubbing all that while.
        self.seconds = 0.0
        self._timing = threading.Lock()
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
        ordered = sorted(self._secrets, key=len, reverse=True)
        if ordered != self._ordered:
            self._ordered = ordered
            self.generation += 1

    def text(self, value: str) -> str:
        started = time.thread_time()
        try:
            present = self._present(value.encode("utf-8", "surrogatepass"), value)
            return self._remove(value, present) if present else value
        finally:
            self._spent(time.thread_time() - started)

    def _spent(self, seconds: float) -> None:
        with self._timing:
            self.seconds += seconds

    def _current_finder(self) -> _Finder | None:
        with self._finder_lock:
            if self._finder_generation != self.generation:
                generation, secrets = self.generation, self._ordered
                try:
                    self._finder = _Finder(secrets)
                except (re2.error, UnicodeEncodeError):
                    # A secret RE2 cannot take (too large, not UTF-8): the slower net below.
                    self._finder = None
                self._finder_generation = generation
            return self._finder

    def _present(self, data: bytes, text: str | None = None) -> set[str]:
        """What `data` may hold: shape keys, and `_KNOWN` for an exact secret."""
        finder = self._current_finder()
        present = finder.present(data) if finder is not None else None
        if present is not None:
            return present
        # The set could not be built or could not finish: each net on its own.
        if text is None:
            text = data.decode("utf-8", "replace")
        present = {match.lastgroup for match in _HINTS.finditer(text)}
        if any(secret in text for secret in self._ordered):
            present.add(_KNOWN)
        return present

    def _remove(self, value: str, present: set[str]) -> str:
        if _KNOWN in present:
            for secret in self._ordered:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            present = {match.lastgroup for match in _HINTS.finditer(value)}
        for shape in _SHAPES:
            if shape.key in present:
                value = shape.pattern.sub(shape.replacement, value)
        return value

    def json(self, value: Any) -> Any:
        """A JSON-like value with secrets removed from its strings. The value is scanned as one
        text (far faster than visiting each string of a large section); no pattern crosses a
        string's end, so the text stays the same structure."""
        started = time.thread_time()
        try:
            try:
                raw = orjson.dumps(value)
            except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits, odd keys
                raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
            present = self._present(raw)
            if not present:
                return value
            text = raw.decode("utf-8", "surrogatepass")
            cleaned = self._remove(text, present)
        finally:
            self._spent(time.thread_time() - started)
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
        """`data` with secrets removed; the same object when there were none. Content that is
        not UTF-8 loses the exact secrets found in it."""
        started = time.thread_time()
        try:
            present = self._present(data)
            if not present:
                return data
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                for secret in self._ordered:
                    data = data.replace(secret.encode("utf-8", "surrogatepass"), REDACTED.encode())
                return data
            cleaned = self._remove(text, present)
            return data if cleaned == text else cleaned.encode("utf-8")
        finally:
            self._spent(time.thread_time() - started)


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
