"""The redactor against names an attacker controls: it must never edit evidence that is not a
secret (two markers around a mailbox used to cut it out of the answer, see
tests/test_redaction.py, which holds the through-the-CLI case), and must stay linear however
many key markers a tenant's display names repeat."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO

_MANY_MARKERS = """
import json, sys
from auditor.redact import Redactor
users = [
    {"id": f"{i:08d}", "displayName": "-----BEGIN PRIVATE KEY-----",
     "userPrincipalName": f"user{i}@contoso.example", "jobTitle": "x" * 200}
    for i in range(8000)
]
text = json.dumps({"value": users})
out = Redactor().text(text)
sys.stdout.write(json.dumps({"same": out == text, "size": len(text)}))
"""


def test_thousands_of_unclosed_key_markers_are_scrubbed_in_one_pass() -> None:
    # Each marker used to start a search to the end of the whole answer (2.9 MB here): about two
    # minutes before. The timeout only stops a hang; a linear scan takes a fraction of a second.
    proc = subprocess.run(
        [sys.executable, "-c", _MANY_MARKERS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(proc.stdout)
    assert outcome == {"same": True, "size": outcome["size"]}  # nothing that is not a key
