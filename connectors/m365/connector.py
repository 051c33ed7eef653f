"""The Microsoft 365 connector: signs in, reads Graph, the admin API and the Teams admin API
concurrently, keeps
every answer in the recorded-tenant layout, and normalises it into `m365.*` sections."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from auditor.model.errors import CollectionError, InputError
from auditor.model.section import Platform, SubjectKind
from connectors.base import CollectContext, Connector, Permission, RawRecord
from connectors.m365.auth import METHODS, AuthSettings, TokenCache, build_credential
from connectors.m365.clouds import CLOUDS, endpoints_for
from connectors.m365.exchange import SYSTEM_MAILBOX, AdminApi
from connectors.m365.fetched import Fetched, compact_json
from connectors.m365.grants import grant_steps
from connectors.m365.http import MIB, Destinations, Limits, Stats, make_clients
from connectors.m365.normalise import (
    ADMIN_API_SECTIONS,
    CLASSIFICATIONS_PATH,
    ELIGIBLE_PATH,
    OTHER_CLASSIFICATIONS,
    SECTION_READS,
    SECTIONS,
    M365Settings,
    RegistrationJoin,
    SectionOut,
    normalise,
    privileged_user_ids,
    reads_for,
)
from connectors.m365.permissions import permissions
from connectors.m365.sharepoint import OPT_IN, TENANT_PATH, SharePointAdmin
from connectors.m365.teams import CONFIGURATIONS, TeamsApi

if TYPE_CHECKING:  # imported while the sign-in is in flight (see collect)
    from collections.abc import Awaitable, Callable

    from connectors.m365.graph import GraphReader

USER_FIELDS = "id,userPrincipalName,displayName,accountEnabled,userType"
# Read at once (right after the first page of each collection is asked for): the tenant's id
# and initial domain, which the admin API's anchors name.
ORGANIZATION = ("organization", "$select=id,displayName,verifiedDomains")
# Collections, read page by page: (path, query).
CA_POLICIES = "identity/conditionalAccess/policies"
USERS = "users"
REGISTRATIONS = "reports/authenticationMethods/userRegistrationDetails"
GRAPH_COLLECTIONS = (
    (USERS, f"$select={USER_FIELDS}&$top=999"),
    (REGISTRATIONS, "$top=999"),
    (CA_POLICIES, ""),
    ("policies/authenticationStrengthPolicies", ""),
    ("roleManagement/directory/roleDefinitions", ""),
    ("roleManagement/directory/roleAssignments", ""),
    ("policies/appManagementPolicies", ""),
    ("domains", ""),
)
# Conditional Access again, from beta: the conditions on agent identities (agentIdRiskLevels,
# includeAgentIdServicePrincipals) are not in v1.0 yet. Only what those facts need.
AGENT_CA = (
    "identity/conditionalAccess/policies",
    "$select=id,displayName,state,conditions,grantControls",
)
# The collections with the most pages on a large tenant (one chain of requests each).
LONGEST_CHAINS = (USERS, REGISTRATIONS)
# Privileged Identity Management (needs Entra ID P2): the eligible and the active role
# assignments, each with its principal (whose @odata.type says user, group or service
# principal), and the role settings (approval, notifications) of every directory role.
ELIGIBLE = "roleManagement/directory/roleEligibilityScheduleInstances"
ACTIVE = "roleManagement/directory/roleAssignmentScheduleInstances"
PIM_COLLECTIONS = (
    (ELIGIBLE, "$expand=principal"),
    (ACTIVE, "$expand=principal"),
    (
        "policies/roleManagementPolicyAssignments",
        "$filter=scopeId%20eq%20'%2F'%20and%20scopeType%20eq%20'DirectoryRole'"
        "&$expand=policy($expand=rules)",
    ),
)
ROLE_DEFINITIONS = "roleManagement/directory/roleDefinitions"
# What is read of each user who holds a privileged role: whether the account comes from an
# on-premises directory (MS.AAD.7.3). Not in USER_FIELDS: every page of the longest chain would
# carry it for every user, where a few dozen accounts need it.
PRIVILEGED_USER_FIELDS = (
    "id,displayName,userPrincipalName,onPremisesImmutableId,onPremisesSyncEnabled"
)
# Single objects and one-page lists, read together in $batch calls.
GRAPH_SINGLES = (
    "policies/identitySecurityDefaultsEnforcementPolicy",
    "policies/authorizationPolicy",
    "policies/adminConsentRequestPolicy",
    "policies/defaultAppManagementPolicy",
    "policies/authenticationMethodsPolicy",
    "admin/sharepoint/settings",
    "security/secureScores?$top=1",
    # Short lists (the permissions a tenant classifies), one page each: in the same $batch
    # calls, not eight collection reads queued behind the long ones (a next page there is an
    # error: see GraphReader.batch).
    *(p.removeprefix("graph/v1.0/") for p in (CLASSIFICATIONS_PATH, *OTHER_CLASSIFICATIONS)),
)
# A mailbox has some 250 properties; the audit reads who it is and its audit settings. On a
# tenant of 50,000 mailboxes that is the difference between megabytes and gigabytes.
MAILBOX_FIELDS = (
    "Identity",
    "UserPrincipalName",
    "PrimarySmtpAddress",
    "ExchangeGuid",
    "RecipientTypeDetails",
    "AuditEnabled",
    "AuditLogAgeLimit",
    "DefaultAuditSet",
    "AuditAdmin",
    "AuditDelegate",
    "AuditOwner",
)
# Properties asked for with `$select`, by cmdlet; every property of the others is kept.
CMDLET_SELECT: dict[str, tuple[str, ...]] = {
    "Get-Mailbox": MAILBOX_FIELDS,
    # One entry for every user and computer account: who it is, and whether it bypasses auditing.
    "Get-MailboxAuditBypassAssociation": ("Identity", "Name", "AuditBypassEnabled"),
    # A transport rule has some 200 properties, nearly all conditions; the external-sender
    # warning control reads these (its Conditions and Exceptions list every other one in use).
    "Get-TransportRule": (
        "Identity",
        "Name",
        "Priority",
        "State",
        "Mode",
        "FromScope",
        "PrependSubject",
        "Conditions",
        "Exceptions",
        "ActivationDate",
        "ExpiryDate",
        "StopRuleProcessing",
    ),
}
EXCHANGE_CMDLETS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Get-TransportConfig", {}),
    ("Get-OrganizationConfig", {}),
    ("Get-AdminAuditLogConfig", {}),
    ("Get-InboundConnector", {}),
    ("Get-OutboundConnector", {}),
    ("Get-RemoteDomain", {}),
    ("Get-HostedOutboundSpamFilterPolicy", {}),
    ("Get-DkimSigningConfig", {}),
    ("Get-IRMConfiguration", {}),
    ("Get-OwaMailboxPolicy", {}),
    ("Get-Mailbox", {"ResultSize": "Unlimited"}),
    ("Get-MailboxAuditBypassAssociation", {"ResultSize": "Unlimited"}),
    ("Get-AcceptedDomain", {}),
    ("Get-SharingPolicy", {}),
    ("Get-HostedConnectionFilterPolicy", {}),
    # Exchange Online Protection's threat policies with the rules that scope them, and the
    # preset security policies' rules (as ScubaGear's ExportSecuritySuiteProvider reads them).
    ("Get-EOPProtectionPolicyRule", {}),
    ("Get-MalwareFilterPolicy", {}),
    ("Get-MalwareFilterRule", {}),
    ("Get-HostedContentFilterPolicy", {}),
    ("Get-HostedContentFilterRule", {}),
    ("Get-AntiPhishPolicy", {}),
    ("Get-AntiPhishRule", {}),
    # Defender for Office 365: answered only in a tenant licensed for it.
    ("Get-ATPProtectionPolicyRule", {}),
    ("Get-ATPBuiltInProtectionRule", {}),
    ("Get-SafeLinksPolicy", {}),
    ("Get-SafeLinksRule", {}),
    ("Get-SafeAttachmentPolicy", {}),
    ("Get-SafeAttachmentRule", {}),
    ("Get-AtpPolicyForO365", {}),
    ("Get-TransportRule", {}),
)
COMPLIANCE_CMDLETS: tuple[tuple[str, dict[str, Any]], ...] = (
    # Without DistributionDetail, DistributionStatus reads "Pending" whatever the truth
    # (Get-DlpCompliancePolicy and Get-CaseHoldPolicy references; ScubaGear's sample export).
    ("Get-DlpCompliancePolicy", {"DistributionDetail": True}),
    ("Get-DlpComplianceRule", {}),
    ("Get-RetentionComplianceRule", {}),
    ("Get-UnifiedAuditLogRetentionPolicy", {}),
    ("Get-ProtectionAlert", {}),
)

# Retention policies are read twice (see _retention_policies) and kept as one answer.
RETENTION_PATH = "compliance/Get-RetentionCompliancePolicy"

_ENDPOINT_KEYS = {
    "authority",
    "graph",
    "exchange",
    "compliance",
    "compliance_backend",
    "teams",
    "sharepoint_admin",
    "ca_bundle",
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# How often the connector says how far it has read (the display decides how often to show it).
PROGRESS_SECONDS = 1.0


async def _report_progress(ctx: CollectContext, stats: Stats) -> None:
    """Pages, items, requests and retries so far, once a second, while the reads go on: a
    large tenant takes minutes, and a CI log that says nothing for minutes looks hung."""
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        ctx.progress(stats.progress_line())


class M365Connector(Connector):
    name: ClassVar[str] = "m365"
    title: ClassVar[str] = "Microsoft 365"
    platforms: ClassVar[tuple[Platform, ...]] = ("m365",)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["tenant_id"],
        "properties": {
            "tenant_id": {
                "type": "string",
                "minLength": 1,
                "description": "Tenant id or a verified domain.",
            },
            "client_id": {"type": "string", "minLength": 1},
            "auth": {"enum": ["auto", *METHODS]},
            "certificate_file": {"type": "string", "minLength": 1},
            "certificate_password_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "client_secret_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "federated_token_file": {"type": "string", "minLength": 1},
            "cloud": {"enum": sorted(CLOUDS)},
            "break_glass_accounts": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "mfa_exceptions": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "privileged_roles": {
                "type": "array",
                "description": "Directory roles (display names) judged as highly privileged "
                "(MS.AAD.7.x); default: SCuBA's list.",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
            },
            OPT_IN: {
                "type": "boolean",
                "description": "Read the SharePoint admin API's tenant settings (needs the "
                "SharePoint application permission Sites.FullControl.All and a certificate).",
            },
            "mailbox_properties": {
                "type": "array",
                "description": "Get-Mailbox properties to read beyond MAILBOX_FIELDS.",
                "items": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
            },
            "endpoints": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    key: {"type": "string", "minLength": 1} for key in sorted(_ENDPOINT_KEYS)
                },
            },
            "limits": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "per_host": {"type": "integer", "minimum": 1, "maximum": 64},
                    "request_budget": {"type": "integer", "minimum": 1},
                    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                    "retries": {"type": "integer", "minimum": 0, "maximum": 10},
                    "backoff_seconds": {"type": "number", "minimum": 0},
                    "max_answer_mb": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Cap on one answer, decompressed (MiB).",
                    },
                    "max_run_mb": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Cap on all answers of a run, decompressed (MiB).",
                    },
                },
            },
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.environ: dict[str, str] = dict(os.environ)
        self.stats: dict[str, Any] = {}
        self._bodies: dict[str, bytes] = {}

    def _path(self, value: str | None) -> Path | None:
        return (self.base_dir / value).resolve() if value else None

    def preflight(self, now: dt.datetime) -> None:
        for key in ("certificate_file", "federated_token_file"):
            path = self._path(self.config.get(key))
            if path is not None and not path.is_file():
                raise InputError(
                    f"[m365] {key}: {path} does not exist",
                    hint="paths are relative to the config file",
                )
        bundle = self.config.get("endpoints", {}).get("ca_bundle")
        if bundle and not (self.base_dir / bundle).is_file():
            raise InputError(f"[m365.endpoints] ca_bundle: {self.base_dir / bundle} does not exist")
        for key, value in self.config.get("endpoints", {}).items():
            if key == "ca_bundle":
                continue
            try:
                Destinations.of([value])
            except ValueError:
                raise InputError(
                    f"[m365.endpoints] {key}: {_shown_origin(value)} is not an https:// URL",
                    hint="tokens and secrets are sent to the endpoints only over HTTPS",
                ) from None

    def scope(self) -> dict[str, Any]:
        return {
            "tenant_id": self.config["tenant_id"],
            "cloud": self.config.get("cloud", "global"),
            "auth": self.config.get("auth", "auto"),
            "endpoints": {
                k: v for k, v in self.config.get("endpoints", {}).items() if k != "ca_bundle"
            },
            "break_glass_accounts": list(self.config.get("break_glass_accounts", [])),
            OPT_IN: bool(self.config.get(OPT_IN, False)),
            "collection": self.stats,
        }

    @classmethod
    def permissions(cls) -> list[Permission]:
        return permissions()

    @classmethod
    def grant_guide(cls) -> tuple[dict[str, Any], str]:
        steps = grant_steps()
        return {"grant_steps": steps}, steps

    def _settings(self) -> tuple[AuthSettings, Limits]:
        auth = AuthSettings(
            method=self.config.get("auth", "auto"),
            tenant_id=self.config["tenant_id"],
            client_id=self.config.get("client_id"),
            certificate_file=self._path(self.config.get("certificate_file")),
            certificate_password_env=self.config.get("certificate_password_env"),
            client_secret_env=self.config.get("client_secret_env", "AZURE_CLIENT_SECRET"),
            federated_token_file=self._path(self.config.get("federated_token_file")),
        )
        limits_config = self.config.get("limits", {})
        limits = Limits(
            per_host=limits_config.get("per_host", Limits.per_host),
            budget=limits_config.get("request_budget", Limits.budget),
            timeout_seconds=limits_config.get("timeout_seconds", Limits.timeout_seconds),
            retries=limits_config.get("retries", Limits.retries),
            backoff_seconds=limits_config.get("backoff_seconds", Limits.backoff_seconds),
            # At least 1 MiB each (the schema's minimum): 0 here means "not set".
            max_answer_bytes=limits_config.get("max_answer_mb", 0) * MIB or Limits.max_answer_bytes,
            max_run_bytes=limits_config.get("max_run_mb", 0) * MIB or Limits.max_run_bytes,
        )
        return auth, limits

    def fallback_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        return [("m365", "tenant", str(self.config["tenant_id"]))]

    async def collect(self, ctx: CollectContext) -> None:
        auth, limits = self._settings()
        overrides = dict(self.config.get("endpoints", {}))
        if overrides.get("ca_bundle"):
            overrides["ca_bundle"] = str((self.base_dir / overrides["ca_bundle"]).resolve())
        endpoints = endpoints_for(self.config.get("cloud", "global"), overrides)
        # The other audiences' sign-ins wait for the first token request to be sent: by then
        # azure-identity has made its one MSAL application (the OpenID configuration read, the
        # certificate loaded), which they share instead of each making and loading their own.
        token_requested = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_token_request() -> None:  # in the signing-in thread
            with contextlib.suppress(RuntimeError):  # a straggler after the loop has closed
                loop.call_soon_threadsafe(token_requested.set)

        method, credential = build_credential(auth, endpoints, self.environ, on_token_request)
        tokens = TokenCache(credential, ctx.run_blocking, ctx.register_secret)
        try:
            # The tokens go to these and nowhere else: not to where a next-page link or a
            # redirect points (checked under every request, whoever made it).
            destinations = Destinations.of(
                [
                    endpoints.graph,
                    endpoints.exchange,
                    endpoints.compliance,
                    endpoints.compliance_backend,
                    endpoints.teams,
                ]
            )
        except ValueError as exc:
            raise CollectionError(f"[m365.endpoints]: {exc}") from None
        transport, graph_http, admin_http = make_clients(limits, endpoints.ca_bundle, destinations)
        cloud = endpoints.cloud
        identity = _TenantIdentity(auth.tenant_id)
        exchange = AdminApi(
            admin_http,
            tokens.token,
            kind="exo",
            base=endpoints.exchange,
            scope=cloud.exchange_scope,
            tenant_id=auth.tenant_id,
            now=_now,
            anchor=identity.exchange_anchor,
            stats=transport.stats,
        )
        compliance = AdminApi(
            admin_http,
            tokens.token,
            kind="compliance",
            base=endpoints.compliance,
            scope=cloud.compliance_scope,
            tenant_id=auth.tenant_id,
            now=_now,
            anchor=identity.compliance_anchor,
            backend=endpoints.compliance_backend,
            stats=transport.stats,
        )
        teams = TeamsApi(
            admin_http,
            tokens.token,
            base=endpoints.teams,
            scope=cloud.teams_scope,
            now=_now,
            stats=transport.stats,
        )
        settings = M365Settings(
            break_glass=tuple(self.config.get("break_glass_accounts", [])),
            mfa_exceptions=tuple(self.config.get("mfa_exceptions", [])),
            privileged_roles=tuple(
                self.config.get("privileged_roles", M365Settings.privileged_roles)
            ),
            cloud=str(self.config.get("cloud", "global")),
        )
        join = RegistrationJoin(settings)
        # The sections the run's policies read, and the answers they are made from: a read no
        # wanted section needs is left out (None: every section, every answer).
        needed = None if ctx.wanted is None else frozenset(SECTIONS) & ctx.wanted
        reads = _Reads(reads_for(needed))
        # Every section whose answers are all read is kept, wanted or not: it costs nothing
        # more, and a bundle keeps what evidence it has (secure score beside the vendors).
        wanted = (
            None
            if reads.paths is None
            else frozenset(n for n, r in SECTION_READS.items() if set(r) <= reads.paths)
        )

        sharepoint = SharePointAdmin(
            admin_http,
            tokens.token,
            cloud=cloud,
            override=endpoints.sharepoint_admin,
            enabled=bool(self.config.get(OPT_IN, False)),
            method=method,
            now=_now,
            initial_domain=identity.initial_domain,
            allow=transport.allow,
        )

        def keep(answers: dict[str, Fetched]) -> dict[str, Any]:
            return self._keep_answers(
                ctx, answers, endpoints.graph, exchange, compliance, teams, sharepoint
            )

        try:
            ctx.progress(f"signing in ({method})")
            signing_in = asyncio.ensure_future(tokens.token(cloud.graph_scope))
            tokens.start(
                [
                    scope
                    for scope, prefix in (
                        (cloud.exchange_scope, "exo/"),
                        (cloud.compliance_scope, "compliance/"),
                        (cloud.teams_scope, "teams/"),
                    )
                    if reads.any(prefix)
                ],
                when=_first_done(token_requested.wait(), signing_in),
            )
            await asyncio.sleep(0)  # the sign-in starts in its worker thread...
            # ...while the Graph SDK is imported (a tenth of a second of kiota's modules) and
            # Graph's connection pool is set up.
            from connectors.m365.graph import GraphReader

            graph = GraphReader(
                graph_http,
                tokens.token,
                endpoints.graph,
                cloud.graph_scope,
                _now,
                wait_to_retry=transport.wait_to_retry,
                stats=transport.stats,
            )
            transport.open_pool(endpoints.graph)
            await signing_in
            ctx.progress("reading Graph, Exchange, Security & Compliance and Teams")
            ticker = asyncio.ensure_future(_report_progress(ctx, transport.stats))
            try:
                fetched, early, errors = await self._read_all(
                    ctx,
                    graph,
                    identity,
                    (exchange, compliance, teams),
                    sharepoint,
                    settings,
                    join,
                    keep,
                    reads,
                    wanted,
                )
            finally:
                ticker.cancel()
        finally:
            await graph_http.aclose()
            await admin_http.aclose()
        tenant = _tenant_facts(fetched, auth.tenant_id)
        subject = tenant["default_domain"]
        ctx.add_subject("m365", "tenant", subject)
        graph_answers = {
            p: f for p, f in fetched.items() if p.startswith(("graph/", "sharepoint/"))
        }
        errors.update(keep(graph_answers))
        self._keep_tenant(ctx, tenant, errors)
        graph_sections = frozenset(SECTIONS) - ADMIN_API_SECTIONS
        rest = normalise(
            fetched,
            settings,
            only=graph_sections if wanted is None else graph_sections & wanted,
            join=join,
        )
        order = list(SECTIONS)
        for section in sorted([*early, *rest], key=lambda s: order.index(s.name)):
            ctx.add_section(
                section.name,
                platform="m365",
                subject=subject,
                data=section.data,
                source=section.source,
                raw=section.raw,
                status=section.status,  # type: ignore[arg-type]
                reason=section.reason,
            )
        ctx.progress(
            f"{transport.stats.requests} requests ({transport.stats.retries} retried), "
            f"{tokens.requests} sign-ins"
        )
        self.stats = {
            "requests": transport.stats.requests,
            "retries": transport.stats.retries,
            "sign_ins": tokens.requests,
            "auth": method,
            "compliance_region": compliance.discovery,
        }
        if not any(f.ok for f in fetched.values()):
            raise CollectionError(_first_error(fetched))

    async def _read_all(
        self,
        ctx: CollectContext,
        graph: GraphReader,
        identity: _TenantIdentity,
        apis: tuple[AdminApi, AdminApi, TeamsApi],
        sharepoint: SharePointAdmin,
        settings: M365Settings,
        join: RegistrationJoin,
        keep: Callable[[dict[str, Fetched]], dict[str, Any]],
        reads: _Reads,
        wanted: frozenset[str] | None,
    ) -> tuple[dict[str, Fetched], list[SectionOut], dict[str, Any]]:
        """Everything, concurrently. The admin API and Teams answers usually arrive well before
        the last Graph pages; their evidence and sections are prepared in a worker thread
        meanwhile."""
        exchange, compliance, teams = apis

        async def policies_then_groups(path: str, query: str) -> list[Fetched]:
            # The excluded groups are looked up as soon as the policies are in, not after the
            # longest collection: on a large tenant that is the last users page.
            policies = await graph.collection(path, query)
            groups = _excluded_groups(policies)
            if not groups:
                return [policies]
            looked_up = await graph.batch(f"groups/{g}?$select=id,displayName" for g in groups)
            return [policies, *looked_up.values()]

        # The longest chains of requests first: the first page of the users and of their
        # registration details is on the wire before any other read is begun (each read's
        # first request costs the event loop milliseconds, which those chains would wait out).
        collections = {p: q for p, q in GRAPH_COLLECTIONS if reads.wants(f"graph/v1.0/{p}")}
        sent = {path: asyncio.Event() for path in LONGEST_CHAINS if path in collections}
        feed = {USERS: join.users, REGISTRATIONS: join.details}
        pending = {
            path: asyncio.ensure_future(
                policies_then_groups(path, query)
                if path == CA_POLICIES
                else _as_list(graph.collection(path, query, sent.get(path), feed.get(path)))
            )
            for path, query in collections.items()
        }
        for first_page in sent.values():
            await first_page.wait()
        identity.reading = organisation = asyncio.ensure_future(graph.collection(*ORGANIZATION))
        singles = [p for p in GRAPH_SINGLES if reads.wants(f"graph/v1.0/{p.partition('?')[0]}")]
        batched = asyncio.ensure_future(graph.batch(singles)) if singles else None
        agent_ca = (
            asyncio.ensure_future(graph.collection(*AGENT_CA, version="beta"))
            if reads.wants(f"graph/beta/{AGENT_CA[0]}")
            else None
        )
        privileged = (
            asyncio.ensure_future(_privileged(graph, pending[ROLE_DEFINITIONS], settings))
            if reads.wants(ELIGIBLE_PATH) and ROLE_DEFINITIONS in pending
            else None
        )
        # Waits for the organization (the initial domain names the admin site) and then reads
        # one object: well before the last Graph pages.
        spo_tenant = (
            asyncio.ensure_future(sharepoint.read_tenant()) if reads.wants(TENANT_PATH) else None
        )

        async def graph_part() -> list[Fetched]:
            read = [f for part in await asyncio.gather(*pending.values()) for f in part]
            return [
                await organisation,
                *((await batched).values() if batched else ()),
                *([await agent_ca] if agent_ca else ()),
                *read,
                *(await privileged if privileged else ()),
                *([await spo_tenant] if spo_tenant else ()),
            ]

        async def exchange_part() -> list[Fetched]:
            calls = [
                exchange.invoke(c, p, self._select(c))
                for c, p in EXCHANGE_CMDLETS
                if reads.wants(f"exo/{c}")
            ]
            return list(await asyncio.gather(*calls))

        async def compliance_part() -> list[Fetched]:
            calls = [
                compliance.invoke(c, p)
                for c, p in COMPLIANCE_CMDLETS
                if reads.wants(f"compliance/{c}")
            ]
            if reads.wants(RETENTION_PATH):
                calls.append(_retention_policies(compliance))
            if not calls:
                return []
            await compliance.discover_region()
            return list(await asyncio.gather(*calls))

        async def teams_part() -> list[Fetched]:
            chosen = [path for path in CONFIGURATIONS if reads.wants(f"teams/{path}")]
            return list(await asyncio.gather(*(teams.get(path) for path in chosen)))

        graph_task = asyncio.ensure_future(graph_part())
        admin_parts = await asyncio.gather(exchange_part(), compliance_part(), teams_part())
        admin = {f.path: f for part in admin_parts for f in part}

        async def admin_sections() -> tuple[list[SectionOut], dict[str, Any]]:
            sections = await ctx.run_blocking(self._prepare_admin, admin, settings, wanted)
            # Kept now, so that they are scrubbed while Graph's last pages are still coming.
            return sections, keep(admin)

        early = asyncio.ensure_future(admin_sections())
        found = {f.path: f for f in await graph_task}
        found.update(admin)
        sections, errors = await early
        return found, sections, errors

    def _select(self, cmdlet: str) -> tuple[str, ...]:
        selected = CMDLET_SELECT.get(cmdlet, ())
        if cmdlet == "Get-Mailbox":
            extra = self.config.get("mailbox_properties", [])
            selected += tuple(p for p in extra if p not in selected)
        return selected

    def _prepare_admin(
        self, admin: dict[str, Fetched], settings: M365Settings, wanted: frozenset[str] | None
    ) -> list[SectionOut]:
        self._bodies.update(
            {path: compact_json(f.data) for path, f in admin.items() if f.ok and f.body is None}
        )
        only = ADMIN_API_SECTIONS if wanted is None else ADMIN_API_SECTIONS & wanted
        return normalise(admin, settings, only=only)

    def _keep_answers(
        self,
        ctx: CollectContext,
        answers: dict[str, Fetched],
        graph_base: str,
        exchange: AdminApi,
        compliance: AdminApi,
        teams: TeamsApi,
        sharepoint: SharePointAdmin,
    ) -> dict[str, Any]:
        """Keep each answer read as a raw record (scrubbed from then on, in a worker); return
        what the failed reads said, for `m365/_errors.json`."""
        errors = {}
        for path, found in sorted(answers.items()):
            if path.startswith("graph/"):
                request = {"method": "GET", "url": f"{graph_base}/{path.removeprefix('graph/')}"}
            elif path.startswith("teams/"):
                configuration = path.removeprefix("teams/")
                request = {
                    "method": "GET",
                    "url": teams.url(configuration),
                    "cmdlet": CONFIGURATIONS.get(configuration, ""),
                }
            elif path == TENANT_PATH:
                request = {"method": "GET", "url": sharepoint.endpoint()}
            else:
                api = exchange if path.startswith("exo/") else compliance
                cmdlet = path.split("/", 1)[1]
                request = {
                    "method": "POST",
                    "url": api.endpoint(self._select(cmdlet)),
                    "cmdlet": cmdlet,
                }
            if path == TENANT_PATH and not sharepoint.enabled:
                continue  # not read, by choice (opt-in): its section says why; no read failed
            if found.ok:
                ctx.add_raw(
                    RawRecord(
                        path=f"m365/{path}.json",
                        source=found.source,
                        collected_at=found.collected_at,
                        body=found.body or self._bodies.get(path) or compact_json(found.data),
                        request=request,
                        status=found.status,
                    )
                )
            else:
                errors[path] = {
                    "status": found.status,
                    "error": found.error,
                    "request": request,
                    "collected_at": found.collected_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
        return errors

    @staticmethod
    def _keep_tenant(ctx: CollectContext, tenant: dict[str, str], errors: dict[str, Any]) -> None:
        ctx.add_raw(
            RawRecord(
                path="m365/tenant.json",
                source="m365:tenant",
                collected_at=ctx.now,
                body=json.dumps(tenant, indent=2).encode(),
                request={"derived": "organization, domains"},
            )
        )
        if errors:
            ctx.add_raw(
                RawRecord(
                    path="m365/_errors.json",
                    source="m365:errors",
                    collected_at=ctx.now,
                    body=json.dumps(dict(sorted(errors.items())), indent=1).encode(),
                    request={"derived": "failed reads"},
                )
            )


class _TenantIdentity:
    """The tenant's id and initial domain for the admin API's anchors: from the config when it
    names them, else from Graph's organization (read first, while the tokens are fetched)."""

    def __init__(self, configured: str) -> None:
        self.configured = configured
        self.reading: asyncio.Future[Fetched] | None = None
        self._facts: dict[str, str] | None = None

    async def _known(self) -> dict[str, str]:
        if self._facts is None:
            found = await asyncio.shield(self.reading) if self.reading is not None else None
            fetched = {found.path: found} if found is not None else {}
            self._facts = _tenant_facts(fetched, self.configured)
        return self._facts

    async def initial_domain(self) -> str | None:
        """The tenant's initial domain (`<name>.onmicrosoft.com`), from the config when it
        names it, else from Graph's organization; None when neither says."""
        domain = self.configured
        if not domain.lower().endswith((".onmicrosoft.com", ".onmicrosoft.us")):
            domain = (await self._known())["default_domain"]
        return domain if domain.lower().endswith((".onmicrosoft.com", ".onmicrosoft.us")) else None

    async def exchange_anchor(self) -> str | None:
        tenant = self.configured
        if not _GUID.fullmatch(tenant):
            tenant = (await self._known())["tenant_id"]
        return f"APP:{SYSTEM_MAILBOX}@{tenant}" if _GUID.fullmatch(tenant) else None

    async def compliance_anchor(self) -> str | None:
        domain = self.configured
        if not domain.lower().endswith(".onmicrosoft.com"):
            domain = (await self._known())["default_domain"]
        return (
            f"UPN:{SYSTEM_MAILBOX}@{domain}"
            if domain.lower().endswith(".onmicrosoft.com")
            else None
        )


