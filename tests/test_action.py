"""The GitHub Action (action.yml) and the example workflows.

Two kinds of check. A structural one that stands in for actionlint (which also runs, when it is
on PATH): JSON Schemas of a composite action and of a workflow, plus what a schema cannot say:
every `${{ inputs.X }}` is a declared input, every `steps.S` is an earlier step, every `uses:` is
pinned, every `run:` parses as bash. And the action's own steps, run here in order by a small
stand-in for the runner, against the Microsoft 365 sandbox signed in with a fake OIDC token: the
job summary, the bundle and the exit code are the ones GitHub would get.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from connectors.m365.sandbox.server import Sandbox

from helpers import REPO, member_json, run_cli

ACTION = REPO / "action.yml"
WORKFLOWS_DIR = REPO / ".github" / "workflows"
SCHEDULED = WORKFLOWS_DIR / "scheduled-audit.yml"
TENANTS = REPO / "fixtures" / "tenants"
# The interpreter running the tests has commsaudit installed (pip install -e): its bin directory
# goes first on PATH, as a runner's PATH would have the installed tool.
VENV_BIN = Path(sys.executable).parent
BREAK_GLASS = 'break_glass_accounts = ["breakglass01@contoso-health.onmicrosoft.com"]\n'


# --- YAML ------------------------------------------------------------------------------------


def load_yaml(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as the boolean true; GitHub reads it as the string.
    if True in data:
        data["on"] = data.pop(True)
    return data


def load_file(path: Path) -> dict[str, Any]:
    return load_yaml(path.read_text(encoding="utf-8"))


# --- expressions: `${{ ... }}` ---------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<str>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||!|<|>|\(|\))"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<lit>true|false|null)\b"
    r"|(?P<func>always|success|failure|cancelled)\(\s*\)"
    r"|(?P<ref>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_*][A-Za-z0-9_*-]*)*)"
    r")"
)
_CONTEXTS = {"inputs", "github", "steps", "matrix", "secrets", "vars", "env", "runner", "job"}


def tokens(expression: str) -> list[tuple[str, str]]:
    """(kind, text) of each token; raises ValueError on anything this checker does not know."""
    out: list[tuple[str, str]] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot read {text[position:]!r} in {expression!r}")
        kind = match.lastgroup or ""
        value = match.group(kind).strip()
        if kind == "ref" and value.split(".")[0] not in _CONTEXTS:
            raise ValueError(f"unknown context {value.split('.')[0]!r} in {expression!r}")
        out.append((kind, value))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return out


def references(expression: str) -> list[str]:
    return [value for kind, value in tokens(expression) if kind == "ref"]


def lookup(context: dict[str, Any], reference: str) -> Any:
    value: Any = context
    for part in reference.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""  # GitHub gives an empty value for a missing property
        value = value[part]
    return value


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "")


class _Evaluator:
    """A recursive-descent reading of GitHub's grammar, loosest binding first: `||`, `&&`,
    `==` `!=`, `<` `<=` `>` `>=`, `!`, then literals, references, status functions and
    parentheses. `||` and `&&` give an operand, not a boolean, as GitHub's do."""

    def __init__(self, expression: str, context: dict[str, Any], failed: bool) -> None:
        self.items = tokens(expression)
        self.position = 0
        self.context = context
        self.failed = failed
        self.expression = expression

    def peek(self) -> tuple[str, str]:
        return self.items[self.position] if self.position < len(self.items) else ("end", "")

    def take(self, *ops: str) -> str | None:
        kind, value = self.peek()
        if kind == "op" and value in ops:
            self.position += 1
            return value
        return None

    def run(self) -> Any:
        value = self.either()
        if self.peek()[0] != "end":
            raise ValueError(f"unexpected {self.peek()[1]!r} in {self.expression!r}")
        return value

    def either(self) -> Any:
        value = self.both()
        while self.take("||"):
            right = self.both()
            value = value if _truthy(value) else right
        return value

    def both(self) -> Any:
        value = self.equality()
        while self.take("&&"):
            right = self.equality()
            value = right if _truthy(value) else value
        return value

    def equality(self) -> Any:
        value = self.comparison()
        while op := self.take("==", "!="):
            right = self.comparison()
            value = (value == right) if op == "==" else (value != right)
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while op := self.take("<", "<=", ">", ">="):
            right = self.unary()
            value = {
                "<": value < right,
                "<=": value <= right,
                ">": value > right,
                ">=": value >= right,
            }[op]
        return value

    def unary(self) -> Any:
        if self.take("!"):
            return not _truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, value = self.peek()
        self.position += 1
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "lit":
            return {"true": True, "false": False, "null": None}[value]
        if kind == "func":
            return {"always": True, "success": not self.failed, "failure": self.failed}.get(
                value, False
            )
        if kind == "ref":
            return lookup(self.context, value)
        if kind == "op" and value == "(":
            inner = self.either()
            if not self.take(")"):
                raise ValueError(f"missing ')' in {self.expression!r}")
            return inner
        raise ValueError(f"unexpected {value or 'end'!r} in {self.expression!r}")


