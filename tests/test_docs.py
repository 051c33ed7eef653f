"""Keep the user documentation honest.

docs/hipaa.md promises a row for every HIPAA citation the policies use, naming the controls that
answer it; docs/policies.md shows commands, options, policy keys, config keys and a worked example
policy. Each test below fails when the code or the policies move and the docs do not, so the docs
cannot quietly drift into describing a tool that no longer exists.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from auditor.config import config_schema
from auditor.resources import schema_path

from helpers import REPO, run_cli

DOCS = REPO / "docs"
POLICIES = REPO / "policies"
DOC_FILES = ("policies.md", "hipaa.md")

# The form policies use for citations (the meta-schema's pattern), anchored for a table cell.
CITATION = re.compile(r"^(NPRM )?164\.[0-9]{3}(\([A-Za-z0-9]+\))*$")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
# An invocation ends where another program or a redirection starts, or where prose resumes.
INVOCATION = re.compile(r"(?:^|[\s$(])commsaudit[ \t]+([^`|;&>)\n]*)")
WORD = re.compile(r"^[a-z][a-z0-9-]*$")
OPTION = re.compile(r"--[a-z][a-z0-9-]*")


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


@cache
def _policies() -> tuple[dict[str, Any], ...]:
    return tuple(
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(POLICIES.glob("*.json"))
    )


def _code(text: str) -> list[str]:
    """The text of every fenced block and inline code span: where commands and keys are named."""
    fences = [body for _lang, body in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    spans = [" ".join(span.split()) for span in INLINE.findall(prose)]
    return fences + spans


def _citation_rows() -> dict[str, list[str]]:
    """Citation -> the cells of its row in hipaa.md's citation table."""
    rows: dict[str, list[str]] = {}
    for line in _doc("hipaa.md").splitlines():
        if not line.startswith("| "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if CITATION.match(cells[0]):
            rows[cells[0]] = cells
    return rows


def _cited_by() -> dict[str, list[dict[str, Any]]]:
    cited: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for policy in _policies():
        for citation in policy["citations"]:
            cited[citation].append(policy)
    return cited


def test_every_citation_in_the_policies_has_a_row_in_hipaa_md() -> None:
    missing = sorted(set(_cited_by()) - set(_citation_rows()))
    assert not missing, f"docs/hipaa.md has no citation-table row for: {missing}"


def test_each_citation_row_names_exactly_the_controls_and_sides_that_answer_it() -> None:
    rows = _citation_rows()
    problems = []
    for citation, policies in sorted(_cited_by().items()):
        cells = rows.get(citation)
        if cells is None:
            continue  # reported by the test above
        # Columns: citation | requirement | kind | side(s) | controls.
        named = set(re.findall(r"`([a-z0-9.-]+)`", cells[-1]))
        expected = {p["id"] for p in policies}
        if named != expected:
            problems.append(
                f"{citation}: row names {sorted(named)}, policies citing it are {sorted(expected)}"
            )
        sides = {s.strip() for s in cells[3].split(",")}
        responsibilities = {p["responsibility"] for p in policies}
        if sides != responsibilities:
            problems.append(f"{citation}: sides {sorted(sides)}, policies say {responsibilities}")
    assert not problems, "\n".join(problems)


def test_citation_rows_are_only_for_citations_some_policy_uses() -> None:
    # A row for a citation no control answers would suggest coverage that does not exist.
    stale = sorted(set(_citation_rows()) - set(_cited_by()))
    assert not stale, f"docs/hipaa.md has rows for citations no policy cites: {stale}"


def test_every_policy_id_appears_in_hipaa_md() -> None:
    text = _doc("hipaa.md")
    missing = [p["id"] for p in _policies() if f"`{p['id']}`" not in text]
    assert not missing, f"docs/hipaa.md never names: {missing}"


def test_every_profile_is_documented() -> None:
    text = _doc("hipaa.md")
    profiles = {name for p in _policies() for name in p["profiles"]}
    missing = sorted(name for name in profiles if f"`{name}`" not in text)
    assert not missing, f"docs/hipaa.md does not describe the profiles: {missing}"


@cache
def _help(path: tuple[str, ...]) -> str:
    proc = run_cli(*path, "--help", cwd=REPO)
    assert proc.returncode == 0, f"commsaudit {' '.join(path)} --help: {proc.stderr}"
    return proc.stdout


def _subcommands(path: tuple[str, ...]) -> set[str]:
    """The commands argparse lists under `positional arguments` (indented four spaces)."""
    text = _help(path)
    if "positional arguments:" not in text:
        return set()
    section = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return {m.group(1) for m in re.finditer(r"^    ([a-z][a-z0-9-]*)(?:\s|$)", section, re.M)}


def _invocations(name: str) -> list[str]:
    return [m.group(1).strip() for block in _code(_doc(name)) for m in INVOCATION.finditer(block)]


@pytest.mark.parametrize("name", DOC_FILES)
def test_commands_and_options_named_in_the_docs_exist(name: str) -> None:
    invocations = _invocations(name)
    assert invocations, f"docs/{name} names no commsaudit command: is the parser broken?"
    problems = []
    for invocation in invocations:
        words = invocation.split()
        path: tuple[str, ...] = ()
        # Walk down the command tree for as long as the parser has a level of commands.
        for word in words:
            commands = _subcommands(path)
            if not commands or not WORD.match(word):
                break
            if word not in commands:
                where = " ".join(["commsaudit", *path])
                problems.append(f"`commsaudit {invocation}`: {where} has no command {word!r}")
                break
            path = (*path, word)
        if not path:
            continue
        accepted = set(OPTION.findall(_help(path)))
        for option in OPTION.findall(invocation):
            if option not in accepted:
                problems.append(
                    f"`commsaudit {invocation}`: {' '.join(path)} does not accept {option}"
                )
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_policy_file_keys_are_all_documented() -> None:
    meta = json.loads(schema_path("policy.schema.json").read_text(encoding="utf-8"))
    code = "\n".join(_code(_doc("policies.md")))
    keys = [k for k in meta["properties"] if k != "$comment"]
    keys += list(meta["properties"]["examples"]["items"]["properties"])
    keys += list(meta["properties"]["remediation"]["properties"])
    missing = sorted({k for k in keys if not re.search(rf"\b{re.escape(k)}\b", code)})
    assert not missing, f"docs/policies.md never shows the policy keys: {missing}"


def test_waiver_and_policies_config_keys_are_all_documented() -> None:
    schema = config_schema()["properties"]
    code = "\n".join(_code(_doc("policies.md")))
    keys = list(schema["waivers"]["items"]["properties"]) + list(schema["policies"]["properties"])
    missing = sorted({k for k in keys if not re.search(rf"\b{re.escape(k)}\b", code)})
    assert not missing, f"docs/policies.md never shows the config keys: {missing}"


def test_example_policies_in_policies_md_pass_their_own_tests(tmp_path: Path) -> None:
    # The worked example must be a policy a reader can copy and run, with the output shown.
    documented = [
        json.loads(body)
        for lang, body in FENCE.findall(_doc("policies.md"))
        if lang.strip() == "json" and '"format": "commsaudit/policy/v1"' in body
    ]
    assert documented, "docs/policies.md has no complete example policy"
    for policy in documented:
        (tmp_path / f"{policy['id']}.json").write_text(json.dumps(policy), encoding="utf-8")
    proc = run_cli("policies", "test", tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = f"{len(documented)} policies tested, every example gave its expected verdict"
    assert summary in proc.stdout
    assert f"{summary}: no problems" in _doc("policies.md")
