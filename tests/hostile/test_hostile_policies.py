"""Hostile user policies: what `policies lint` accepts, an audit can run, in bounded time.

A policy is a user's file. A pattern that backtracks, a Python-only regex, a `$ref` that points
nowhere or loops back on itself must be refused by `policies lint` (exit 2, naming the file, the
JSON pointer and why); and whatever still makes one policy slow ends as `error` for that control,
never a hang or a traceback, while the rest of the run carries on.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from auditor.demo import render_template
from auditor.resources import demo_dir, policies_dir
from auditor.validation import HAVE_RS, ReferenceSchema, RustSchema

from helpers import run_cli

CUSTOM = "org.risk-analysis.performer"
PERFORMER = "/schema/properties/latest/properties/performed_by"
# Today's code takes ages on these; a working fix answers in seconds. Only a hang guard.
HANG_GUARD = 90


def _policy(schema_change: Any = None, **top: Any) -> dict[str, Any]:
    """A user's policy on the sample's risk analysis: who performed the latest one."""
    document: dict[str, Any] = json.loads(
        (policies_dir() / "org.risk-analysis.current.json").read_text()
    )
    document["id"] = CUSTOM
    document["title"] = "The latest risk analysis names who performed it"
    latest = document["schema"]["properties"]["latest"]
    latest["properties"]["performed_by"] = {"type": "string", "minLength": 1}
    if schema_change is not None:
        schema_change(document["schema"])
    document.update(top)
    return document


def _write_policy(directory: Path, document: dict[str, Any]) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{document['id']}.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def _lint(tmp_path: Path, document: dict[str, Any]) -> tuple[int, str]:
    path = _write_policy(tmp_path / "mine", document)
    proc = run_cli("policies", "lint", path.parent, cwd=tmp_path, timeout=HANG_GUARD)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


def _set_pattern(pattern: str) -> Any:
    def change(schema: dict[str, Any]) -> None:
        performer = schema["properties"]["latest"]["properties"]["performed_by"]
        performer["pattern"] = pattern

    return change


# --- lint: patterns --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("^Contoso.*\\Z", "\\Z is Python-only syntax"),
        ("^(?P<a>C)(?P=a)", "backreference"),
        ("^(C)\\1", "backreference"),
        ("^(?=C)Contoso", "lookaround"),
        ("^Contoso(?<!x)", "lookaround"),
        ("^(?i)contoso", "inline flag"),
        ("^C++", "RE2 cannot compile it"),
    ],
)
def test_lint_refuses_patterns_that_are_not_linear_ecma_regexes(
    tmp_path: Path, pattern: str, why: str
) -> None:
    code, out = _lint(tmp_path, _policy(_set_pattern(pattern)))
    assert code == 2, out
    assert f"{CUSTOM}.json: {PERFORMER}/pattern: " in out
    assert why in out
    assert "checked against the policy meta-schema" not in out


def test_lint_says_use_dollar_for_backslash_z(tmp_path: Path) -> None:
    code, out = _lint(tmp_path, _policy(_set_pattern("^Contoso.*\\Z")))
    assert code == 2
    assert "use $" in out


def test_lint_refuses_a_bad_pattern_in_property_names_and_parameters(tmp_path: Path) -> None:
    def change(schema: dict[str, Any]) -> None:
        latest = schema["properties"]["latest"]
        latest["patternProperties"] = {"^(x)\\1$": {"type": "string"}}
        latest["properties"]["performed_by"]["pattern"] = {"$param": "performer"}

    document = _policy(change)
    document["parameters"]["performer"] = {
        "description": "who may perform the analysis",
        "default": "^(?=S)",
        "schema": {"type": "string"},
    }
    code, out = _lint(tmp_path, document)
    assert code == 2, out
    assert "/schema/properties/latest/patternProperties/^(x)\\1$: " in out
    assert f"{PERFORMER}/pattern: " in out
    assert "lookaround" in out


def test_lint_accepts_a_pattern_that_backtracks_in_python(tmp_path: Path) -> None:
    """RE2 runs it in linear time, so it is a fine pattern."""
    code, out = _lint(tmp_path, _policy(_set_pattern("^(a+)+$")))
    assert code == 0, out


# --- lint: references ------------------------------------------------------------------------


def _with_defs(ref: str, defs: dict[str, Any] | None = None) -> Any:
    def change(schema: dict[str, Any]) -> None:
        schema["properties"]["latest"]["properties"]["performed_by"] = {"$ref": ref}
        schema["$defs"] = defs or {"who": {"type": "string"}}

    return change


@pytest.mark.parametrize(
    ("change", "where", "why"),
    [
        (_with_defs("#/../.."), f"{PERFORMER}/$ref", "does not resolve"),
        (_with_defs("#/$defs/nobody"), f"{PERFORMER}/$ref", "does not resolve"),
        (_with_defs("#who"), f"{PERFORMER}/$ref", "JSON pointer"),
        (_with_defs("#/required"), f"{PERFORMER}/$ref", "not a schema"),
        (lambda s: s.update({"$ref": "#"}), "/schema/$ref", "never descends into the data"),
        (
            _with_defs(
                "#/$defs/a",
                {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}},
            ),
            "/schema/$defs/",
            "never descends into the data",
        ),
    ],
    ids=["dot-dot", "missing", "anchor", "not-a-schema", "self", "cycle"],
)
def test_lint_refuses_references_that_do_not_resolve_or_loop(
    tmp_path: Path, change: Any, where: str, why: str
) -> None:
    code, out = _lint(tmp_path, _policy(change))
    assert code == 2, out
    assert f"{CUSTOM}.json: {where}" in out
    assert why in out


def test_lint_accepts_recursion_that_descends_into_the_data(tmp_path: Path) -> None:
    def change(schema: dict[str, Any]) -> None:
        schema["$defs"] = {
            "tree": {
                "type": ["string", "array"],
                "items": {"$ref": "#/$defs/tree"},
            }
        }
        schema["properties"]["latest"]["properties"]["performed_by"] = {"$ref": "#/$defs/tree"}

    code, out = _lint(tmp_path, _policy(change))
    assert code == 0, out


def test_lint_refuses_a_schema_that_expands_beyond_reason(tmp_path: Path) -> None:
    """Forty anyOf levels, each naming the one below twice: 2**40 subschemas to try."""
    defs: dict[str, Any] = {"d0": {"const": "nobody"}}
    for k in range(1, 41):
        below = {"$ref": f"#/$defs/d{k - 1}"}
        defs[f"d{k}"] = {"anyOf": [below, below]}
    code, out = _lint(tmp_path, _policy(_with_defs("#/$defs/d40", defs)))
    assert code == 2, out
    assert f"{CUSTOM}.json: /schema" in out
    assert "subschemas" in out


# --- the audit -------------------------------------------------------------------------------


def _audit_workspace(
    tmp_path: Path,
    document: dict[str, Any],
    *,
    validator: str,
    performer: str | None = None,
    policies_toml: str = "",
    controls: str = "org.*",
) -> Path:
    """The sample organisation's attestations (the demo's, dated today), audited with a user
    policy directory beside the shipped policies."""
    template = demo_dir() / "contoso-health" / "attestations.yaml.tmpl"
    attestations = render_template(template.read_text(), dt.datetime.now(dt.UTC).date())
    if performer is not None:
        attestations = attestations.replace("Contoso Health security team", performer)
    (tmp_path / "attestations.yaml").write_text(attestations)
    _write_policy(tmp_path / "mine", document)
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n[evidence]\nout = "out"\n'
        f'[policies]\npaths = ["mine"]\nvalidator = "{validator}"\ncontrols = ["{controls}"]\n'
        + policies_toml
    )
    return tmp_path


def _audit(work: Path) -> tuple[int, dict[str, dict[str, Any]], str]:
    proc = run_cli("audit", "--format", "json", cwd=work, timeout=HANG_GUARD)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr
    if not proc.stdout.strip():
        return proc.returncode, {}, proc.stderr
    results = {r["control"]: r for r in json.loads(proc.stdout)["results"]}
    return proc.returncode, results, proc.stderr


BACKENDS = ["jsonschema", "jsonschema-rs"] if HAVE_RS else ["jsonschema"]


@pytest.mark.parametrize("validator", BACKENDS)
def test_a_catastrophic_pattern_is_judged_at_once_by_either_validator(
    tmp_path: Path, validator: str
) -> None:
    work = _audit_workspace(
        tmp_path,
        _policy(_set_pattern("^(a+)+$")),
        validator=validator,
        performer="a" * 48 + "!",
    )
    code, results, stderr = _audit(work)
    assert code == 1, stderr
    mine = results[CUSTOM]
    assert mine["status"] == "fail"
    assert "/latest/performed_by" in mine["reason"]
    assert "must match the pattern ^(a+)+$" in mine["reason"]
    assert results["org.risk-analysis.current"]["status"] == "pass"


@pytest.mark.parametrize(
    "change",
    [
        _with_defs("#/../.."),
        lambda s: s.update({"$ref": "#"}),
        _set_pattern("^(?P<a>x)(?P=a)"),
        _set_pattern("^Contoso.*\\Z"),
    ],
    ids=["dot-dot", "self", "backreference", "backslash-Z"],
)
@pytest.mark.parametrize("validator", BACKENDS)
def test_the_audit_refuses_what_lint_refuses_in_one_line_each(
    tmp_path: Path, change: Any, validator: str
) -> None:
    work = _audit_workspace(tmp_path, _policy(change), validator=validator)
    code, _results, stderr = _audit(work)
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert f"{CUSTOM}.json: /schema" in lines[0]


def test_a_bad_pattern_given_as_a_parameter_in_the_config_stops_the_run(tmp_path: Path) -> None:
    document = _policy(
        lambda s: s["properties"]["latest"]["properties"]["performed_by"].update(
            pattern={"$param": "performer"}
        )
    )
    document["parameters"]["performer"] = {
        "description": "who may perform the analysis",
        "default": "^[A-Za-z ]+$",
        "schema": {"type": "string"},
    }
    work = _audit_workspace(
        tmp_path,
        document,
        validator="auto",
        policies_toml=f'[policies.parameters."{CUSTOM}"]\nperformer = "^(?P<a>C)(?P=a)"\n',
    )
    code, _results, stderr = _audit(work)
    assert code == 2, stderr
    assert f'[policies.parameters."{CUSTOM}"]' in stderr
    assert "/pattern" in stderr
    assert "backreference" in stderr


def _exponential(schema: dict[str, Any]) -> None:
    """Forty levels of unevaluatedProperties, each over the one below: python-jsonschema
    evaluates each level again for every level above it, 2**40 times. No pattern, no loop, a
    small schema: nothing a static check can object to."""
    defs: dict[str, Any] = {"u0": {"properties": {"date": True}}}
    for k in range(1, 41):
        defs[f"u{k}"] = {"anyOf": [{"$ref": f"#/$defs/u{k - 1}"}], "unevaluatedProperties": False}
    schema["$defs"] = defs
    schema["properties"]["latest"]["allOf"] = [{"$ref": "#/$defs/u40"}]


def test_a_policy_that_takes_too_long_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    code, out = _lint(tmp_path, _policy(_exponential))
    assert code == 0, out  # nothing a static check can see
    work = _audit_workspace(
        tmp_path,
        _policy(_exponential),
        validator="jsonschema",
        policies_toml="timeout_seconds = 1\n",
        controls="org.risk-analysis.*",
    )
    code, results, stderr = _audit(work)
    mine = results[CUSTOM]
    assert mine["status"] == "error", mine
    assert "took longer than 1 s" in mine["reason"]
    assert "timeout_seconds" in mine["reason"]
    assert results["org.risk-analysis.current"]["status"] == "pass"
    assert code == 3, stderr


# --- one regex dialect -----------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_RS, reason="jsonschema-rs is not installed")
@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("^enforce$", "enforce\n"),  # Python's $ matches before a final newline
        ("^a.c$", "a\rc"),  # ECMA's . stops at any line terminator
        ("^a.c$", "a\u2028c"),
        ("^\\s$", "\x85"),  # NEL is not ECMA white space
        ("^\\s$", "\u00a0"),  # NBSP is
        ("^\\S$", "\u00a0"),
        ("^\\d$", "\u0663"),  # Arabic-Indic three: not an ECMA digit
        ("^\\w$", "\u00e9"),
        ("^\\u00e9$", "\u00e9"),
        ("^[^\\s]+$", "a\u3000b"),
        ("^[\\s\\S]$", "\n"),  # JavaScript's "any character"
    ],
)
def test_both_validators_read_a_pattern_alike(pattern: str, value: str) -> None:
    schema = {"pattern": pattern}
    reference, fast = ReferenceSchema(schema), RustSchema(schema)
    assert reference.is_valid(value) == fast.is_valid(value), (pattern, value)
