"""Small sample organisations written by the tests (the demo's shape, with chosen contents)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_ATTESTATIONS = """\
organisation: {organisation}
business_associate_agreements:
  - vendor: microsoft
    services: ["*"]
    signed: 2024-01-10
    notes: {notes}
risk_analyses:
  - date: {recent}
    performed_by: Security team
trainings:
  - date: {recent}
    workforce: 10
    completed: 10
restore_tests:
  - date: {recent}
    system: archive
    restore_hours: 4
    succeeded: true
incident_response_reviews:
  - date: {recent}
    reviewed_by: CISO
"""


def tenant_sections(
    tenant: str, *, smtp_auth_disabled: bool = True, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    transport = {
        "Identity": "Transport Settings",
        "SmtpClientAuthenticationDisabled": smtp_auth_disabled,
    }
    transport.update(extra or {})
    return {
        "format": "commsaudit/snapshot/v1",
        "scope": {"m365": {"tenant": [tenant]}},
        "sections": [
            {
                "name": "m365.vendors",
                "platform": "m365",
                "subject": tenant,
                "status": "ok",
                "source": "graph:test",
                "data": [
                    {"vendor": "microsoft", "name": "Microsoft", "services": ["exchange-online"]}
                ],
            },
            {
                "name": "m365.exo.transport_config",
                "platform": "m365",
                "subject": tenant,
                "status": "ok",
                "source": "exo:Get-TransportConfig",
                "data": [transport],
            },
            {
                "name": "m365.exo.organization_config",
                "platform": "m365",
                "subject": tenant,
                "status": "ok",
                "source": "exo:Get-OrganizationConfig",
                "data": [{"OAuth2ClientProfileEnabled": True}],
            },
            {
                "name": "m365.exo.admin_audit_log_config",
                "platform": "m365",
                "subject": tenant,
                "status": "ok",
                "source": "exo:Get-AdminAuditLogConfig",
                "data": [{"UnifiedAuditLogIngestionEnabled": True}],
            },
        ],
    }


def write_sample(
    directory: Path,
    *,
    organisation: str = "Example Clinic",
    tenant: str = "example.onmicrosoft.com",
    notes: str = "none",
    recent: str = "2026-10-01",
    smtp_auth_disabled: bool = True,
    extra_transport: dict[str, Any] | None = None,
    config_extra: str = "",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "attestations.yaml").write_text(
        DEFAULT_ATTESTATIONS.format(
            organisation=json.dumps(organisation), notes=json.dumps(notes), recent=recent
        )
    )
    sections = tenant_sections(tenant, smtp_auth_disabled=smtp_auth_disabled, extra=extra_transport)
    (directory / "tenant.json").write_text(json.dumps(sections))
    config = directory / "commsaudit.toml"
    config.write_text(
        '[attestations]\nfile = "attestations.yaml"\n[replay]\nfiles = ["tenant.json"]\n'
        '[evidence]\nout = "out"\n' + config_extra
    )
    return config