async def _retention_policies(compliance: AdminApi) -> Fetched:
    """Retention policies with their locations: one call for the usual workloads and one for
    Teams (the cmdlet lists Teams policies only when asked), kept as one recorded answer."""
    both = await asyncio.gather(
        compliance.invoke("Get-RetentionCompliancePolicy", {"DistributionDetail": True}),
        compliance.invoke(
            "Get-RetentionCompliancePolicy", {"DistributionDetail": True, "TeamsPolicyOnly": True}
        ),
    )
    failed = next((f for f in both if not f.ok), None)
    if failed is not None:
        return failed
    merged: dict[str, Any] = {}
    for found in both:
        for policy in found.data if isinstance(found.data, list) else [found.data]:
            # An item of another shape is kept as it came: the normaliser says what it is.
            key = policy.get("Guid") or policy.get("Identity") if isinstance(policy, dict) else None
            merged.setdefault(str(key) if key else f"#{len(merged)}", policy)
    return Fetched(both[0].path, 200, list(merged.values()), both[1].collected_at)


async def _privileged(
    graph: GraphReader, definitions: Awaitable[list[Fetched]], settings: M365Settings
) -> list[Fetched]:
    """PIM's eligible and active assignments and role settings, then the users who hold a
    privileged role: short chains, started with the others, so they end well before the users'
    pages (the longest chain) on a large tenant."""
    eligible, active, policies = await asyncio.gather(
        *(graph.collection(path, query) for path, query in PIM_COLLECTIONS)
    )
    found = [eligible, active, policies]
    # The ids come from the answers: only GUIDs become part of a request's path.
    found_ids = privileged_user_ids((await definitions)[0], [eligible, active], settings)
    users = [u for u in found_ids if _GUID.fullmatch(u)]
    if users:
        looked_up = await graph.batch(f"users/{u}?$select={PRIVILEGED_USER_FIELDS}" for u in users)
        found += looked_up.values()
    return found