def evaluate(expression: str, context: dict[str, Any], *, failed: bool = False) -> Any:
    """The subset of GitHub's expression language the action and workflows use."""
    return _Evaluator(expression, context, failed).run()


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(text: str, context: dict[str, Any]) -> str:
    return EXPRESSION.sub(lambda m: as_text(evaluate(m.group(1), context)), text)


def condition(step: dict[str, Any], context: dict[str, Any], *, failed: bool) -> bool:
    """A step's `if:`, with GitHub's implicit success() when it names no status function."""
    raw = step.get("if")
    if raw is None:
        return not failed
    text = str(raw).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    if not any(kind == "func" for kind, _ in tokens(text)):
        text = f"success() && ({text})"
    return bool(evaluate(text, context, failed=failed))


# --- schemas ---------------------------------------------------------------------------------

_NAME = "^[A-Za-z_][A-Za-z0-9_-]*$"
_SCALAR = {"type": ["string", "number", "boolean"]}
_EXPRESSION_OR_BOOL = {"type": ["string", "boolean"]}
# owner/repo[/path]@ref, a local ./path, or a docker:// image: never an unpinned remote.
_USES = r"^(\./.*|docker://\S+|[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[A-Za-z0-9_./-]+)$"

_COMPOSITE_STEP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": _NAME},
        "name": {"type": "string"},
        "if": _EXPRESSION_OR_BOOL,
        "uses": {"type": "string", "pattern": _USES},
        "with": {"type": "object", "additionalProperties": _SCALAR},
        "run": {"type": "string", "minLength": 1},
        "shell": {"type": "string", "minLength": 1},
        "env": {"type": "object", "additionalProperties": _SCALAR},
        "working-directory": {"type": "string"},
        "continue-on-error": _EXPRESSION_OR_BOOL,
    },
    # A composite action's run step must say its shell; a uses step has neither.
    "oneOf": [
        {"required": ["run", "shell"], "not": {"required": ["uses"]}},
        {
            "required": ["uses"],
            "not": {"anyOf": [{"required": ["run"]}, {"required": ["shell"]}]},
        },
    ],
}

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "description", "runs"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "author": {"type": "string"},
        "branding": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"icon": {"type": "string"}, "color": {"type": "string"}},
        },
        "inputs": {
            "type": "object",
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["description"],
                "properties": {
                    "description": {"type": "string", "minLength": 1},
                    "required": {"type": "boolean"},
                    "default": {"type": "string"},
                    "deprecationMessage": {"type": "string"},
                },
            },
        },
        "outputs": {
            "type": "object",
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["description", "value"],
                "properties": {
                    "description": {"type": "string", "minLength": 1},
                    "value": {"type": "string", "pattern": r"^\$\{\{.*\}\}$"},
                },
            },
        },
        "runs": {
            "type": "object",
            "additionalProperties": False,
            "required": ["using", "steps"],
            "properties": {
                "using": {"const": "composite"},
                "steps": {"type": "array", "minItems": 1, "items": _COMPOSITE_STEP},
            },
        },
    },
}

_PERMISSION_SCOPES = [
    "actions",
    "attestations",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
]
_PERMISSIONS: dict[str, Any] = {
    "oneOf": [
        {"enum": ["read-all", "write-all"]},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                scope: {
                    "enum": ["none", "write"] if scope == "id-token" else ["read", "write", "none"]
                }
                for scope in _PERMISSION_SCOPES
            },
        },
    ]
}
_WORKFLOW_STEP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_COMPOSITE_STEP["properties"],
        "timeout-minutes": {"type": ["number", "string"]},
    },
    "oneOf": [
        {"required": ["run"], "not": {"required": ["uses"]}},
        {"required": ["uses"], "not": {"anyOf": [{"required": ["run"]}, {"required": ["shell"]}]}},
    ],
}
_JOB: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["runs-on", "steps"],
    "properties": {
        "name": {"type": "string"},
        "if": _EXPRESSION_OR_BOOL,
        "runs-on": {"type": ["string", "array"]},
        "needs": {"type": ["string", "array"]},
        "permissions": _PERMISSIONS,
        "environment": {"type": ["string", "object"]},
        "concurrency": {"type": ["string", "object"]},
        "outputs": {"type": "object"},
        "env": {"type": "object"},
        "defaults": {"type": "object"},
        "timeout-minutes": {"type": ["number", "string"]},
        "continue-on-error": _EXPRESSION_OR_BOOL,
        "container": {"type": ["string", "object"]},
        "services": {"type": "object"},
        "strategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "matrix": {"type": ["object", "string"]},
                "fail-fast": _EXPRESSION_OR_BOOL,
                "max-parallel": {"type": ["number", "string"]},
            },
        },
        "steps": {"type": "array", "minItems": 1, "items": _WORKFLOW_STEP},
    },
}
WORKFLOW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["on", "jobs"],
    "properties": {
        "name": {"type": "string"},
        "run-name": {"type": "string"},
        "on": {"type": ["string", "array", "object"]},
        "permissions": _PERMISSIONS,
        "env": {"type": "object"},
        "defaults": {"type": "object"},
        "concurrency": {"type": ["string", "object"]},
        "jobs": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": _JOB,
        },
    },
}


