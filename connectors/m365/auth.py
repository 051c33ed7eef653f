"""Signing in with azure-identity, and tokens cached per audience.

Methods: a client certificate (preferred), a client secret, workload identity federation
(a federated token file, or GitHub Actions' OIDC token request), a managed identity, or the
Azure CLI login of a person at a terminal. Secrets come from the environment or files, never
from commsaudit.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import PipelineRequest

from auditor.model.errors import CollectionError
from connectors.m365.clouds import Endpoints

METHODS = ("certificate", "client-secret", "workload-identity", "managed-identity", "azure-cli")
GITHUB_AUDIENCE = "api://AzureADTokenExchange"
# Refresh a token this long before it expires.
_EARLY_SECONDS = 300


@dataclass(frozen=True)
class AuthSettings:
    method: str
    tenant_id: str
    client_id: str | None
    certificate_file: Path | None = None
    certificate_password_env: str | None = None
    client_secret_env: str = "AZURE_CLIENT_SECRET"  # noqa: S105 - a variable's name
    federated_token_file: Path | None = None


def choose_method(settings: AuthSettings, environ: Mapping[str, str]) -> str:
    """`auto`: the first method whose inputs are present, preferring a certificate."""
    if settings.method != "auto":
        return settings.method
    if settings.certificate_file:
        return "certificate"
    if environ.get(settings.client_secret_env):
        return "client-secret"
    if (
        settings.federated_token_file
        or environ.get("AZURE_FEDERATED_TOKEN_FILE")
        or (
            environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
            and environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        )
    ):
        return "workload-identity"
    if environ.get("IDENTITY_ENDPOINT") or environ.get("MSI_ENDPOINT"):
        return "managed-identity"
    return "azure-cli"


def github_oidc_token(
    environ: Mapping[str, str], audience: str = GITHUB_AUDIENCE
) -> Callable[[], str]:
    """A function returning a fresh GitHub Actions OIDC token, for ClientAssertionCredential."""

    def fetch() -> str:
        url = environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
        separator = "&" if "?" in url else "?"
        request = urllib.request.Request(  # noqa: S310 - the URL is GitHub's, from its runner
            f"{url}{separator}audience={urllib.parse.quote(audience)}",
            headers={"Authorization": f"bearer {environ['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            value = json.loads(response.read())["value"]
        assert isinstance(value, str)
        return value

    return fetch


def build_credential(
    settings: AuthSettings,
    endpoints: Endpoints,
    environ: Mapping[str, str],
    on_token_request: Callable[[], None] | None = None,
) -> tuple[str, TokenCredential]:
    """(method used, credential). Raises CollectionError saying what is missing.
    `on_token_request` is called (in the signing-in thread) as each request for a token is
    sent, by the methods that sign in to Entra ID with the app's own credential."""
    from azure import identity

    method = choose_method(settings, environ)
    common: dict[str, Any] = {"authority": endpoints.authority}
    if on_token_request is not None:
        common["raw_request_hook"] = _posts_only(on_token_request)
    if endpoints.authority_overridden:
        # Instance discovery asks login.microsoftonline.com about the authority: not for an
        # overridden one (a sandbox, a proxy), which answers its own OpenID configuration.
        common["disable_instance_discovery"] = True
    if endpoints.ca_bundle:
        common["connection_verify"] = endpoints.ca_bundle
    if method in ("certificate", "client-secret", "workload-identity") and not settings.client_id:
        raise CollectionError(f"[m365] client_id is required for {method} sign-in")
    client_id = settings.client_id or ""
    if method == "certificate":
        if settings.certificate_file is None:
            raise CollectionError("[m365] certificate_file is required for certificate sign-in")
        password = environ.get(settings.certificate_password_env or "") or None
        return method, identity.CertificateCredential(
            settings.tenant_id,
            client_id,
            certificate_path=str(settings.certificate_file),
            password=password,
            **common,
        )
    if method == "client-secret":
        secret = environ.get(settings.client_secret_env)
        if not secret:
            raise CollectionError(
                f"client-secret sign-in needs the secret in the environment variable "
                f"{settings.client_secret_env}, which is not set"
            )
        return method, identity.ClientSecretCredential(
            settings.tenant_id, client_id, secret, **common
        )
    if method == "workload-identity":
        token_file = settings.federated_token_file or (
            Path(environ["AZURE_FEDERATED_TOKEN_FILE"])
            if environ.get("AZURE_FEDERATED_TOKEN_FILE")
            else None
        )
        if token_file is not None:
            return method, identity.WorkloadIdentityCredential(
                tenant_id=settings.tenant_id,
                client_id=client_id,
                token_file_path=str(token_file),
                **common,
            )
        if environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") and environ.get(
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
        ):
            common.pop("disable_instance_discovery", None)
            return method, identity.ClientAssertionCredential(
                settings.tenant_id, client_id, github_oidc_token(environ), **common
            )
        raise CollectionError(
            "workload identity needs a federated token: set AZURE_FEDERATED_TOKEN_FILE, or run in "
            "GitHub Actions with `permissions: id-token: write`"
        )
    if method == "managed-identity":
        kwargs: dict[str, Any] = {"client_id": settings.client_id} if settings.client_id else {}
        if endpoints.ca_bundle:
            kwargs["connection_verify"] = endpoints.ca_bundle
        return method, identity.ManagedIdentityCredential(**kwargs)
    if method == "azure-cli":
        return method, identity.AzureCliCredential(tenant_id=settings.tenant_id)
    raise CollectionError(f"[m365] auth = {method!r} is not one of {', '.join(METHODS)}")


