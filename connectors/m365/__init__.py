"""Microsoft 365: Entra ID and SharePoint through Microsoft Graph, Exchange Online and
Security & Compliance through the Exchange admin API. Read-only."""
