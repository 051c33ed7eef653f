"""Errors a connector or a reader of local input may raise, and how they quote what they read.
An `AuditError` stops a run (exit code 2) and is written so a person can act on it."""

from __future__ import annotations

from typing import Any

# The most of a value an error quotes: enough to recognise it, never a whole file pasted into
# the wrong place (a config pointed at /etc/passwd must not print it).
QUOTE_LIMIT = 120


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """The first line of `text`, cut to `limit` characters; `…` says something was left out."""
    lines = text.splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        return first[: limit - 1] + "…"
    return first + "…" if first != text else first


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """A value from an input file as an error shows it: short text in quotes, a mapping or a
    list described rather than printed."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, str):
        return repr(shorten(value, limit))
    return shorten(repr(value), limit)


class AuditError(Exception):
    """The audit itself could not run: bad config, bad policy, bad input file, no key.

    `where` names the file (and line or key) at fault; `hint` says what to do about it.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def line(self) -> str:
        """The whole error as one readable line."""
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __str__(self) -> str:
        return self.line()


class InputError(AuditError):
    """A local input the audit or a connector reads (attestations file, snapshot, key, a file named
    in config) is malformed: the user's to fix, not a platform fault. The run stops with exit
    code 2 before anything is collected."""


class CollectionError(Exception):
    """Collection failed in a way a person can act on. `permission` names what is missing."""

    def __init__(self, reason: str, *, permission: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permission = permission
