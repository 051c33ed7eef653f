"""Credentials and clients for the AWS connector, from boto3's standard chain.

The chain covers a named profile (SSO included), environment variables, GitHub Actions OIDC
(`AWS_ROLE_ARN` with `AWS_WEB_IDENTITY_TOKEN_FILE`), and instance or container roles. On top of
it, `role_arn` (with an optional `external_id`) assumes a role, as an MSP reaching into a
client's account does.

Every call is signed with the account's keys and carries its session token: it goes over HTTPS,
or over plain HTTP to this machine only (moto in the tests, a local stack), whether the endpoint
comes from the config or from botocore's own settings (`AWS_ENDPOINT_URL`, a profile's
`endpoint_url`)."""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.config
import botocore.session

from auditor.aws.endpoints import endpoint_problem
from auditor.model.errors import CollectionError

USER_AGENT = "commsaudit"


def _checked(client: Any) -> Any:
    """`client`, once its endpoint (whichever setting named it) passes `endpoint_problem`."""
    problem = endpoint_problem(str(client.meta.endpoint_url))
    if problem is not None:
        raise CollectionError(problem)
    return client


def unprefix_account_host(client: Any, endpoint_url: str) -> None:
    """S3 Control puts the account id in front of the host (`<account>.<endpoint>`), which an
    overriding endpoint given as an address cannot answer to: send such requests to the
    endpoint itself, before they are signed."""
    endpoint = urllib.parse.urlsplit(endpoint_url)

    def fix(request: Any, **_kwargs: Any) -> None:
        url = urllib.parse.urlsplit(request.url)
        account, _, rest = url.netloc.partition(".")
        if account.isdigit() and rest == endpoint.netloc:
            request.url = urllib.parse.urlunsplit(url._replace(netloc=rest))

    client.meta.events.register("before-sign.s3-control", fix)


@dataclass
class AwsSession:
    """One boto3 session for the run, and the clients made from it (shared across threads:
    boto3 clients are thread-safe, sessions are not, so clients are made under a lock)."""

    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = 5
    timeout_seconds: float = 30.0
    _session: boto3.session.Session | None = None
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _config(self) -> botocore.config.Config:
        return botocore.config.Config(
            retries={"mode": "adaptive", "max_attempts": self.max_attempts},
            connect_timeout=self.timeout_seconds,
            read_timeout=self.timeout_seconds,
            user_agent_extra=USER_AGENT,
        )

    def session(self) -> boto3.session.Session:
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def _make_session(self) -> boto3.session.Session:
        base = boto3.session.Session(profile_name=self.profile)
        if not self.role_arn:
            return base
        sts = _checked(base.client("sts", endpoint_url=self.endpoint_url, config=self._config()))
        params: dict[str, Any] = {"RoleArn": self.role_arn, "RoleSessionName": "commsaudit"}
        if self.external_id:
            params["ExternalId"] = self.external_id
        credentials = sts.assume_role(**params)["Credentials"]
        return boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    def client(self, service: str, region: str) -> Any:
        session = self.session()
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                client = _checked(
                    session.client(
                        service,
                        region_name=region,
                        endpoint_url=self.endpoint_url,
                        config=self._config(),
                    )
                )
                if service == "s3control" and self.endpoint_url:
                    unprefix_account_host(client, self.endpoint_url)
                self._clients[key] = client
            return self._clients[key]

    def secrets(self) -> list[str]:
        """The credential values in use, for the run's redaction (never written anywhere)."""
        credentials = self.session().get_credentials()
        if credentials is None:
            return []
        frozen = credentials.get_frozen_credentials()
        return [v for v in (frozen.secret_key, frozen.token) if v]
