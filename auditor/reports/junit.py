"""junit.xml: one testcase per control and subject, for CI test reporters."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from auditor.reports.common import ReportInput, counts


def render(report: ReportInput) -> str:
    results = report.results.results
    tally = counts(results)
    skipped = tally["not_applicable"] + tally["waived"]
    suites = ET.Element("testsuites", name="commsaudit")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"commsaudit {report.results.run.profile}",
        tests=str(len(results)),
        failures=str(tally["fail"]),
        errors=str(tally["error"]),
        skipped=str(skipped),
        timestamp=report.results.run.started_at,
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=result.control,
            name=f"{result.control} [{result.subject}]",
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
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
