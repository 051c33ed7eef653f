"""`commsaudit init DIR`: the files a repository needs to run commsaudit on a schedule, and the
exact steps that let it sign in without a stored cloud secret.

Three files: a starter `commsaudit.toml`, an attestations template, and a GitHub Actions workflow
that audits weekly through the commsaudit action. Each is valid as written (the config loads, the
attestations validate, the workflow parses), so `commsaudit audit` can run against them at once;
what the user must fill in is marked `REPLACE`. The example attestation dates are real, past
dates chosen to be stale, so the org.* controls fail until real records replace them: a template
must never make an audit pass on invented evidence.

The sign-in steps use the Azure CLI, the AWS CLI and the GitHub CLI, no PowerShell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.errors import ConfigError
from connectors.aws.connector import iam_policy
from connectors.m365.grants import app_lines, grant_lines

CONFIG_FILE = "commsaudit.toml"
ATTESTATIONS_FILE = "attestations.yaml"
WORKFLOW_FILE = ".github/workflows/commsaudit.yml"

# What the setup steps create, so the workflow and the printed steps name the same things.
AWS_ROLE_NAME = "commsaudit-audit"
AWS_REGIONS = ("us-east-1",)
ARTIFACT_NAME = "commsaudit-evidence"

GITHUB_OIDC_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
ENTRA_AUDIENCE = "api://AzureADTokenExchange"
AWS_AUDIENCE = "sts.amazonaws.com"

# A real, past date for the examples: it validates (never later than the run) and is more than a
# year old, so every "within the last year" control fails until the user enters real records.
EXAMPLE_DATE = "2025-01-15"
# An example agreement that ended the day after it was signed: it cannot pass for a real BAA.
EXAMPLE_EXPIRED = "2025-01-16"

_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_DOMAIN_TEXT = r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_DOMAIN = re.compile(f"^{_DOMAIN_TEXT}$")
_GUID_TEXT = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_TENANT = re.compile(f"^(?:{_GUID_TEXT}|{_DOMAIN_TEXT})$")


class StarterExistsError(ConfigError):
    """Some starter files are already there; nothing was written."""

    def __init__(self, paths: list[Path]) -> None:
        names = ", ".join(str(p) for p in paths)
        super().__init__(
            f"will not overwrite {names}",
            hint="pass --force to replace them, or choose another directory",
        )
        self.paths = paths


def _check_inputs(tenant: str | None, aws_account: str | None, domains: list[str]) -> None:
    # These values are written into TOML, YAML and shell text: refuse anything that is not the
    # plain identifier it claims to be, rather than quote it into something surprising.
    if tenant is not None and not _TENANT.match(tenant):
        raise ConfigError(
            f"{tenant!r} is not a tenant id (a GUID) or a domain such as contoso.onmicrosoft.com"
        )
    if aws_account is not None and not _ACCOUNT.match(aws_account):
        raise ConfigError(f"{aws_account!r} is not an AWS account id (12 digits)")
    for domain in domains:
        if not _DOMAIN.match(domain):
            raise ConfigError(f"{domain!r} is not a mail domain such as contoso-health.org")


def _toml_list(values: list[str] | tuple[str, ...]) -> str:
    # JSON strings are valid TOML basic strings (the same escapes).
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def starter_config(tenant: str | None, aws_account: str | None, domains: list[str]) -> str:
    """The text of a starter commsaudit.toml (valid for `load_config`)."""
    parts = [
        "# commsaudit.toml, written by `commsaudit init`: what `commsaudit audit` checks.",
        "# Paths are relative to this file. Unknown keys are errors, so a typo never silently",
        "# disables a check. Secrets never live here. Replace each value marked REPLACE.",
        "",
    ]
    if tenant is not None:
        parts += [
            "[m365]",
            f"tenant_id = {json.dumps(tenant)}",
            "# REPLACE: the appId that `az ad app create` printed (the steps `commsaudit init`",
            "# printed). Not a secret.",
            'client_id = "00000000-0000-0000-0000-000000000000"',
            "# Workload identity, no secret or certificate: in GitHub Actions commsaudit asks",
            "# GitHub for an OIDC token (the job needs `permissions: id-token: write`) and the app",
            "# trusts it through its federated credential. Elsewhere, point",
            "# AZURE_FEDERATED_TOKEN_FILE at a token file.",
            'auth = "workload-identity"',
            'cloud = "global"                     # global | gcc | gcc-high | dod',
            "# The only accounts Conditional Access policies may exclude (emergency access).",
            "break_glass_accounts = []",
            "",
        ]
    if aws_account is not None:
        parts += [
            "[aws]",
            f"# Account {aws_account}: the workflow assumes the role {AWS_ROLE_NAME} through",
            "# GitHub's OIDC (aws-actions/configure-aws-credentials), and boto3 picks up its",
            "# short-lived credentials. Nothing to store here.",
            f"regions = {_toml_list(AWS_REGIONS)}   # REPLACE: the regions you use",
            "",
        ]
    parts += [
        "[dns]",
        "# Mail domains whose public posture (SPF, DKIM, DMARC, MTA-STS, TLS-RPT, DNSSEC) is",
        "# audited; the tenant's verified mail domains are added to these.",
        f"domains = {_toml_list(domains)}",
        "# GitHub's hosted runners cannot reach port 25: no STARTTLS probe of the MX hosts.",
        "smtp_probe = false",
        "",
        "[attestations]",
        "# The safeguards no API can show, as dated records: fill in the template.",
        f"file = {json.dumps(ATTESTATIONS_FILE)}",
        "",
        "[evidence]",
        'out = "commsaudit-out"',
        "# The signing key comes from this environment variable (the workflow passes the",
        "# repository secret COMMSAUDIT_SIGNING_KEY). Without a key the audit stops rather than",
        "# write evidence nobody can authenticate; `commsaudit keygen` makes one.",
        'signing_key_env = "COMMSAUDIT_SIGNING_KEY"',
        "require_signature = true",
        "",
        "[policies]",
        'profile = "hipaa"                    # hipaa | hipaa-nprm-2025 | email-posture | scuba',
        "",
    ]
    return "\n".join(parts)


def starter_attestations(tenant: str | None, aws_account: str | None) -> str:
    """The text of an attestations template that the attestations connector accepts."""
    parts = [
        "# The organisational safeguards no API can show (format commsaudit/attestations/v1),",
        "# written by `commsaudit init`. Dates are YYYY-MM-DD and never later than the audit.",
        "#",
        f"# Every date below is an EXAMPLE ({EXAMPLE_DATE}): REPLACE each with the real date.",
        "# They are more than a year old on purpose, so the org.* controls fail until real",
        "# records are here: an audit must never pass on invented evidence.",
        "format: commsaudit/attestations/v1",
        "organisation: Your Organisation (REPLACE)   # the subject of the org.* controls",
        "",
        "# One entry per vendor that creates, receives, keeps or sends PHI for you.",
    ]
    agreements: list[tuple[str, str, str, str]] = []
    if tenant is not None:
        agreements.append(
            ("microsoft", "Microsoft (Data Protection Addendum, HIPAA BAA)", '["*"]', "microsoft")
        )
    if aws_account is not None:
        agreements.append(
            (
                "aws",
                "AWS Business Associate Addendum (AWS Artifact)",
                "[cloudtrail, cloudwatch-logs, kms, s3, ses, sns]",
                "aws",
            )
        )
    if agreements:
        parts.append("business_associate_agreements:")
        for vendor, name, services, document in agreements:
            parts += [
                f"  - vendor: {vendor}",
                f"    name: {name}",
                f"    services: {services}",
                f"    signed: {EXAMPLE_DATE}     # REPLACE: the day the agreement was signed",
                f"    expires: {EXAMPLE_EXPIRED}    # REPLACE or delete: the example has expired",
                f"    document: contracts/{document}-baa.pdf",
            ]
    else:
        parts += [
            "business_associate_agreements: []",
            '#  - {vendor: example-vendor, services: ["*"], signed: 2025-01-15}',
        ]
    parts += [
        "",
        "risk_analyses:",
        f"  - date: {EXAMPLE_DATE}     # REPLACE",
        "    performed_by: REPLACE (who performed it)",
        "",
        "trainings:",
        f"  - date: {EXAMPLE_DATE}     # REPLACE",
        "    program: Annual HIPAA security awareness",
        "    workforce: 1               # REPLACE: people who must take it",
        "    completed: 0               # REPLACE: people who completed it",
        "",
        "restore_tests:",
        f"  - date: {EXAMPLE_DATE}     # REPLACE",
        "    system: REPLACE (the system restored, e.g. the mail archive)",
        "    restore_hours: 0           # REPLACE: hours until the system was usable again",
        "    succeeded: false           # REPLACE",
        "",
        "incident_response_reviews:",
        f"  - date: {EXAMPLE_DATE}     # REPLACE",
        "    reviewed_by: REPLACE (e.g. the Security Officer)",
        "",
        "compliance_audits:",
        f"  - date: {EXAMPLE_DATE}     # REPLACE",
        "    auditor: REPLACE (the assessor)",
        "",
    ]
    if agreements:
        parts.append("vendor_verifications:")
        for vendor, _name, _services, _document in agreements:
            parts += [
                f"  - vendor: {vendor}",
                f"    date: {EXAMPLE_DATE}     # REPLACE",
                "    method: SOC 2 Type II report reviewed",
            ]
    else:
        parts.append("vendor_verifications: []")
    parts += [
        "",
        "# For --profile scuba: the CISA SCuBA policies no read-only API can show, checked by",
        "# hand (MS.AAD.2.2v1, MS.AAD.4.1v1, MS.AAD.8.3v1, MS.SECURITYSUITE.3.5v1 and 4.2v1).",
        "manual_checks: []",
        f"#  - {{check: MS.AAD.4.1v1, date: {EXAMPLE_DATE}, performed_by: SOC lead, met: true,",
        "#     how: Entra diagnostic settings send sign-in and audit logs to the SIEM}",
    ]
    parts.append("")
    return "\n".join(parts)


# The workflow is plain text with placeholders rather than an f-string: GitHub's `${{ }}`
# expressions would otherwise need doubled braces everywhere. Each action is pinned by commit
# SHA with its release in a comment, the same pins as action.yml and .github/workflows (which
# Dependabot updates; tests/test_action_pins.py fails until this copy follows).
_WORKFLOW = """\
# commsaudit, written by `commsaudit init`: audit every Monday at 06:00 UTC and on demand, put the
# report in the job summary, keep the signed evidence bundle, and fail the job when a control
# fails or cannot be judged. Sign-in is through GitHub's OIDC: no cloud secret is stored in this
# repository.
#
# Needs: the repository secret COMMSAUDIT_SIGNING_KEY (`commsaudit keygen --out signing.pem`,
# then `gh secret set COMMSAUDIT_SIGNING_KEY < signing.pem`), and the Entra app and IAM role
# that `commsaudit init` printed the steps for.
name: commsaudit

