"""The shipped policies: well-formed, tested by their own examples, and true to the catalog."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import PolicyError
from auditor.policy import load_policies, parse_policy
from auditor.resources import policies_dir

from helpers import SHARED, run_cli

CATALOG = SHARED / "design" / "controls.md"
RESPONSIBILITY = {"C": "customer", "P": "provider", "S": "shared"}


def test_shipped_policies_lint_clean(tmp_path: Path) -> None:
    proc = run_cli("policies", "lint", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(list(policies_dir().glob('*.json')))} policies checked" in proc.stdout


def test_every_shipped_example_gives_its_verdict(tmp_path: Path) -> None:
    proc = run_cli("policies", "test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_policy_whose_failing_example_passes_fails_the_test(tmp_path: Path) -> None:
    document = json.loads((policies_dir() / "org.training.current.json").read_text())
    failing = next(e for e in document["examples"] if e["expect"] == "fail")
    failing["input"]["latest"]["coverage"] = 0.99  # the "failing" example now passes
    (tmp_path / "org.training.current.json").write_text(json.dumps(document))
    proc = run_cli("policies", "test", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1
    assert f"example {failing['name']!r}: expected fail, got pass" in proc.stdout


def test_a_failing_example_must_fail_where_it_says(tmp_path: Path) -> None:
    document = json.loads((policies_dir() / "org.training.current.json").read_text())
    failing = next(e for e in document["examples"] if e["expect"] == "fail")
    failing["fail_pointers"] = ["/latest/age_days"]
    (tmp_path / "org.training.current.json").write_text(json.dumps(document))
    proc = run_cli("policies", "test", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1
    assert "failed, but not at /latest/age_days (failures at: /latest/coverage)" in proc.stdout


def test_an_example_its_section_could_never_hold_is_a_lint_problem(tmp_path: Path) -> None:
    """An example left short of what the connector always writes proves nothing about the
    answers it stands for: lint names the example, the section and what is missing."""
    document = json.loads((policies_dir() / "dns.spf.enforced.json").read_text())
    example = document["examples"][0]
    del example["input"]["tree"]
    (tmp_path / "dns.spf.enforced.json").write_text(json.dumps(document))
    proc = run_cli("policies", "lint", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        f"example {example['name']!r} is not data dns.spf can hold: "
        '(the whole section): "tree" is a required property'
    ) in proc.stdout, proc.stdout


def _broken(change: Any) -> list[str]:
    document = json.loads((policies_dir() / "org.training.current.json").read_text())
    change(document)
    with pytest.raises(PolicyError) as caught:
        parse_policy(json.dumps(document).encode(), "org.training.current.json", "p.json")
    return caught.value.problems


def test_meta_schema_problems_are_named() -> None:
    assert _broken(lambda d: d.pop("citations")) == [
        "p.json: (top level): 'citations' is a required property"
    ]
    assert _broken(lambda d: d.update(severity="urgent"))[0].startswith(
        "p.json: /severity: 'urgent' is not one of"
    )
    assert _broken(lambda d: d.update(id="org.training.other")) == [
        "p.json: /id: 'org.training.other' must match the file name 'org.training.current.json' without .json"
    ]
    assert _broken(lambda d: d.update(citations=["HIPAA 1"]))[0].startswith("p.json: /citations/0:")
    assert _broken(
        lambda d: d.update(examples=[e for e in d["examples"] if e["expect"] != "pass"])
    ) == ["p.json: /examples: needs at least one example that must pass and one that must fail"]


def test_remote_references_are_refused() -> None:
    problems = _broken(lambda d: d["schema"].update({"$ref": "https://evil.example/schema.json"}))
    assert problems == [
        "p.json: /schema/$ref: $ref 'https://evil.example/schema.json' points outside "
        "the policy; only local references (#/$defs/...) are allowed, so evaluation "
        "never fetches anything"
    ]


def test_undeclared_parameters_and_profiles_are_refused() -> None:
    problems = _broken(lambda d: d["schema"].update({"maxProperties": {"$param": "nope"}}))
    assert problems == [
        "p.json: /schema/maxProperties: $param 'nope' is not declared under parameters"
    ]
    problems = _broken(lambda d: d.update(profile_schemas={"email-posture": {}}))
    assert problems == [
        "p.json: /profile_schemas/email-posture: profile 'email-posture' is not listed in profiles"
    ]
    problems = _broken(lambda d: d["parameters"]["min_coverage"].update(default=2))
    assert problems == [
        "p.json: /parameters/min_coverage/default: 2 is greater than the maximum of 1"
    ]


def test_a_users_directory_overrides_a_shipped_policy(tmp_path: Path) -> None:
    shutil.copy(policies_dir() / "org.training.current.json", tmp_path)
    document = json.loads((tmp_path / "org.training.current.json").read_text())
    document["severity"] = "low"
    (tmp_path / "org.training.current.json").write_text(json.dumps(document))
    policies = load_policies([policies_dir(), tmp_path])
    assert policies.policies["org.training.current"].severity == "low"


def test_nprm_only_controls_are_only_in_that_profile() -> None:
    policies = load_policies([policies_dir()])
    hipaa = {p.id for p in policies.select("hipaa")}
    nprm = {p.id for p in policies.select("hipaa-nprm-2025")}
    for control in ("org.compliance-audit.current", "org.vendor-verification.current"):
        assert control in nprm and control not in hipaa
    assert hipaa < nprm


def _catalog_rows() -> dict[str, tuple[str, list[str]]]:
    rows = {}
    for line in CATALOG.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[a-z0-9.-]+\.[a-z0-9.-]+", cells[0]):
            citations: list[str] = []
            for group in cells[2].split(";"):
                base = ""
                for item in (i.strip() for i in group.split(",")):
                    if item.startswith("("):
                        item = base + item
                    else:
                        base = re.match(r"(NPRM )?164\.\d+", item).group(0)  # type: ignore[union-attr]
                    citations.append(item)
            rows[cells[0]] = (cells[1], citations)
    return rows


@pytest.mark.skipif(
    not CATALOG.is_file(), reason="../shared/design/controls.md is not beside this checkout"
)
def test_shipped_policies_match_the_catalog() -> None:
    catalog = _catalog_rows()
    policies = load_policies([policies_dir()]).policies
    assert len(catalog) > 40, "catalog parsing found too few rows"
    for control in catalog:  # every platform's connector is in this build
        assert control in policies, f"{control} from the catalog has no policy file"
    for control, policy in policies.items():
        if control not in catalog:
            # The catalog is HIPAA's; SCuBA baseline controls beyond it (issue #17) run only in
            # the scuba profile, each naming the SCuBA policies it evaluates.
            assert policy.profiles == ("scuba",) and policy.scuba, (
                f"{control} is not in the catalog"
            )
            continue
        side, citations = catalog[control]
        assert policy.responsibility == RESPONSIBILITY[side], control
        assert set(citations) <= set(policy.citations), (control, citations, policy.citations)
