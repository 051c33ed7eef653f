"""Errors that stop a run (exit code 2), written so a person can act on them."""

from __future__ import annotations

from auditor.model.errors import AuditError


class ConfigError(AuditError):
    """commsaudit.toml or a command-line option is wrong."""


class PolicyError(AuditError):
    """A policy file is malformed; `problems` holds every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        first = problems[0] if problems else "invalid policy"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class BundleError(AuditError):
    """An evidence bundle could not be written or read."""