def _excluded_groups(policies: Fetched | None) -> list[str]:
    if policies is None or not policies.ok or not isinstance(policies.data, dict):
        return []
    groups: list[str] = []
    for policy in policies.data.get("value") or []:
        users = ((policy.get("conditions") or {}) if isinstance(policy, dict) else {}).get("users")
        if not isinstance(users, dict):
            continue  # an odd policy: the normaliser reports it
        for group in (users.get("excludeGroups") or []) + (users.get("includeGroups") or []):
            if isinstance(group, str) and group not in groups:
                groups.append(group)
    return groups


def _tenant_facts(fetched: dict[str, Fetched], tenant_id: str) -> dict[str, str]:
    """tenant.json: the id, the initial (*.onmicrosoft.com) domain that names the tenant in
    results, and its display name."""
    organisation = fetched.get("graph/v1.0/organization")
    facts = {"tenant_id": tenant_id, "default_domain": tenant_id, "display_name": ""}
    data = organisation.data if organisation is not None and organisation.ok else None
    orgs = data.get("value") if isinstance(data, dict) else None
    for org in (orgs if isinstance(orgs, list) else [])[:1]:
        if not isinstance(org, dict):
            break
        facts["tenant_id"] = str(org.get("id") or tenant_id)
        facts["display_name"] = str(org.get("displayName") or "")
        for domain in org.get("verifiedDomains") or []:
            if isinstance(domain, dict) and domain.get("isInitial") and domain.get("name"):
                facts["default_domain"] = str(domain["name"])
    return facts


class _Reads:
    """Which answers to read: those in `paths` (a `users/*` entry stands for each user), or
    every one when `paths` is None."""

    def __init__(self, paths: frozenset[str] | None) -> None:
        self.paths = paths

    def wants(self, path: str) -> bool:
        return self.paths is None or path in self.paths

    def any(self, prefix: str) -> bool:
        return self.paths is None or any(p.startswith(prefix) for p in self.paths)


async def _first_done(*waits: Awaitable[object]) -> None:
    """Returns when any of `waits` is done (whether it succeeded or not); the others are left
    running, except the ones made here for the purpose."""
    futures = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future, wait in zip(futures, waits, strict=True):
        if future is not wait:
            future.cancel()


async def _as_list(reading: Awaitable[Fetched]) -> list[Fetched]:
    return [await reading]


def _shown_origin(url: str) -> str:
    """A URL's scheme and host, for an error: never the rest (a path or query may hold more
    than it should)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" if parts.hostname else "(no host)"


def _first_error(fetched: dict[str, Fetched]) -> str:
    for found in fetched.values():
        if found.error:
            return found.error
    return "nothing could be read from the tenant"
