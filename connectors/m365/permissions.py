"""The least privilege the Microsoft 365 connector needs, and which permission each read uses
(so a 403 can name it)."""

from __future__ import annotations

from connectors.base import Permission

# Recorded Graph path prefix -> the application permission that allows the read.
GRAPH_PERMISSIONS: dict[str, str] = {
    "graph/v1.0/identity/conditionalAccess": "Policy.Read.All",
    "graph/beta/identity/conditionalAccess": "Policy.Read.All",
    "graph/v1.0/policies/authenticationMethodsPolicy": "Policy.Read.AuthenticationMethod",
    "graph/v1.0/policies": "Policy.Read.All",
    # PIM's role settings: RoleManagement.Read.Directory, already granted for the roles, covers
    # them (the narrower RoleManagementPolicy.Read.Directory would be one more grant).
    "graph/v1.0/policies/roleManagementPolicyAssignments": "RoleManagement.Read.Directory",
    "graph/v1.0/reports/authenticationMethods": "AuditLog.Read.All",
    "graph/v1.0/roleManagement/directory": "RoleManagement.Read.Directory",
    "graph/v1.0/domains": "Domain.Read.All",
    "graph/v1.0/organization": "Organization.Read.All",
    "graph/v1.0/admin/sharepoint/settings": "SharePointTenantSettings.Read.All",
    "graph/v1.0/security/secureScores": "SecurityEvents.Read.All",
    "graph/v1.0/users": "User.Read.All",
    "graph/v1.0/groups": "GroupMember.Read.All",
    "graph/v1.0/servicePrincipals": "Application.Read.All",
}
ADMIN_API_PERMISSION = "Exchange.ManageAsApp"
READER_ROLE = "Global Reader"
# The Teams admin API's token resource, by the name Entra shows for it. It publishes no
# application permission: what an app may read there is what its Entra role allows (Microsoft's
# "Application-based authentication in Teams PowerShell Module"; ScubaGear's API catalog lists
# Global Reader as the role its Teams reads need).
TEAMS_API = "Skype and Teams Tenant Admin API"
# The SharePoint admin API (connectors/m365/sharepoint.py): opt-in, see SHAREPOINT_WHY.
SHAREPOINT_API = "Office 365 SharePoint Online"
SHAREPOINT_APP_ID = "00000003-0000-0ff1-ce00-000000000000"
SHAREPOINT_PERMISSION = "Sites.FullControl.All"
SHAREPOINT_OPT_IN = "read_sharepoint_admin"
SHAREPOINT_WHY = (
    "OPT-IN, only with [m365] read_sharepoint_admin = true: OneDrive sharing, default sharing "
    "links, 'Anyone' link expiry and permissions, verification-code reauthentication (SCuBA "
    "MS.SHAREPOINT.1.2-3.3), which only the SharePoint admin API shows. SharePoint has no "
    "narrower permission for its tenant settings, and this one also lets the app read and "
    "change every site and file: grant it only if you accept that. SharePoint accepts it only "
    "from an app that signs in with a certificate or a federated credential, not a client "
    "secret"
)


def graph_permission(recorded: str) -> str:
    for prefix, permission in sorted(GRAPH_PERMISSIONS.items(), key=lambda kv: -len(kv[0])):
        if recorded.startswith(prefix):
            return permission
    return "Directory.Read.All"


def permissions() -> list[Permission]:
    out = [
        Permission(f"Microsoft Graph application permission {p}", why)
        for p, why in (
            (
                "Policy.Read.All",
                "Conditional Access, authentication strengths, security defaults, authorization "
                "policy, app management policies",
            ),
            ("Policy.Read.AuthenticationMethod", "authentication methods policy"),
            ("AuditLog.Read.All", "MFA registration (userRegistrationDetails; needs Entra ID P1)"),
            (
                "User.Read.All",
                "which accounts are enabled members, and break-glass accounts by name",
            ),
            ("GroupMember.Read.All", "names of groups excluded from Conditional Access"),
            (
                "Application.Read.All",
                "which permissions users may consent to as 'low impact' (the delegated "
                "permission classifications of Microsoft Graph, Exchange Online, SharePoint and "
                "the other APIs that reach user data)",
            ),
            (
                "RoleManagement.Read.Directory",
                "directory roles and their assignments; PIM's eligible and active assignments "
                "and role settings (PIM needs Entra ID P2)",
            ),
            ("Domain.Read.All", "verified domains that send mail (DKIM)"),
            ("Organization.Read.All", "the tenant's identity"),
            ("SharePointTenantSettings.Read.All", "SharePoint and OneDrive sharing settings"),
            ("SecurityEvents.Read.All", "secure score, kept as extra evidence"),
        )
    ]
    out += [
        Permission(
            f"Office 365 Exchange Online application permission {ADMIN_API_PERMISSION}",
            "lets the app call the Exchange admin API (Get- cmdlets only)",
        ),
        Permission(
            f"Microsoft Entra role {READER_ROLE} for the app's service principal",
            "read-only access to Exchange Online, Security & Compliance and Teams settings "
            "(or the Exchange role group View-Only Organization Management for Exchange)",
        ),
        Permission(
            f"{TEAMS_API} (no permission to add)",
            f"Teams meeting, external access, client and app settings (GETs of "
            f"/Skype.Policy/configurations); the {READER_ROLE} role authorises them",
        ),
        Permission(
            f"{SHAREPOINT_API} application permission {SHAREPOINT_PERMISSION}", SHAREPOINT_WHY
        ),
    ]
    return out
