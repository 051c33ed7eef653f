"""findings.ocsf.json: every result as an OCSF Compliance Finding (class 2003), validated with
py-ocsf-models (OCSF 1.5.0), the models Prowler writes its OCSF findings with. Their pydantic
models ignore fields they do not know, so the test also checks that every field written is one
the schema has: a misspelt field would otherwise reach a SIEM unnoticed."""

from __future__ import annotations

import json
from typing import Any

from py_ocsf_models import OCSF_VERSION
from py_ocsf_models.events.findings.compliance_finding import ComplianceFinding
from pydantic import BaseModel

from conftest import DemoRun
from helpers import members


def _unknown_fields(model: BaseModel, data: Any, where: str = "") -> list[str]:
    """Fields of `data` that `model` (parsed from it) does not have, recursively."""
    if not isinstance(data, dict):
        return []
    unknown = []
    for key, value in data.items():
        if key not in type(model).model_fields:
            unknown.append(f"{where}/{key}")
            continue
        child = getattr(model, key)
        if isinstance(child, BaseModel):
            unknown += _unknown_fields(child, value, f"{where}/{key}")
        elif isinstance(child, list) and isinstance(value, list):
            for i, (item, raw) in enumerate(zip(child, value, strict=True)):
                if isinstance(item, BaseModel):
                    unknown += _unknown_fields(item, raw, f"{where}/{key}/{i}")
    return unknown


def test_every_result_is_a_valid_ocsf_compliance_finding(demo_run: DemoRun) -> None:
    bundle = members(demo_run.bundle)
    findings = json.loads(bundle["findings.ocsf.json"])
    results = json.loads(bundle["results.json"])["results"]
    assert findings == json.loads((demo_run.out / "findings.ocsf.json").read_text())
    assert len(findings) == len(results)
    for finding, result in zip(findings, results, strict=True):
        model = ComplianceFinding.model_validate(finding)
        assert _unknown_fields(model, finding) == [], result["control"]
        assert model.class_uid == 2003 and model.type_uid == 200301
        assert model.metadata.version == OCSF_VERSION == "1.5.0"
        assert model.compliance.control == result["control"]
        assert model.compliance.requirements == result["citations"]
        verdict = {"pass": 1, "inherited": 1, "fail": 3, "waived": 3, "error": 0}
        assert model.compliance.status_id == verdict.get(result["status"], 99)
        assert model.resources is not None and model.resources[0].uid == result["subject"]