# --- the checks actionlint would make ----------------------------------------------------------


def _schema_problems(document: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{where}: /{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _step_expressions(step: dict[str, Any]) -> Iterator[str]:
    for text in _strings({k: v for k, v in step.items() if k != "if"}):
        for match in EXPRESSION.finditer(text):
            yield match.group(1)
    if isinstance(step.get("if"), str):
        raw = step["if"].strip()
        yield raw[3:-2] if raw.startswith("${{") and raw.endswith("}}") else raw


def _bash_problems(script: str, where: str) -> list[str]:
    # `bash -n` parses without running; expressions become a plain word first, as the runner
    # replaces them before bash sees the script.
    plain = EXPRESSION.sub("EXPR", script)
    proc = subprocess.run(
        ["bash", "-n"], input=plain, capture_output=True, text=True, timeout=30, check=False
    )
    problems = [f"{where}: bash: {proc.stderr.strip()}"] if proc.returncode else []
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        proc = subprocess.run(
            [shellcheck, "--shell=bash", "-"],
            input=plain,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode:
            problems.append(f"{where}: shellcheck: {proc.stdout.strip()}")
    return problems


def _steps_problems(
    steps: list[dict[str, Any]],
    where: str,
    *,
    inputs: set[str] | None,
    matrix: set[str],
    actions: dict[str, dict[str, Any]],
) -> tuple[list[str], list[str]]:
    """Problems of a list of steps, and their ids."""
    problems: list[str] = []
    ids: list[str] = []
    for index, step in enumerate(steps):
        here = f"{where}.steps[{index}] ({step.get('name') or step.get('uses') or step.get('id')})"
        for expression in _step_expressions(step):
            try:
                refs = references(expression)
            except ValueError as exc:
                problems.append(f"{here}: {exc}")
                continue
            for ref in refs:
                parts = ref.split(".")
                if parts[0] == "inputs":
                    if inputs is None:
                        problems.append(f"{here}: {ref}: a workflow that is not called has none")
                    elif len(parts) < 2 or parts[1] not in inputs:
                        problems.append(f"{here}: {ref} is not a declared input")
                elif parts[0] == "steps":
                    if len(parts) < 3 or parts[1] not in ids:
                        problems.append(f"{here}: {ref} names no earlier step id")
                elif parts[0] == "matrix" and (len(parts) < 2 or parts[1] not in matrix):
                    problems.append(f"{here}: {ref} is not in the job's matrix")
        if "run" in step:
            problems += _bash_problems(step["run"], here)
        uses = step.get("uses", "")
        target = next((meta for prefix, meta in actions.items() if uses.startswith(prefix)), None)
        if target is not None:
            declared = target.get("inputs", {})
            given = set(step.get("with", {}))
            for name in sorted(given - set(declared)):
                problems.append(f"{here}: input {name!r} is not declared by {uses}")
            for name, spec in declared.items():
                if spec.get("required") and "default" not in spec and name not in given:
                    problems.append(f"{here}: required input {name!r} of {uses} is missing")
        if "id" in step:
            if step["id"] in ids:
                problems.append(f"{here}: duplicate step id {step['id']!r}")
            ids.append(step["id"])
    return problems, ids


def check_action(action: dict[str, Any]) -> list[str]:
    problems = _schema_problems(action, ACTION_SCHEMA, "action.yml")
    if problems:
        return problems
    inputs = set(action.get("inputs", {}))
    more, ids = _steps_problems(
        action["runs"]["steps"], "runs", inputs=inputs, matrix=set(), actions={}
    )
    problems += more
    for name, output in action.get("outputs", {}).items():
        for match in EXPRESSION.finditer(output["value"]):
            for ref in references(match.group(1)):
                parts = ref.split(".")
                if parts[0] != "steps" or len(parts) < 4 or parts[1] not in ids:
                    problems.append(f"outputs.{name}: {ref} names no step id of the action")
    return problems


def _cron_problems(workflow: dict[str, Any]) -> list[str]:
    on = workflow["on"]
    schedules = on.get("schedule", []) if isinstance(on, dict) else []
    field_ = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"
    return [
        f"on.schedule: {entry!r} is not a five-field cron line"
        for entry in schedules
        if not re.fullmatch(rf"{field_}( {field_}){{4}}", str(entry.get("cron", "")))
    ]


def check_workflow(
    workflow: dict[str, Any], actions: dict[str, dict[str, Any]], where: str = "workflow"
) -> list[str]:
    """`actions`: `uses:` prefix -> that action's metadata, whose inputs a step must match."""
    problems = _schema_problems(workflow, WORKFLOW_SCHEMA, where)
    if problems:
        return problems
    problems += _cron_problems(workflow)
    for job_name, job in workflow["jobs"].items():
        matrix = job.get("strategy", {}).get("matrix", {})
        keys = set(matrix) - {"include", "exclude"} if isinstance(matrix, dict) else set()
        if isinstance(matrix, dict):
            for entry in matrix.get("include", []):
                keys |= set(entry)
        if isinstance(job.get("if"), str) and "steps." in job["if"]:
            problems.append(f"{where}: jobs.{job_name}.if cannot use steps")
        more, _ids = _steps_problems(
            job["steps"], f"{where}: jobs.{job_name}", inputs=None, matrix=keys, actions=actions
        )
        problems += more
    return problems


def local_actions() -> dict[str, dict[str, Any]]:
    return {"./": load_file(ACTION)}


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS_DIR.glob("*.yml")) + sorted(WORKFLOWS_DIR.glob("*.yaml"))


def actionlint(paths: list[Path], cwd: Path) -> subprocess.CompletedProcess[str] | None:
    """actionlint on the workflow files, when it is installed (it also checks the inputs of a
    local action a workflow uses against that action's action.yml)."""
    binary = shutil.which("actionlint")
    if binary is None:
        return None
    return subprocess.run(
        [binary, "-no-color", *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_expression_checker_reads_the_grammar_as_github_does() -> None:
    """The checker that runs our `if:` and `${{ }}` lines must itself be right."""
    context = {"inputs": {"a": "x", "b": ""}}
    assert evaluate("inputs.b || 'fallback'", context) == "fallback"
    assert evaluate("inputs.a && inputs.b", context) == ""
    assert evaluate("inputs.a == 'x' && inputs.b != ''", context) is False
    assert evaluate("!(inputs.a == 'y') && always()", context) is True
    assert evaluate("1 < 2 == true", context) is True  # comparison binds tighter
    assert evaluate("inputs.missing.deeper == ''", context) is True
    assert evaluate("failure() || success()", context, failed=True) is True
    assert evaluate("'it''s'", context) == "it's"
    for broken in ("(inputs.a", "inputs.a ==", "inputs.a inputs.b", "evil.thing"):
        with pytest.raises(ValueError):
            evaluate(broken, context)


def test_the_action_passes_the_structural_check() -> None:
    assert check_action(load_file(ACTION)) == []


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_each_workflow_passes_the_structural_check(path: Path) -> None:
    assert check_workflow(load_file(path), local_actions(), path.name) == []


def test_actionlint_when_installed() -> None:
    proc = actionlint(workflow_files(), REPO)
    if proc is None:
        pytest.skip("actionlint is not on PATH: the structural checks above stand in for it")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda a: a["runs"]["steps"][1].pop("shell"), "/runs/steps/1"),
        (
            lambda a: a["runs"]["steps"][2]["env"].update(X="${{ inputs.no-such-input }}"),
            "inputs.no-such-input is not a declared input",
        ),
        (
            lambda a: a["runs"]["steps"][3].update(uses="actions/upload-artifact"),
            "/runs/steps/3/uses",
        ),
        (
            lambda a: a["outputs"]["bundle"].update(value="${{ steps.nowhere.outputs.bundle }}"),
            "steps.nowhere.outputs.bundle names no step id",
        ),
        (
            lambda a: a["runs"]["steps"][1].update(run="if [ -n x ]; then echo"),
            "bash:",
        ),
        (
            lambda a: (
                a["runs"]["steps"][2]["env"].update(X="${{ steps.later.outputs.x }}")
                or a["runs"]["steps"][3].update(id="later")
            ),
            "steps.later.outputs.x names no earlier step id",
        ),
        (lambda a: a["inputs"]["config"].pop("description"), "'description' is a required"),
    ],
    ids=[
        "run-without-shell",
        "undeclared-input",
        "unpinned-uses",
        "output-from-no-step",
        "bash-syntax",
        "step-output-before-the-step",
        "input-without-description",
    ],
)
def test_the_structural_check_catches_mistakes(mutate: Any, expected: str) -> None:
    action = copy.deepcopy(load_file(ACTION))
    mutate(action)
    problems = check_action(action)
    assert any(expected in p for p in problems), problems


def test_the_workflow_check_catches_mistakes() -> None:
    workflow = load_file(SCHEDULED)
    broken = copy.deepcopy(workflow)
    audit = next(s for s in broken["jobs"]["audit"]["steps"] if s.get("uses") == "./")
    audit["with"]["fail-onn"] = "any"
    assert any("'fail-onn' is not declared" in p for p in check_workflow(broken, local_actions()))
    broken = copy.deepcopy(workflow)
    broken["jobs"]["audit"]["steps"][0]["uses"] = "actions/checkout"
    assert check_workflow(broken, local_actions())
    broken = copy.deepcopy(workflow)
    broken["on"]["schedule"][0]["cron"] = "every monday"
    assert any("cron" in p for p in check_workflow(broken, local_actions()))
    broken = copy.deepcopy(workflow)
    broken["jobs"]["audit"]["steps"][-1]["with"]["config"] = "${{ matrix.customer.config }}"
    assert any("matrix.customer.config" in p for p in check_workflow(broken, local_actions()))


# --- the example workflow says what the issue asks -----------------------------------------------


def test_the_scheduled_workflow_audits_each_tenant_weekly_with_oidc() -> None:
    workflow = load_file(SCHEDULED)
    assert workflow["on"]["schedule"] == [{"cron": "0 6 * * 1"}]  # Mondays, 06:00 UTC
    assert "workflow_dispatch" in workflow["on"]
    assert workflow["permissions"]["id-token"] == "write"
    assert workflow["permissions"]["contents"] == "read"
    assert workflow["permissions"]["security-events"] == "write"
    job = workflow["jobs"]["audit"]
    tenants = job["strategy"]["matrix"]["tenant"]
    assert len(tenants) >= 2 and all(t["config"].endswith(".toml") for t in tenants)
    assert len({t["name"] for t in tenants}) == len(tenants)
    steps = {s.get("uses", "").split("@")[0]: s for s in job["steps"] if "uses" in s}
    aws = steps["aws-actions/configure-aws-credentials"]
    assert re.fullmatch(r"aws-actions/configure-aws-credentials@[0-9a-f]{40}", aws["uses"])
    assert aws["with"]["role-to-assume"] == "${{ vars.COMMSAUDIT_AWS_ROLE_ARN }}"
    previous = steps["dawidd6/action-download-artifact"]
    assert re.fullmatch(r"dawidd6/action-download-artifact@[0-9a-f]{40}", previous["uses"])
    assert previous["with"]["workflow"] == "scheduled-audit.yml"
    assert previous["with"]["if_no_artifact_found"] == "warn"
    assert previous["with"]["path"].rstrip("/") == "baseline"
    audit = steps["."] if "." in steps else steps["./"]
    assert audit["with"]["signing-key"] == "${{ secrets.COMMSAUDIT_SIGNING_KEY }}"
    assert audit["with"]["config"] == "${{ matrix.tenant.config }}"
    # Each tenant uploads under its own name, and downloads its own previous bundle.
    assert "matrix.tenant.name" in audit["with"]["artifact-name"]
    assert previous["with"]["name"] == audit["with"]["artifact-name"]
    assert "steps.baseline.outputs.bundle" in audit["with"]["baseline"]


def _run_step_script(script: str, cwd: Path) -> dict[str, str]:
    output = cwd / "github_output"
    output.write_text("")
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, "GITHUB_OUTPUT": str(output)},
        check=True,
        timeout=30,
    )
    return parse_outputs(output.read_text())


