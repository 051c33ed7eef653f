"""moto's server on 127.0.0.1 for the AWS tests: the account it plays, credentials, seeding
clients, and running an audit against it. The server itself is a fixture in conftest.py."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from auditor.aws.session import unprefix_account_host

from helpers import run_cli

ACCOUNT = "123456789012"  # moto's account
SUBJECT = f"{ACCOUNT}/us-east-1"
KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "commsaudit-test-secret-0123456789",
}


def post(url: str, path: str, body: bytes) -> None:
    # A form content type would hide the body from moto's handler.
    request = urllib.request.Request(
        url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request).close()


def env(tmp_path: Path, keys: dict[str, str] = KEYS) -> dict[str, str]:
    # Credentials for the child process only, and nothing from this machine's AWS setup.
    return {
        **keys,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def client(url: str, service: str) -> Any:
    """A boto3 client on the moto server, as the tests' seeding side."""
    made = boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    if service == "s3control":
        unprefix_account_host(made, url)
    return made


def audit(
    tmp_path: Path,
    url: str,
    *extra: str,
    regions: str = '["us-east-1"]',
    keys: dict[str, str] = KEYS,
    aws_config: str = "",
) -> tuple[int, dict[tuple[str, str], dict[str, Any]], str]:
    """`commsaudit audit` of the aws.* controls against the server; (exit code, results by
    (control, subject), stderr). `aws_config` adds lines to the [aws] section."""
    (tmp_path / "commsaudit.toml").write_text(
        f'[aws]\nendpoint_url = "{url}"\n'
        + (f"regions = {regions}\n" if regions else "")
        + aws_config
        + 'max_attempts = 1\n[evidence]\nout = "out"\n[policies]\ncontrols = ["aws.*"]\n'
    )
    proc = run_cli(
        "audit",
        "--config",
        tmp_path / "commsaudit.toml",
        "--format",
        "json",
        *extra,
        cwd=tmp_path,
        env=env(tmp_path, keys),
    )
    results = {}
    if proc.stdout.strip():
        results = {(r["control"], r["subject"]): r for r in json.loads(proc.stdout)["results"]}
    return proc.returncode, results, proc.stderr


@contextlib.contextmanager
def throttling_proxy(url: str, operation: str) -> Iterator[str]:
    """An endpoint on 127.0.0.1 that passes every request to the moto server at `url`, except
    the JSON-protocol `operation` (by its X-Amz-Target), which AWS's throttling answer meets."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("X-Amz-Target", "").endswith("." + operation):
                answer = json.dumps(
                    {"__type": "ThrottlingException", "message": "Rate exceeded"}
                ).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            request = urllib.request.Request(
                url + self.path,
                data=body if self.command != "GET" else None,
                method=self.command,
                headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
            )
            try:
                with urllib.request.urlopen(request) as response:
                    status, headers, payload = response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                status, headers, payload = error.code, error.headers, error.read()
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
