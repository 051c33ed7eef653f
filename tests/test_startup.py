"""`commsaudit --help` and `--version` import almost nothing: the engine, the SDKs, the reports
and the sandboxes are imported when a command runs, not to print a usage line."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO, run_cli

_HEAVY = (
    "azure", "boto3", "botocore", "connectors", "cryptography", "httpx", "jinja2", "jsonschema",
    "jsonschema_rs", "kiota_abstractions", "msgraph", "pulumi", "re2", "rich", "yaml",
)  # fmt: skip

_PROBE = """
import json, sys
from auditor import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


def _imported_by(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    imported: set[str] = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    return imported


def test_help_and_version_import_none_of_the_heavy_packages() -> None:
    for args in (["--help"], ["--version"], ["audit", "--help"]):
        assert sorted(set(_HEAVY) & _imported_by(*args)) == [], args


def test_version_and_help_still_answer() -> None:
    version = run_cli("--version", cwd=REPO)
    assert version.returncode == 0 and version.stdout.startswith("commsaudit ")
    usage = run_cli("audit", "--help", cwd=REPO)
    assert usage.returncode == 0 and "--output-formats" in usage.stdout
