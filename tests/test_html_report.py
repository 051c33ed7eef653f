"""Tenant-supplied text is data, never markup: a <script> in a tenant name renders inert."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path

from helpers import members, run_cli
from sample import write_sample

EVIL_TENANT = "<script>alert('tenant')</script>.onmicrosoft.com"
EVIL_ORG = 'Clinic "><img src=x onerror=alert(1)> & Co'
EVIL_VALUE = "</pre><script>alert('value')</script>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_script_in_tenant_name_renders_inert(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    config = write_sample(
        tmp_path / "org",
        organisation=EVIL_ORG,
        tenant=EVIL_TENANT,
        # A value the section cannot hold: the control is an error whose reason quotes it.
        extra_transport={"SmtpClientAuthenticationDisabled": EVIL_VALUE},
        recent=(today - dt.timedelta(days=5)).isoformat(),
    )
    proc = run_cli("audit", "--config", config, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    bundle = next((config.parent / "out").glob("*.zip"))
    html = members(bundle)["report.html"].decode()

    parser = _Tags()
    parser.feed(html)
    tag_names = [tag for tag, _attrs in parser.tags]
    assert "script" not in tag_names
    assert "img" not in tag_names
    assert not any(name.startswith("on") for _tag, attrs in parser.tags for name, _v in attrs)
    text = "".join(parser.text)
    assert EVIL_TENANT in text  # shown to the reader, as text
    assert EVIL_ORG in text
    assert "alert('value')" in text
    # No resource from elsewhere, no script of any kind: the report works offline.
    assert "link" not in tag_names and "iframe" not in tag_names
    assert not any(name == "src" for _tag, attrs in parser.tags for name, _v in attrs)
    # The only links are the policies' https references and the bundle's own raw answers
    # (relative paths of files in the bundle); nothing tenant-supplied becomes a link target.
    links = [str(v) for tag, attrs in parser.tags for name, v in attrs if name == "href"]
    inside = set(members(bundle))
    assert links and all(
        v.startswith("https://learn.microsoft.com/") or (v.startswith("raw/") and v in inside)
        for v in links
    ), links

    markdown = members(bundle)["report.md"].decode()
    # Outside code spans (which Markdown renders literally) no markup survives.
    prose = re.sub(r"`[^`]*`", "", markdown)
    assert "<script" not in prose and "<img" not in prose
    assert "&lt;script&gt;" in prose
