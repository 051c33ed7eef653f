"""Errors that stop a run (exit code 2), written so a person can act on them."""

from __future__ import annotations


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


class ConfigError(AuditError):
    """commsaudit.toml or a command-line option is wrong."""


class PolicyError(AuditError):
    """A policy file is malformed; `problems` holds every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        first = problems[0] if problems else "invalid policy"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class InputError(AuditError):
    """A local input the audit reads (attestations file, snapshot, key) is malformed."""


class BundleError(AuditError):
    """An evidence bundle could not be written or read."""
