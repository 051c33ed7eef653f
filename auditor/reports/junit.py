"""junit.xml: one testcase per control and subject, for CI test reporters."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from auditor.reports.common import ReportInput, counts
from auditor.timeutil import parse_isoz

# What XML 1.0 cannot hold at all (C0 controls but tab and line breaks, lone surrogates, U+FFFE
# and U+FFFF) and the C1 controls it discourages: ElementTree writes them as they are, and the
# file is then not well-formed. Each becomes the replacement character.
_NOT_XML = re.compile("[^\t\n\r\u0020-\u007e\u00a0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(root: ET.Element) -> None:
    """Every text and attribute value under `root` made well-formed (names and reasons come from
    tenants and records)."""
    for element in root.iter():
        element.attrib = {key: _NOT_XML.sub("\ufffd", v) for key, v in element.attrib.items()}
        if element.text:
            element.text = _NOT_XML.sub("\ufffd", element.text)


def _run_seconds(report: ReportInput) -> float:
    """The run's wall time, from its recorded start and finish (0 when they do not parse)."""
    run = report.results.run
    try:
        return max(0.0, (parse_isoz(run.finished_at) - parse_isoz(run.started_at)).total_seconds())
    except (TypeError, ValueError):
        return 0.0


def render(report: ReportInput) -> str:
    """Every element carries `time` (seconds): test reporters show "NaN ms" without it. A
    testcase's is the time spent judging that control for that subject; the suite's, the run's."""
    results = report.results.results
    tally = counts(results)
    skipped = tally["not_applicable"] + tally["waived"]
    total = f"{_run_seconds(report):.3f}"
    suites = ET.Element("testsuites", name="commsaudit", time=total)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"commsaudit {report.results.run.profile}",
        tests=str(len(results)),
        failures=str(tally["fail"]),
        errors=str(tally["error"]),
        skipped=str(skipped),
        timestamp=report.results.run.started_at,
        time=total,
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=result.control,
            name=f"{result.control} [{result.subject}]",
            time=f"{report.durations.get((result.control, result.subject), 0.0):.3f}",
        )
        details = "\n".join(
            [result.reason]
            + [
                f"{e.source} {e.section}{e.pointer}: {e.message or ''}".rstrip(": ")
                for e in result.evidence[:50]
            ]
        )
        if result.status == "fail":
            node = ET.SubElement(case, "failure", message=result.reason[:500], type=result.severity)
            node.text = details + (
                f"\nRemediation: {result.remediation}" if result.remediation else ""
            )
        elif result.status == "error":
            node = ET.SubElement(case, "error", message=result.reason[:500], type="collection")
            node.text = details
        elif result.status in ("not_applicable", "waived"):
            ET.SubElement(case, "skipped", message=f"{result.status}: {result.reason[:500]}")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{result.status}: {result.reason}"
    _xml_safe(suites)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