on:
  schedule:
    - cron: "0 6 * * 1"
  workflow_dispatch:

permissions:
  contents: read
  # OIDC tokens for Entra workload identity and AWS role assumption.
  id-token: write
  # SARIF upload to code scanning.
  security-events: write
  # Reading the previous run's evidence artifact (the baseline).
  actions: read

concurrency:
  group: commsaudit-${{ github.ref }}
  cancel-in-progress: false

jobs:
  audit:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1
        with:
          persist-credentials: false
@@AWS@@
      # The last completed run's bundle, passing or failing; the first run has none.
      - name: Previous run's evidence
        uses: dawidd6/action-download-artifact@b6e2e70617bc3265edd6dab6c906732b2f1ae151 # v21
        with:
          workflow: commsaudit.yml
          name: @@ARTIFACT@@
          path: baseline/
          branch: ${{ github.ref_name }}
          workflow_conclusion: completed
          search_artifacts: true
          if_no_artifact_found: warn

      - name: Baseline bundle
        id: baseline
        shell: bash
        run: |
          # Bundle names start with the UTC time: the last in glob order is the newest.
          shopt -s nullglob
          bundles=(baseline/commsaudit-*.zip)
          if [ "${#bundles[@]}" -gt 0 ]; then
            echo "bundle=${bundles[${#bundles[@]}-1]}" >> "$GITHUB_OUTPUT"
          fi

      - name: Audit
        # REPLACE OWNER with the GitHub user or organisation that publishes the commsaudit
        # action, and COMMIT_SHA with the full commit SHA of the release you reviewed:
        #   gh api repos/OWNER/commsaudit/commits/v@@VERSION@@ --jq .sha
        # A tag can be moved, a commit cannot, and organisations that require SHA pins
        # reject tags. A Dependabot `github-actions` entry keeps every pin here up to date.
        uses: OWNER/commsaudit@COMMIT_SHA # v@@VERSION@@
        with:
          config: @@CONFIG@@
          signing-key: ${{ secrets.COMMSAUDIT_SIGNING_KEY }}
          baseline: ${{ steps.baseline.outputs.bundle }}
          # any: every failed control fails the job until fixed or waived; new: only failures
          # that were not failing in the previous run. A control that could not be judged
          # (error) fails the job too, whatever fail-on says (exit 3).
          fail-on: any
          sarif: "true"
          out: commsaudit-out
          artifact-name: @@ARTIFACT@@
          retention-days: "90"
