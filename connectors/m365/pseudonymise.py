"""Replace user identifiers in a recorded tenant with stable pseudonyms, so a recording can be
shared to reproduce a problem without naming anyone. The key is random and kept nowhere: the
pseudonyms cannot be turned back into names, but within one recording each person keeps one
pseudonym everywhere, so cross-references (a Conditional Access exclusion, a mailbox, a
registration record) still line up."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from pathlib import Path
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+#-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class Pseudonyms:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self.mapping: dict[str, str] = {}

    def _digest(self, value: str) -> str:
        return hmac.new(self._key, value.lower().encode(), hashlib.sha256).hexdigest()[:10]

    def add_user(self, user: dict[str, Any]) -> None:
        upn = user.get("userPrincipalName") or user.get("UserPrincipalName")
        if not isinstance(upn, str) or "@" not in upn:
            return
        local, _, domain = upn.partition("@")
        tag = self._digest(upn)
        self.mapping.setdefault(upn, f"user-{tag}@{domain}")
        self.mapping.setdefault(local, f"user-{tag}")
        for key in ("displayName", "userDisplayName", "DisplayName", "Name", "Identity", "Alias"):
            value = user.get(key)
            if isinstance(value, str) and value and value not in self.mapping and value != upn:
                self.mapping[value] = f"User {tag}"
        for key in ("id", "ExternalDirectoryObjectId", "ExchangeGuid"):
            value = user.get(key)
            if isinstance(value, str) and value:
                self.mapping.setdefault(
                    value,
                    str(uuid.UUID(hex=hashlib.sha256(self._key + value.encode()).hexdigest()[:32])),
                )

    def email(self, address: str) -> str:
        if address in self.mapping:
            return self.mapping[address]
        local, _, domain = address.partition("@")
        return f"user-{self._digest(address)}@{domain}" if local else address

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            if value in self.mapping:
                return self.mapping[value]
            return _EMAIL.sub(lambda m: self.mapping.get(m.group(0), m.group(0)), value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


def pseudonymise_tenant(directory: Path) -> Pseudonyms:
    """Rewrite a recorded tenant directory in place."""
    pseudonyms = Pseudonyms()
    for source in (
        "graph/v1.0/users.json",
        "graph/v1.0/reports/authenticationMethods/userRegistrationDetails.json",
        "exo/Get-Mailbox.json",
    ):
        path = directory / source
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            for user in data.get("value", []) if isinstance(data, dict) else data:
                if isinstance(user, dict):
                    pseudonyms.add_user(user)
    for path in sorted(directory.rglob("*.json")):
        if path.name == "tenant.json":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(
            json.dumps(pseudonyms.value(data), separators=(",", ":"), ensure_ascii=False),
            encoding="utf-8",
        )
    # A privileged user's account is recorded under its object id (GET /users/{id}): the file is
    # renamed with the id's pseudonym, which the role assignments now name.
    accounts = directory / "graph" / "v1.0" / "users"
    for path in sorted(accounts.glob("*.json")) if accounts.is_dir() else []:
        renamed = pseudonyms.mapping.get(path.stem)
        if renamed is not None:
            path.rename(path.with_name(f"{renamed}.json"))
    return pseudonyms
