"""How an administrator grants the Microsoft 365 connector what it reads, without PowerShell:
Azure CLI steps built from the connector's own permission list (`commsaudit permissions` prints
them; `commsaudit init` adds the GitHub Actions federated credential around them)."""

from __future__ import annotations

from connectors.m365.permissions import (
    ADMIN_API_PERMISSION,
    READER_ROLE,
    SHAREPOINT_API,
    SHAREPOINT_APP_ID,
    SHAREPOINT_OPT_IN,
    SHAREPOINT_PERMISSION,
    TEAMS_API,
    permissions,
)

APP_NAME = "commsaudit-reader"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
# The built-in role's template id is the same in every tenant.
GLOBAL_READER_ROLE_ID = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
_GRAPH_PREFIX = "Microsoft Graph application permission "


def graph_permissions() -> list[str]:
    """The Graph application permissions, from the connector's own list (`commsaudit
    permissions`), so the steps cannot drift from what the connector reads."""
    return [
        p.name.removeprefix(_GRAPH_PREFIX)
        for p in permissions()
        if p.name.startswith(_GRAPH_PREFIX)
    ]


def app_lines() -> list[str]:
    return [
        "# The app registration and its service principal.",
        f"APP_ID=$(az ad app create --display-name {APP_NAME} \\",
        "  --sign-in-audience AzureADMyOrg --query appId -o tsv)",
        'SP_ID=$(az ad sp create --id "$APP_ID" --query id -o tsv)',
        'echo "In commsaudit.toml [m365], set client_id = \\"$APP_ID\\""',
    ]


def grant_lines() -> list[str]:
    """The read-only permissions, their consent and the reader role, for the app in $APP_ID
    and its service principal in $SP_ID."""
    # The service principal's id is only known when the steps run: close the quotes around it.
    role_assignment = (
        '{"principalId": "\'"$SP_ID"\'", "roleDefinitionId": "'
        + GLOBAL_READER_ROLE_ID
        + '", "directoryScopeId": "/"}'
    )
    return [
        "# Microsoft Graph application permissions, read only.",
        f"GRAPH={GRAPH_APP_ID}",
        "for permission in \\",
        *[f"    {name} \\" for name in graph_permissions()],
        "    ; do",
        '  role=$(az ad sp show --id "$GRAPH" \\',
        "    --query \"appRoles[?value=='$permission'].id | [0]\" -o tsv)",
        '  az ad app permission add --id "$APP_ID" --api "$GRAPH" --api-permissions "$role=Role"',
        "done",
        "",
        f"# Office 365 Exchange Online {ADMIN_API_PERMISSION}: the Exchange admin API (Get- only).",
        f"EXO={EXCHANGE_APP_ID}",
        'role=$(az ad sp show --id "$EXO" \\',
        f"  --query \"appRoles[?value=='{ADMIN_API_PERMISSION}'].id | [0]\" -o tsv)",
        'az ad app permission add --id "$APP_ID" --api "$EXO" --api-permissions "$role=Role"',
        "",
        "# Admin consent for those application permissions.",
        'az ad app permission admin-consent --id "$APP_ID"',
        "",
        f"# OPT-IN, left out unless you uncomment it: {SHAREPOINT_API} {SHAREPOINT_PERMISSION},",
        f"# for [m365] {SHAREPOINT_OPT_IN} = true (SCuBA's OneDrive and sharing-link controls,",
        "# MS.SHAREPOINT.1.2-3.3; without it they are `error`). SharePoint has no narrower",
        "# permission for its tenant settings: this one also lets the app read and change every",
        "# site and file. SharePoint takes it only from an app that signs in with a certificate",
        "# or a federated credential, not a client secret.",
        f"# SPO={SHAREPOINT_APP_ID}",
        '# role=$(az ad sp show --id "$SPO" \\',
        f"#   --query \"appRoles[?value=='{SHAREPOINT_PERMISSION}'].id | [0]\" -o tsv)",
        '# az ad app permission add --id "$APP_ID" --api "$SPO" --api-permissions "$role=Role"',
        '# az ad app permission admin-consent --id "$APP_ID"',
        "",
        f"# The {READER_ROLE} role for the app's service principal: Exchange Online, Security &",
        f"# Compliance and Teams settings are read through it (the {TEAMS_API}",
        "# has no permission to add: the role is what lets the app read Teams settings).",
        "# Right after `az ad sp create` the directory may not know the principal yet: if it",
        "# says so, wait a minute and retry.",
        "# National clouds: graph.microsoft.us (GCC High) or dod-graph.microsoft.us (DoD) here,",
        '# and cloud = "gcc-high" or "dod" in commsaudit.toml.',
        "az rest --method POST \\",
        "  --url https://graph.microsoft.com/v1.0/roleManagement/directory/roleAssignments \\",
        "  --headers Content-Type=application/json \\",
        f"  --body '{role_assignment}'",
    ]


def grant_steps() -> str:
    """`commsaudit permissions`: the same grants for an app that signs in with a certificate
    (anywhere), with a pointer to `init` for GitHub Actions' federated credential."""
    lines = [
        "Grant them without PowerShell: in bash with the Azure CLI, as a Global Administrator (or",
        "a Privileged Role Administrator). The Entra admin center works too.",
        "",
        "az login --tenant TENANT --allow-no-subscriptions",
        "",
        *app_lines(),
        "",
        "# Sign-in: a certificate (preferred; its key stays with you) or, for GitHub Actions, a",
        "# federated credential with no secret at all (`commsaudit init --tenant TENANT",
        "# --repository OWNER/REPO` prints that step).",
        'az ad app credential reset --id "$APP_ID" --cert @commsaudit.crt --append',
        "",
        *grant_lines(),
    ]
    return "\n".join(lines) + "\n"
