"""report.html as a person sees it: rendered by headless Chromium, offline, with scripts
disabled. The screenshot is kept under test-artifacts/ (CI uploads it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import Browser, find_chromium
from conftest import DemoRun

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    opened = Browser(executable)
    try:
        yield opened
    finally:
        opened.close()


def test_the_demo_report_renders_its_summary_and_a_failures_evidence(
    browser: Browser, demo_run: DemoRun
) -> None:
    screenshot = ARTIFACTS / "demo-report.png"
    text = browser.render(demo_run.out / "report.html", screenshot)

    # The summary cards show the run's counts.
    summary = demo_run.results["summary"]
    for status, label in (("pass", "Pass"), ("fail", "Fail"), ("inherited", "Inherited")):
        assert re.search(rf"^{summary[status]}\s*\n\s*{label}\s*$", text, re.MULTILINE), (
            status,
            text[:800],
        )
    # The matrix is there, uncovered citations included.
    assert "Responsibility matrix" in text and "Sanction policy" in text
    # One failing control with its evidence: the SES configuration set sent without TLS.
    finding = text[text.index("aws.ses.tls-required · 123456789012/us-east-1") :]
    finding = finding[: finding.index("Remediation")]
    assert "aws:sesv2 us-east-1" in finding
    assert "aws.ses.configuration_sets/configuration_sets/0/tls_policy" in finding
    assert '"OPTIONAL"' in finding
    # A real image came out, large enough to hold the whole report.
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height > 3000
