"""The `[m365]` config that points the connector at a running sandbox, for the tests that run
the real connector against it."""

from __future__ import annotations

from typing import Any

from connectors.m365.sandbox.server import SECRET_ENV, Sandbox

# Few, quick retries: a test's faults are deliberate, and waiting them out only slows the suite.
FAST = {"retries": 2, "backoff_seconds": 0.05, "timeout_seconds": 10}


def sandbox_config(sandbox: Sandbox, auth: str = "client-secret", **extra: Any) -> dict[str, Any]:
    """Sign-in by `auth` (client-secret, certificate or workload-identity) with the sandbox's
    own credentials; `extra` replaces or adds keys (`limits`, `read_sharepoint_admin`, ...)."""
    config: dict[str, Any] = {
        "tenant_id": sandbox.tenant.tenant_id,
        "client_id": sandbox.client_id,
        "auth": auth,
        "client_secret_env": SECRET_ENV,
        "endpoints": sandbox.endpoints(),
        "limits": FAST,
    }
    if auth == "certificate":
        config["certificate_file"] = str(sandbox.files["client"])
    if auth == "workload-identity":
        config["federated_token_file"] = str(sandbox.federated_token_file)
    config.update(extra)
    return config