def _posts_only(callback: Callable[[], None]) -> Callable[[PipelineRequest[Any]], None]:
    """azure-core's `raw_request_hook` sees every request the credential sends: the OpenID
    configuration (and instance discovery) are GETs, a token request is a POST."""

    def hook(request: PipelineRequest[Any]) -> None:
        if request.http_request.method == "POST":
            callback()

    return hook


def explain_auth_error(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "AADSTS7000215" in text or "Invalid client secret" in text:
        return (
            "sign-in failed: the client secret is wrong or expired (AADSTS7000215); "
            "create a new one"
        )
    if "AADSTS700016" in text:
        return (
            "sign-in failed: no app with this client_id in the tenant (AADSTS700016); "
            "check [m365] client_id and tenant_id"
        )
    if "AADSTS700027" in text:
        return (
            "sign-in failed: the certificate is not registered on the app, or the assertion "
            "is invalid (AADSTS700027)"
        )
    if "AADSTS90002" in text:
        return "sign-in failed: tenant not found (AADSTS90002); check [m365] tenant_id"
    return f"sign-in failed: {text}"


class TokenCache:
    """Tokens for each audience, fetched once and refreshed before they expire. Concurrent
    requests for the same audience wait for one sign-in instead of starting several."""

    def __init__(
        self,
        credential: TokenCredential,
        run_blocking: Callable[..., Any],
        register_secret: Callable[[str], None],
    ) -> None:
        self.credential = credential
        self._run_blocking = run_blocking
        self._register_secret = register_secret
        self._tokens: dict[str, AccessToken] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._early: set[asyncio.Future[None]] = set()
        self.requests = 0

    def start(self, scopes: Iterable[str], when: Awaitable[object]) -> None:
        """Sign in for these audiences as soon as `when` is done, each in its worker thread,
        rather than one after another as each reader first needs its token. A failure here is
        not reported: the read that needs the token signs in again and says what went wrong."""

        gate = asyncio.ensure_future(when)  # one future, awaited by each of them

        async def early(scope: str) -> None:
            with contextlib.suppress(Exception):
                await gate
            with contextlib.suppress(CollectionError):
                await self.token(scope)

        for scope in scopes:
            task = asyncio.ensure_future(early(scope))
            self._early.add(task)
            task.add_done_callback(self._early.discard)

    async def token(self, scope: str) -> str:
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(scope)
            if cached is None or cached.expires_on - _EARLY_SECONDS <= time.time():
                try:
                    cached = await self._run_blocking(self.credential.get_token, scope)
                except ClientAuthenticationError as exc:
                    raise CollectionError(explain_auth_error(exc)) from None
                except Exception as exc:  # a network fault while signing in
                    raise CollectionError(f"sign-in failed: {type(exc).__name__}: {exc}") from None
                assert cached is not None
                self.requests += 1
                self._register_secret(cached.token)
                self._tokens[scope] = cached
            return cached.token
