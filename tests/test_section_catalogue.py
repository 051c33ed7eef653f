"""The section catalogue (each connector's sections.json, auditor/model/catalogue.py): the contract
between the connectors and the policies. Every section a normaliser emits on the demo, the
recorded tenants and the published shapes validates against its schema; `policies lint` rejects a
policy that reads a section no connector emits or a field no schema declares."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
from test_m365_published import build_case

from auditor.model.catalogue import Catalogue, declares, paths_read
from auditor.model.section import PLATFORMS, SubjectKind
from connectors.base import CollectContext
from connectors.m365.fetched import read_recorded_tenant
from connectors.m365.normalise import M365Settings, normalise
from connectors.pulumi.connector import report_stack
from connectors.pulumi.sources import read_export
from connectors.registry import catalogue

from helpers import REPO, run_cli
from m365_verdicts import NOW

CATALOGUE = catalogue()
PUBLISHED = REPO / "tests" / "data" / "m365-published"


def _described(schema: Any, where: str) -> list[str]:
    """Object members without a description, anywhere in a section's schema."""
    missing = []
    if isinstance(schema, dict):
        for name, member in (schema.get("properties") or {}).items():
            if isinstance(member, dict) and not member.get("description") and "$ref" not in member:
                missing.append(f"{where}/{name}")
        for key, value in schema.items():
            if key in ("if", "not"):  # conditions on members declared elsewhere
                continue
            if key != "properties" or not isinstance(value, dict):
                missing.extend(_described(value, f"{where}/{key}"))
            else:
                for name, member in value.items():
                    missing.extend(_described(member, f"{where}/{name}"))
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            missing.extend(_described(item, f"{where}/{i}"))
    return missing


def test_every_entry_is_a_valid_schema_with_its_members_described() -> None:
    specs = list(CATALOGUE)
    assert len(specs) >= 60
    for spec in specs:
        jsonschema.Draft202012Validator.check_schema(dict(spec.schema))
        assert set(spec.platforms) <= set(PLATFORMS), spec.name
        assert set(spec.subjects) <= set(get_args(SubjectKind)), spec.name
        assert spec.title, spec.name
        assert _described(spec.schema, spec.name) == []


def test_the_platform_list_is_written_once() -> None:
    """auditor/model/section.py's PLATFORMS; the snapshot and policy schemas must agree."""
    for name in ("snapshot.schema.json", "policy.schema.json"):
        text = (REPO / "auditor" / "schemas" / name).read_text()
        for listed in re.findall(r'"enum": (\["m365"[^\]]*\])', text):
            assert tuple(json.loads(listed)) == PLATFORMS, name


def _check(sections: list[tuple[str, str, Any]], where: str) -> int:
    """Validate each ok section's data; returns how many were checked."""
    checked = 0
    for name, status, data in sections:
        spec = CATALOGUE.get(name)
        assert spec is not None, f"{where}: {name} is in no connector's sections.json"
        if status != "ok":
            continue
        assert spec.problems(data) == [], f"{where}: {name}"
        checked += 1
    return checked


def _demo(organisation: str, out: Path) -> dict[str, Any]:
    # Every section, not only those the default profile's controls read.
    done = run_cli("audit", "--demo", organisation, "--read-all", "--out", out, cwd=out)
    assert done.returncode == 1, done.stderr
    (bundle,) = out.glob("*.zip")
    document: dict[str, Any] = json.loads(zipfile.ZipFile(bundle).read("snapshot.json"))
    return document


@pytest.fixture(scope="module")
def demo_snapshot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _demo("contoso-health", tmp_path_factory.mktemp("demo"))


def test_every_section_of_the_demo_is_declared_and_valid(demo_snapshot: dict[str, Any]) -> None:
    sections = [(s["name"], s["status"], s.get("data")) for s in demo_snapshot["sections"]]
    assert _check(sections, "demo") >= 70
    declared = {s.name.removesuffix(".*") for s in CATALOGUE}
    emitted = {s[0] for s in sections}
    # Every declared section is seen on the demo (a family by one of its members).
    assert {d for d in declared if not any(e.startswith(d) for e in emitted)} == set()


@pytest.mark.parametrize("tenant", ["contoso-health", "fabrikam-clinic"])
def test_every_section_of_the_recorded_tenants_is_valid(tenant: str) -> None:
    _info, fetched = read_recorded_tenant(REPO / "fixtures" / "tenants" / tenant, NOW)
    for settings in (
        M365Settings(),
        M365Settings(break_glass=("breakglass01@contoso-health.onmicrosoft.com",)),
    ):
        sections = [(s.name, s.status, s.data) for s in normalise(fetched, settings)]
        assert _check(sections, tenant) >= 25


def test_every_section_of_the_other_sample_organisation_is_valid(tmp_path: Path) -> None:
    snapshot = _demo("fabrikam-clinic", tmp_path)
    sections = [(s["name"], s["status"], s.get("data")) for s in snapshot["sections"]]
    assert _check(sections, "fabrikam-clinic demo") >= 10