"""

_AWS_STEP = """\

      # Short-lived credentials for the read-only role; boto3's standard chain picks them up.
      - name: AWS credentials (OIDC)
        uses: aws-actions/configure-aws-credentials@e6de054238d6b7531b4efff3b6587d9aade6a06c # v6.2.3
        with:
          role-to-assume: arn:aws:iam::@@ACCOUNT@@:role/@@ROLE@@
          role-session-name: commsaudit-${{ github.run_id }}
          aws-region: @@REGION@@
"""  # noqa: E501 (the pinned `uses:` line is as long as its commit SHA makes it)


def starter_workflow(aws_account: str | None, config_path: str = CONFIG_FILE) -> str:
    """The text of `.github/workflows/commsaudit.yml` for one tenant."""
    aws = ""
    if aws_account is not None:
        aws = (
            _AWS_STEP.replace("@@ACCOUNT@@", aws_account)
            .replace("@@ROLE@@", AWS_ROLE_NAME)
            .replace("@@REGION@@", AWS_REGIONS[0])
        )
    return (
        _WORKFLOW.replace("@@AWS@@\n", aws)
        .replace("@@ARTIFACT@@", ARTIFACT_NAME)
        .replace("@@CONFIG@@", config_path)
        .replace("@@VERSION@@", __version__)
    )


def write_starter(
    directory: Path,
    *,
    tenant: str | None,
    aws_account: str | None,
    domains: list[str],
    force: bool,
) -> list[Path]:
    """Write the starter files into `directory` (a repository's root) and return their paths.

    Refuses, writing nothing, when any of them exists and `force` is false: a half-written set
    would leave a config pointing at an attestations file the user never saw.
    """
    _check_inputs(tenant, aws_account, domains)
    contents = {
        CONFIG_FILE: starter_config(tenant, aws_account, domains),
        ATTESTATIONS_FILE: starter_attestations(tenant, aws_account),
        WORKFLOW_FILE: starter_workflow(aws_account),
    }
    targets = {name: directory / name for name in contents}
    existing = [path for path in targets.values() if path.exists()]
    if existing and not force:
        raise StarterExistsError(existing)
    written = []
    for name, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(contents[name], encoding="utf-8")
        written.append(path)
    return written


def trust_policy(aws_account: str, repository: str) -> dict[str, Any]:
    """The IAM role trust policy that lets GitHub Actions in `repository` assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "Federated": f"arn:aws:iam::{aws_account}:oidc-provider/{GITHUB_OIDC_HOST}"
                },
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    # Only the default branch's runs (where the schedule runs) may assume the
                    # role, as for the Entra federated credential: not every branch or fork PR.
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": AWS_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": federated_subject(repository),
                    },
                },
            }
        ],
    }