def test_the_workflow_picks_the_newest_baseline_bundle(tmp_path: Path) -> None:
    job = load_file(SCHEDULED)["jobs"]["audit"]
    script = next(s["run"] for s in job["steps"] if s.get("id") == "baseline")
    assert _run_step_script(script, tmp_path) == {}  # the first run: nothing downloaded
    (tmp_path / "baseline").mkdir()
    for name in ("commsaudit-20261102T060000Z-aaaaaaaa.zip", "commsaudit-20261109T060000Z-b.zip"):
        (tmp_path / "baseline" / name).write_bytes(b"")
    assert _run_step_script(script, tmp_path) == {
        "bundle": "baseline/commsaudit-20261109T060000Z-b.zip"
    }


# --- running the action's steps here ------------------------------------------------------------


def parse_outputs(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines, or `name<<DELIMITER` blocks."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block: list[str] = []
            index += 1
            while lines[index] != delimiter:
                block.append(lines[index])
                index += 1
            out[name] = "\n".join(block)
        elif line:
            name, value = line.split("=", 1)
            out[name] = value
        index += 1
    return out


@dataclass
class StepResult:
    name: str
    ran: bool
    uses: str | None = None
    with_: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class ActionRun:
    steps: list[StepResult]
    outputs: dict[str, str]
    exit_code: int
    summary: str
    workspace: Path

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)

    def uses(self, action: str) -> StepResult:
        return next(s for s in self.steps if s.uses and s.uses.split("@")[0] == action)

    def everything_printed(self) -> str:
        return self.summary + "".join(s.stdout + s.stderr for s in self.steps)