@pytest.mark.parametrize("export", ["compliant", "noncompliant"])
def test_every_section_of_the_pulumi_stack_fixtures_is_valid(export: str) -> None:
    path = REPO / "fixtures" / "pulumi" / f"contoso-comms-prod.{export}.export.json"
    ctx = CollectContext(connector="pulumi", now=NOW, deadline=math.inf)
    report_stack(ctx, read_export(path, None, "us-east-1"))
    sections = [(s.name, s.status, s.data) for s in ctx.sections]
    assert _check(sections, path.name) >= 10


def test_every_section_of_the_published_shapes_is_valid(tmp_path: Path) -> None:
    checked = 0
    for file in sorted((PUBLISHED / "cases").glob("*.json")):
        case = json.loads(file.read_text())
        tenant = build_case(case, tmp_path / file.stem)
        _info, fetched = read_recorded_tenant(tenant, NOW)
        sections = [(s.name, s.status, s.data) for s in normalise(fetched, M365Settings())]
        checked += _check(sections, file.name)
    assert checked >= 40 * 25


def test_a_field_the_normaliser_stops_writing_is_caught() -> None:
    _info, fetched = read_recorded_tenant(REPO / "fixtures" / "tenants" / "contoso-health", NOW)
    (section,) = normalise(
        fetched, M365Settings(), only=frozenset({"m365.entra.conditional_access"})
    )
    spec = CATALOGUE.get(section.name)
    assert spec is not None
    del section.data[0]["enforced"]
    section.data[1]["requires_mfa"] = "yes"
    problems = spec.problems(section.data)
    assert any(p.startswith("/0") and "enforced" in p for p in problems), problems
    assert any(p.startswith("/1/requires_mfa") for p in problems), problems


def test_what_a_policy_schema_reads() -> None:
    schema = {
        "properties": {"ca": {"contains": {"required": ["enforced"], "properties": {"x": {}}}}},
        "anyOf": [{"required": ["y"]}],
        "$defs": {"z": {"properties": {"w": {}}}},
        "allOf": [{"$ref": "#/$defs/z"}],
    }
    assert paths_read(schema) == {
        ("ca",),
        ("ca", "*", "enforced"),
        ("ca", "*", "x"),
        ("y",),
        ("w",),
    }
    section = {
        "type": "object",
        "properties": {
            "ca": {"type": "array", "items": {"$ref": "#/$defs/policy"}},
            "by_name": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "$defs": {"policy": {"properties": {"enforced": {"type": "boolean"}}}},
    }
    assert declares(section, ("ca", "*", "enforced"))
    assert declares(section, ("by_name", "anything"))
    assert not declares(section, ("ca", "*", "enforcedd"))
    assert not declares(section, ("ca", "enforced"))


def test_lint_names_an_unknown_source_and_an_undeclared_field(tmp_path: Path) -> None:
    mfa = json.loads((REPO / "policies" / "m365.mfa.all-users.json").read_text())
    typo = {**mfa, "id": "custom.typo-source"}
    typo["source"] = {**mfa["source"], "ca": "m365.entra.conditional_acess"}
    field = json.loads((REPO / "policies" / "aws.cloudtrail.multi-region-logging.json").read_text())
    field["id"] = "custom.typo-field"
    trail = field["schema"]["properties"]["trails"]["contains"]
    trail["properties"]["multi_regoin"] = trail["properties"].pop("multi_region")
    trail["required"] = ["multi_regoin" if r == "multi_region" else r for r in trail["required"]]
    for policy in (typo, field):
        (tmp_path / f"{policy['id']}.json").write_text(json.dumps(policy))
    done = run_cli("policies", "lint", tmp_path, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "custom.typo-source.json: source 'm365.entra.conditional_acess' is not a section" in out
    assert (
        "custom.typo-field.json: reads /trails/*/multi_regoin of aws.cloudtrail.trails, a field "
        "its schema in connectors/aws/sections.json does not declare"
    ) in out


def test_the_shipped_policies_read_only_declared_fields() -> None:
    done = run_cli("policies", "lint", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_docs_section_table_is_the_catalogue() -> None:
    text = (REPO / "docs" / "policies.md").read_text()
    table = text[text.index("| platform | sections |") :].split("\n\n")[0]
    listed = set(re.findall(r"`([a-z0-9_.<>]+)`\*?", table)) - set(PLATFORMS)
    derived = set(re.findall(r"`([a-z0-9_.<>]+)`\*", table))
    names = {s.name for s in CATALOGUE}
    assert {n for n in listed if not n.startswith("provider.")} == {
        n for n in names if not n.startswith("provider.")
    }
    assert all(CATALOGUE.get(n) is not None for n in listed if n.startswith("provider."))
    derived_here = json.loads((REPO / "auditor" / "derived_sections.json").read_text())["sections"]
    expected_derived = {n for n in derived_here if not n.startswith("provider.")} | {"pulumi.drift"}
    assert {n for n in derived if not n.startswith("provider.")} == expected_derived


def test_a_catalogue_rejects_a_section_declared_twice() -> None:
    entry = {"platform": "m365", "subject": "tenant", "title": "t", "schema": {}}
    with pytest.raises(ValueError, match="declared twice"):
        Catalogue.from_documents(
            [
                ("a.json", {"sections": {"m365.x": entry}}),
                ("b.json", {"sections": {"m365.x": entry}}),
            ]
        )