def federated_subject(repository: str) -> str:
    # Scheduled runs use the default branch; a job with `environment:` would present
    # repo:OWNER/REPO:environment:NAME instead.
    return f"repo:{repository}:ref:refs/heads/main"


def _quoted_json(value: Any) -> list[str]:
    """`value` as pretty JSON inside single quotes, one shell word over several lines. Unlike a
    here-document, this still works when the indented text is pasted into a shell."""
    text = json.dumps(value, indent=2)
    if "'" in text:  # never happens with these documents; a quote would end the word
        raise ValueError("JSON with a single quote cannot be quoted this way")
    lines = text.splitlines()
    lines[0] = "'" + lines[0]
    lines[-1] += "'"
    return lines


def _m365_steps(tenant: str, repository: str) -> list[str]:
    credential = {
        "name": "github-" + repository.replace("/", "-") + "-main",
        "issuer": GITHUB_OIDC_ISSUER,
        "subject": federated_subject(repository),
        "audiences": [ENTRA_AUDIENCE],
        "description": "commsaudit scheduled audit from GitHub Actions",
    }
    lines = [
        "# Run in bash with the Azure CLI, as a Global Administrator (or a Privileged Role",
        "# Administrator): an Entra app that signs in with GitHub's OIDC token and only reads.",
        f"az login --tenant {tenant} --allow-no-subscriptions",
        "",
        *app_lines(),
        "",
        "# Trust GitHub Actions' OIDC tokens from this repository's main branch: no secret.",
        "# (A job that uses `environment:` presents repo:OWNER/REPO:environment:NAME instead.)",
        'az ad app federated-credential create --id "$APP_ID" --parameters ',
    ]
    lines[-1] += _quoted_json(credential)[0]
    lines += _quoted_json(credential)[1:]
    return [*lines, "", *grant_lines()]