def run_action(
    given: dict[str, str], *, workspace: Path, env: dict[str, str], path: str | None = None
) -> ActionRun:
    """Run action.yml the way the runner does: `if:` decides, `${{ }}` is replaced before bash
    sees a script, each run step gets its own GITHUB_OUTPUT, and `uses:` steps (setup-python,
    upload-artifact, upload-sarif) are recorded with their inputs instead of run."""
    action = load_file(ACTION)
    declared = action.get("inputs", {})
    unknown = set(given) - set(declared)
    assert not unknown, f"not inputs of the action: {unknown}"
    inputs = {name: spec.get("default", "") for name, spec in declared.items()} | given
    runner = workspace.parent / "runner"
    temp = runner / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    summary = runner / "step_summary.md"
    summary.write_text("")
    github_env = runner / "github_env"
    github_env.write_text("")
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))},
        "PATH": path if path is not None else f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_ACTION_PATH": str(REPO),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_ENV": str(github_env),
        "RUNNER_TEMP": str(temp),
        **env,
    }
    base_env.pop("COMMSAUDIT_SIGNING_KEY", None)
    context: dict[str, Any] = {
        "inputs": inputs,
        "github": {"action_path": str(REPO), "workspace": str(workspace)},
        "steps": {},
        "runner": {"temp": str(temp)},
    }
    failed = False
    results: list[StepResult] = []
    for index, step in enumerate(action["runs"]["steps"]):
        name = step.get("name", f"step {index}")
        if not condition(step, context, failed=failed):
            results.append(StepResult(name, ran=False, uses=step.get("uses")))
            continue
        if "uses" in step:
            with_ = {k: substitute(as_text(v), context) for k, v in step.get("with", {}).items()}
            results.append(StepResult(name, ran=True, uses=step["uses"], with_=with_))
            continue
        assert step["shell"] == "bash"
        script = runner / f"step-{index}.sh"
        script.write_text(substitute(step["run"], context))
        output = runner / f"output-{index}"
        output.write_text("")
        step_env = {k: substitute(as_text(v), context) for k, v in step.get("env", {}).items()}
        proc = subprocess.run(
            # GitHub's command line for `shell: bash`.
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace / step.get("working-directory", "."),
            env={
                **base_env,
                **parse_outputs(github_env.read_text()),
                **step_env,
                "GITHUB_OUTPUT": str(output),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outputs = parse_outputs(output.read_text())
        if "id" in step:
            context["steps"][step["id"]] = {"outputs": outputs}
        results.append(
            StepResult(
                name,
                ran=True,
                returncode=proc.returncode,
                stdout=proc.stdout,
                stderr=proc.stderr,
                outputs=outputs,
            )
        )
        failed = failed or proc.returncode != 0
    final = results[-1]
    assert final.ran and final.returncode is not None
    outputs = {name: substitute(spec["value"], context) for name, spec in action["outputs"].items()}
    return ActionRun(results, outputs, final.returncode, summary.read_text(), workspace)


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[str, Path]:
    """(private PEM, public key file), as `commsaudit keygen` makes them."""
    proc = run_cli("keygen", "--out", tmp_path / "keys" / "signing.pem", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / "keys" / "signing.pem").read_text(), tmp_path / "keys" / "signing.pub.pem"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


class _GitHubTokenService:
    """Stands in for the runner's OIDC token service (ACTIONS_ID_TOKEN_REQUEST_URL): answers a
    request that carries the runner's request token with a federated token the sandbox trusts."""

    def __init__(self, token: str, request_token: str) -> None:
        self.requests: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                if self.headers.get("Authorization") != f"bearer {request_token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"value": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _GitHubTokenService:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/_apis/token?api-version=2.0"


def _assert_ran_like_ci(run: ActionRun, public_key: Path, key: str) -> dict[str, Any]:
    """What every successful run of the action must leave behind; returns the results."""
    # The steps it does not run here are there, pinned by commit (the release is the line's
    # comment, checked in test_action_pins.py), and would have run.
    python = run.uses("actions/setup-python")
    assert re.fullmatch(r"actions/setup-python@[0-9a-f]{40}", python.uses or "")
    assert not python.ran  # install: false
    upload = run.uses("actions/upload-artifact")
    assert re.fullmatch(r"actions/upload-artifact@[0-9a-f]{40}", upload.uses or "") and upload.ran
    assert upload.with_["path"] == "commsaudit-out"
    assert upload.with_["name"] == "commsaudit-evidence"
    assert upload.with_["retention-days"] == "90"
    sarif = run.uses("github/codeql-action/upload-sarif")
    assert re.fullmatch(r"github/codeql-action/upload-sarif@[0-9a-f]{40}", sarif.uses or "")
    assert sarif.ran
    assert (run.workspace / sarif.with_["sarif_file"]).is_file()
    assert json.loads((run.workspace / sarif.with_["sarif_file"]).read_text())["runs"]

    # The job summary is the Markdown report.
    assert "commsaudit report" in run.summary
    summary_file = run.workspace / run.outputs["summary"]
    assert summary_file.read_text() in run.summary

    # This run's bundle, signed with the key given, which verify accepts.
    bundle = run.workspace / run.outputs["bundle"]
    assert bundle.is_file() and zipfile.is_zipfile(bundle)
    assert bundle.parent == run.workspace / "commsaudit-out"
    verified = run_cli("verify", bundle, "--key", public_key, cwd=run.workspace)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The exit code is the audit's, and the last step passes it on to fail the job.
    results: dict[str, Any] = json.loads(Path(run.outputs["results"]).read_text())
    assert results["format"] == "commsaudit/results/v1"
    assert member_json(bundle, "results.json")["run"]["id"] == results["run"]["id"]
    assert run.outputs["exit-code"] in {"0", "1"}
    assert run.exit_code == int(run.outputs["exit-code"])

    # The signing key was never printed (not in any log, the summary or an output).
    body = "".join(line for line in key.splitlines() if "PRIVATE KEY" not in line)
    assert body and body not in run.everything_printed()
    assert body not in "".join(run.outputs.values())
    return results


@pytest.mark.parametrize("oidc", ["token-file", "github-token-request"])
def test_the_action_audits_the_sandbox_tenant_signed_in_with_oidc(
    workspace: Path, signing_key: tuple[str, Path], oidc: str
) -> None:
    key, public_key = signing_key
    with Sandbox(TENANTS / "contoso-health") as sandbox:
        m365 = sandbox.config_toml("workload-identity")
        env: dict[str, str] = {}
        service = None
        if oidc == "github-token-request":
            # As in GitHub Actions: no token file; commsaudit asks the runner's token service.
            m365 = "".join(
                line
                for line in m365.splitlines(keepends=True)
                if not line.startswith("federated_token_file")
            )
            service = _GitHubTokenService(sandbox.federated_token_file.read_text(), "runner-req")
            env = {"ACTIONS_ID_TOKEN_REQUEST_URL": service.url}
            env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "runner-req"
        (workspace / "commsaudit.toml").write_text(
            m365 + BREAK_GLASS + '\n[policies]\ncontrols = ["m365.*", "provider.microsoft.baa"]\n'
        )
        given = {"install": "false", "signing-key": key, "sarif": "true"}
        if service is not None:
            with service:
                run = run_action(given, workspace=workspace, env=env)
            # One token per audience the hipaa controls read: Graph, Exchange, Security &
            # Compliance (no Teams control is among them, so no Teams sign-in).
            assert len(service.requests) == 3
            assert all("audience=api%3A//AzureADTokenExchange" in r for r in service.requests)
        else:
            run = run_action(given, workspace=workspace, env=env)
        assert sandbox.refused == []
        signed_in = [e for e in sandbox.log if e.path.endswith("/oauth2/v2.0/token")]
        assert signed_in and all(e.status == 200 for e in signed_in)

    assert run.step("Install commsaudit").returncode == 0
    results = _assert_ran_like_ci(run, public_key, key)
    statuses = {r["control"]: r["status"] for r in results["results"]}
    assert statuses["m365.mfa.all-users"] == "pass"
    # No BAA on file: a failed control, so exit 1 and the job fails on it.
    assert statuses["provider.microsoft.baa"] == "fail"
    assert run.outputs["exit-code"] == "1" and run.exit_code == 1
    assert "at least one control failed" in run.summary


def _attestations_only(workspace: Path, *, training_completed: int) -> None:
    """A config that audits an attestations file only: quick, and no network."""
    # A month ago: current, and never later than the run, whenever the test runs.
    held = (dt.date.today() - dt.timedelta(days=30)).isoformat()
    (workspace / "attestations.yaml").write_text(
        "format: commsaudit/attestations/v1\n"
        "organisation: Example Clinic\n"
        "trainings:\n"
        f"  - {{date: {held}, workforce: 100, completed: {training_completed}}}\n"
    )
    (workspace / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n'
        '[policies]\ncontrols = ["org.training.current"]\n'
    )


def test_fail_on_new_uses_the_baseline_and_a_directory_of_bundles_is_accepted(
    workspace: Path, signing_key: tuple[str, Path]
) -> None:
    key, public_key = signing_key
    _attestations_only(workspace, training_completed=50)
    first = run_action({"install": "false", "signing-key": key}, workspace=workspace, env={})
    assert first.exit_code == 1, first.everything_printed()
    previous = workspace / "baseline"
    previous.mkdir()
    shutil.copy(workspace / first.outputs["bundle"], previous)

    # The same failure again: nothing new, so `new` passes while `any` would not.
    second = run_action(
        {"install": "false", "signing-key": key, "baseline": "baseline", "fail-on": "new"},
        workspace=workspace,
        env={},
    )
    assert second.exit_code == 0, second.everything_printed()
    results = _assert_ran_like_ci_without_sarif(second, public_key)
    assert results["summary"]["fail"] == 1
    assert second.outputs["bundle"] != first.outputs["bundle"]


def _assert_ran_like_ci_without_sarif(run: ActionRun, public_key: Path) -> dict[str, Any]:
    assert not run.uses("github/codeql-action/upload-sarif").ran  # sarif: false (the default)
    assert "commsaudit report" in run.summary
    bundle = run.workspace / run.outputs["bundle"]
    verified = run_cli("verify", bundle, "--key", public_key, cwd=run.workspace)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    results: dict[str, Any] = json.loads(Path(run.outputs["results"]).read_text())
    return results


def test_fail_on_new_without_a_baseline_counts_every_failure(
    workspace: Path, signing_key: tuple[str, Path]
) -> None:
    key, _public_key = signing_key
    _attestations_only(workspace, training_completed=50)
    run = run_action(
        {"install": "false", "signing-key": key, "fail-on": "new", "baseline": "baseline/"},
        workspace=workspace,
        env={},
    )
    assert run.exit_code == 1
    audit = run.step("Audit")
    assert "no baseline bundle at baseline/" in audit.stdout
    assert "every failure counts as new" in audit.stdout


def test_a_passing_audit_exits_0(workspace: Path, signing_key: tuple[str, Path]) -> None:
    key, public_key = signing_key
    _attestations_only(workspace, training_completed=99)
    run = run_action({"install": "false", "signing-key": key}, workspace=workspace, env={})
    assert run.outputs["exit-code"] == "0" and run.exit_code == 0, run.everything_printed()
    _assert_ran_like_ci_without_sarif(run, public_key)


def test_an_audit_that_judged_nothing_exits_3_and_the_summary_does_not_call_it_a_pass(
    workspace: Path, signing_key: tuple[str, Path]
) -> None:
    key, _public_key = signing_key
    # A tenant whose sign-in endpoint refuses connections: every Microsoft 365 control is error.
    closed = "https://127.0.0.1:9"
    endpoints = ", ".join(
        f'{k} = "{closed}"' for k in ("authority", "graph", "exchange", "compliance", "teams")
    )
    (workspace / "commsaudit.toml").write_text(
        '[m365]\ntenant_id = "contoso.onmicrosoft.com"\n'
        'client_id = "00000000-0000-0000-0000-000000000001"\nauth = "client-secret"\n'
        'client_secret_env = "TEST_M365_SECRET"\n'
        f"endpoints = {{ {endpoints} }}\n"
        '[policies]\ncontrols = ["m365.exo.smtp-auth-disabled"]\n'
    )
    env = {"TEST_M365_SECRET": "not-a-real-secret"}
    run = run_action({"install": "false", "signing-key": key}, workspace=workspace, env=env)
    assert run.outputs["exit-code"] == "3" and run.exit_code == 3, run.everything_printed()
    results = json.loads(Path(run.outputs["results"]).read_text())
    assert results["summary"]["error"] == 1 and results["summary"]["fail"] == 0
    assert "every evaluated control passed" not in run.summary
    assert "1 could not be judged (error): this run is not a pass" in run.summary
    # With --allow-errors the job passes, and the summary still says what was not judged.
    allowed = run_action(
        {"install": "false", "signing-key": key, "args": "--allow-errors"},
        workspace=workspace,
        env=env,
    )
    assert allowed.exit_code == 0, allowed.everything_printed()
    assert "every evaluated control passed" not in allowed.summary
    assert "1 could not be judged (error; allowed by --allow-errors)" in allowed.summary


def test_an_audit_that_cannot_run_exits_2_and_says_why(workspace: Path) -> None:
    run = run_action({"install": "false", "config": "missing.toml"}, workspace=workspace, env={})
    assert run.outputs["exit-code"] == "2" and run.exit_code == 2
    assert run.outputs["bundle"] == "" and run.outputs["summary"] == ""
    assert "the audit could not run" in run.summary
    assert "missing.toml" in run.summary  # the end of commsaudit's own message
    # The evidence step still runs (with whatever there is), then the job fails.
    assert run.uses("actions/upload-artifact").ran


def test_install_false_without_commsaudit_on_path_fails_the_job(workspace: Path) -> None:
    bare = os.pathsep.join(d for d in ("/usr/bin", "/bin") if not (Path(d) / "commsaudit").exists())
    run = run_action({"install": "false"}, workspace=workspace, env={}, path=bare)
    install = run.step("Install commsaudit")
    assert install.returncode == 2
    assert "no commsaudit is on PATH" in install.stdout
    assert not run.step("Audit").ran
    assert run.outputs["exit-code"] == "" and run.exit_code == 2
