"""Email posture from public DNS: SPF, DKIM, DMARC, MTA-STS, TLS-RPT, DNSSEC/DANE, and STARTTLS
on the MX hosts. Read-only: it queries and connects, never changes a zone."""
