"""manifest.json: who ran what, when, over which scope, with which policies; and every file."""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from auditor import __version__
from auditor.jsonutil import JSON
from auditor.model.snapshot import Snapshot

FORMAT = "commsaudit/manifest/v1"

_SCOPE_KEYS = {
    "tenant": "tenants",
    "account": "accounts",
    "region": "regions",
    "domain": "domains",
    "stack": "stacks",
    "organisation": "organisations",
}


def ran_by(environ: dict[str, str] | None = None) -> dict[str, JSON]:
    env = dict(os.environ) if environ is None else environ
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = env.get("USER") or env.get("USERNAME") or "unknown"
    who: dict[str, JSON] = {"user": user, "host": socket.gethostname(), "ci": None}
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        repo = env.get("GITHUB_REPOSITORY")
        run_id = env.get("GITHUB_RUN_ID")
        who["ci"] = {
            "provider": "github-actions",
            "repository": repo,
            "workflow": env.get("GITHUB_WORKFLOW"),
            "workflow_ref": env.get("GITHUB_WORKFLOW_REF"),
            "run_id": run_id,
            "run_attempt": env.get("GITHUB_RUN_ATTEMPT"),
            "run_url": f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
            "commit": env.get("GITHUB_SHA"),
            "ref": env.get("GITHUB_REF"),
            "actor": env.get("GITHUB_ACTOR"),
            "event": env.get("GITHUB_EVENT_NAME"),
        }
    elif env.get("CI"):
        who["ci"] = {"provider": "unknown", "commit": env.get("CI_COMMIT_SHA")}
    return who


def scope_of(snapshot: Snapshot) -> dict[str, JSON]:
    scope: dict[str, JSON] = {key: [] for key in _SCOPE_KEYS.values()}
    for kinds in snapshot.scope.values():
        for kind, subjects in kinds.items():
            bucket = scope[_SCOPE_KEYS[kind]]
            assert isinstance(bucket, list)
            bucket.extend(s for s in subjects if s not in bucket)
    scope["platforms"] = sorted(snapshot.scope)
    scope["connectors"] = {
        name: {"title": src.title, "status": src.status, "error": src.error, "scope": src.scope}
        for name, src in snapshot.sources.items()
    }
    return scope


def build_manifest(
    *,
    run: dict[str, JSON],
    who: dict[str, JSON],
    scope: dict[str, JSON],
    policy_digest: str,
    evaluation: dict[str, JSON],
    signature: dict[str, JSON] | None,
    files: list[dict[str, Any]],
    redacted: list[str],
    timings: dict[str, JSON] | None = None,
    overridden: list[dict[str, JSON]] | None = None,
) -> dict[str, JSON]:
    return {
        "format": FORMAT,
        "tool": {"name": "commsaudit", "version": __version__},
        "run": run,
        "ran_by": who,
        "scope": scope,
        "profile": evaluation.get("profile"),
        "policy_digest": policy_digest,
        # Controls whose policy file replaced the built-in one of the same id ([policies]
        # paths): an assessor sees which verdicts come from a changed policy.
        "policies": {"overridden": overridden or []},
        "evaluation": evaluation,
        "signature": signature,
        "redaction": {
            "secrets": "removed from every file before hashing",
            "files_where_the_final_check_removed_something": redacted,
        },
        # Where the run's time went, in seconds by phase (and the share spent scrubbing).
        "timings": timings or {},
        "files": files,
    }