def _aws_steps(aws_account: str, repository: str) -> list[str]:
    role_arn = f"arn:aws:iam::{aws_account}:role/{AWS_ROLE_NAME}"
    lines = [
        "# Run with the AWS CLI as an IAM administrator of the account: a read-only role that",
        "# GitHub Actions in this repository assume through OIDC.",
        "",
        "# GitHub's OIDC provider, once per account (skip this if the account has it already).",
        f"aws iam create-open-id-connect-provider --url {GITHUB_OIDC_ISSUER} \\",
        f"  --client-id-list {AWS_AUDIENCE}",
        "",
        "# The role, trusted by GitHub Actions in this repository only.",
        f"aws iam create-role --role-name {AWS_ROLE_NAME} --assume-role-policy-document ",
    ]
    trust = _quoted_json(trust_policy(aws_account, repository))
    lines[-1] += trust[0]
    lines += trust[1:]
    lines += [
        "",
        "# Its permissions: the read calls `commsaudit permissions` lists, and nothing else.",
        f"aws iam put-role-policy --role-name {AWS_ROLE_NAME} --policy-name commsaudit-read \\",
        "  --policy-document ",
    ]
    policy = _quoted_json(iam_policy())
    lines[-1] += policy[0]
    lines += policy[1:]
    lines += [
        "",
        f"# The workflow written by `commsaudit init` assumes {role_arn};",
        "# the example workflow with a matrix of tenants reads it from a repository variable.",
        f"gh variable set COMMSAUDIT_AWS_ROLE_ARN --repo {repository} --body {role_arn}",
    ]
    return lines


def setup_steps(tenant: str | None, aws_account: str | None, repository: str | None) -> str:
    """The exact, PowerShell-free steps that let the workflow sign in without stored secrets.

    Each numbered step's body is indented bash (what is not a command is a `#` comment), so it
    can be pasted into a shell as it is.
    """
    _check_inputs(tenant, aws_account, [])
    if repository is not None and not _REPOSITORY.match(repository):
        raise ConfigError(f"{repository!r} is not a GitHub repository (OWNER/REPO)")
    repo = repository or "OWNER/REPO"
    sections: list[tuple[str, list[str]]] = []
    if tenant is not None:
        sections.append((f"Microsoft 365, tenant {tenant}", _m365_steps(tenant, repo)))
    if aws_account is not None:
        sections.append((f"AWS, account {aws_account}", _aws_steps(aws_account, repo)))
    sections.append(
        (
            "The evidence bundle's signing key, as a repository secret",
            [
                "# Only the workflow needs the private key; keep signing.pub.pem for whoever",
                "# verifies the bundles (commsaudit verify BUNDLE --key signing.pub.pem).",
                "commsaudit keygen --out signing.pem",
                f"gh secret set COMMSAUDIT_SIGNING_KEY --repo {repo} < signing.pem",
                "rm signing.pem",
            ],
        )
    )
    sections.append(
        (
            "The first run",
            [
                "# Fill in every REPLACE in commsaudit.toml and attestations.yaml, commit them",
                f"# with {WORKFLOW_FILE}, then run the workflow once by hand:",
                f"gh workflow run commsaudit.yml --repo {repo}",
            ],
        )
    )
    out = ["Set up sign-in for the scheduled audit, with no stored cloud secret:"]
    if repository is None:
        out.append("(replace OWNER/REPO with the repository that runs the workflow)")
    for number, (title, body) in enumerate(sections, start=1):
        out += ["", f"{number}. {title}"]
        out += [f"   {line}" if line else "" for line in body]
    return "\n".join(out) + "\n"
