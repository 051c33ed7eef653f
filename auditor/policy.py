"""Policy files: the model, loading, and the structural checks behind `policies lint`.

A policy is data: metadata an auditor reads plus a JSON Schema (draft 2020-12) that the snapshot
section(s) it names must satisfy. Every file is checked against our own meta-schema when it is
loaded, so a broken policy stops the run with a line naming the file and the problem.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs

from auditor.errors import ConfigError, PolicyError
from auditor.jsonutil import JSON, MAX_DEPTH, loads_strict, pointer
from auditor.model.catalogue import Catalogue, path_of_pointer, paths_read
from auditor.model.errors import quote
from auditor.resources import schema_path
from auditor.validation import evaluation_problems, python_validator

FORMAT = "commsaudit/policy/v1"
SAFEGUARDS = {
    "164.308": "Administrative safeguards",
    "164.310": "Physical safeguards",
    "164.312": "Technical safeguards",
    "164.314": "Organizational requirements",
    "164.316": "Policies, procedures and documentation",
}
PLATFORM_TITLES = {
    "m365": "Microsoft 365",
    "aws": "AWS",
    "dns": "Email posture (DNS)",
    "pulumi": "Pulumi stacks",
    "org": "Organisation",
}


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str
    default: JSON
    schema: dict[str, Any] | None


@dataclass(frozen=True)
class Example:
    name: str
    expect: str
    input: JSON
    profile: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    fail_pointers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    id: str
    title: str
    severity: str
    responsibility: str
    citations: tuple[str, ...]
    category: str
    platform: str
    subject_kind: str
    profiles: tuple[str, ...]
    rationale: str
    remediation_summary: str
    remediation_steps: tuple[str, ...]
    remediation_references: tuple[str, ...]
    source: str | dict[str, str]
    schema: JSON
    profile_schemas: dict[str, JSON]
    applicable_schema: JSON | None
    applicable_reason: str | None
    parameters: dict[str, Parameter]
    evidence_pointers: tuple[str, ...]
    explain_pass: str | None
    explain_fail: str | None
    examples: tuple[Example, ...]
    file_name: str
    content: bytes = field(repr=False)
    scuba: tuple[str, ...] = ()  # CISA SCuBA baseline policy ids

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def sections(self) -> dict[str, str]:
        """Instance property -> section name; a single-section policy maps "" to its section."""
        if isinstance(self.source, str):
            return {"": self.source}
        return dict(self.source)

    @property
    def remediation_text(self) -> str:
        steps = " ".join(f"{i}. {step}" for i, step in enumerate(self.remediation_steps, 1))
        return f"{self.remediation_summary} {steps}".strip()

    def resolve_parameters(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        values = {name: p.default for name, p in self.parameters.items()}
        values.update(overrides or {})
        return values

    def schema_for(self, profile: str, values: Mapping[str, Any]) -> JSON:
        chosen = self.profile_schemas.get(profile, self.schema)
        return substitute(chosen, values)

    def applicable_for(self, values: Mapping[str, Any]) -> JSON | None:
        if self.applicable_schema is None:
            return None
        return substitute(self.applicable_schema, values)

    def check_values(self, values: Mapping[str, Any], where: str) -> None:
        """ConfigError when parameter values make a schema that cannot be evaluated (a pattern
        given in the config that RE2 cannot run): lint checked only the defaults."""
        schemas = {"/schema": substitute(self.schema, values)}
        for profile in self.profile_schemas:
            schemas[f"/profile_schemas/{profile}"] = self.schema_for(profile, values)
        applicable = self.applicable_for(values)
        if applicable is not None:
            schemas["/applicable/schema"] = applicable
        for at, schema in schemas.items():
            for inner, why in evaluation_problems(schema)[:1]:
                raise ConfigError(
                    f"{where}: with these values, {self.file_name} {at}{inner}: {why}"
                )


def substitute(schema: JSON, values: Mapping[str, Any]) -> JSON:
    """Replace every `{"$param": NAME}` with the parameter's value."""
    if isinstance(schema, dict):
        if set(schema) == {"$param"}:
            return copy.deepcopy(values[schema["$param"]])
        return {k: substitute(v, values) for k, v in schema.items()}
    if isinstance(schema, list):
        return [substitute(v, values) for v in schema]
    return schema


def _walk(node: JSON, path: list[str | int]) -> Iterator[tuple[list[str | int], JSON]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, [*path, key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, [*path, i])


def param_references(schema: JSON) -> list[tuple[str, str]]:
    """(pointer, parameter name) for every `$param` in a schema."""
    return [
        (pointer(path), node["$param"])
        for path, node in _walk(schema, [])
        if isinstance(node, dict) and set(node) == {"$param"}
    ]


@cache
def _meta_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        schema_path("policy.schema.json").read_text(encoding="utf-8")
    )
    return schema


@cache
def meta_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_meta_schema())


@cache
def _fast_meta_validator() -> Any:
    """The same policy meta-schema in jsonschema-rs: a valid document (every bundled policy, on
    every run) is confirmed in microseconds; only a document it rejects goes through the
    reference validator, for the messages."""
    return jsonschema_rs.Draft202012Validator(_meta_schema())


def _schema_problems(schema: JSON, where: str, values: Mapping[str, Any]) -> list[str]:
    problems = []
    for path, node in _walk(schema, []):
        if not isinstance(node, dict):
            continue
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                problems.append(
                    f"{where}{pointer([*path, key])}: {key} {ref!r} points outside the policy; "
                    "only local references (#/$defs/...) are allowed, so evaluation never "
                    "fetches anything"
                )
        if "$id" in node:
            problems.append(f"{where}{pointer([*path, '$id'])}: $id is not allowed in a policy")
        if "$schema" in node and node["$schema"] != "https://json-schema.org/draft/2020-12/schema":
            problems.append(
                f"{where}{pointer([*path, '$schema'])}: policies use JSON Schema draft 2020-12"
            )
    if problems:
        return problems
    substituted = substitute(schema, values)
    # Only a schema jsonschema-rs doubts is explained through the reference validator.
    if not jsonschema_rs.meta.is_valid(substituted):
        try:
            jsonschema.Draft202012Validator.check_schema(substituted)
        except jsonschema.SchemaError as exc:
            at = pointer(exc.absolute_path)
            message = exc.message
            if exc.absolute_path and exc.absolute_path[-1] == "type":
                message = (
                    f"{exc.instance!r} is not a JSON Schema type (array, boolean, integer, null, "
                    "number, object, string)"
                )
            return [f"{where}{at}: not a valid JSON Schema: {message}"]
    # A valid schema may still be one an evaluation chokes on: an unresolvable or looping $ref,
    # a pattern RE2 cannot run. Lint finds it here, not the audit midway.
    return [f"{where}{at}: {why}" for at, why in evaluation_problems(substituted)]


def check_document(document: JSON) -> list[str]:
    """Every structural problem of a parsed policy document, as `/pointer: message` lines."""
    problems = []
    if _fast_meta_validator().is_valid(document):
        errors = []
    else:
        errors = sorted(
            meta_validator().iter_errors(document), key=lambda e: list(map(str, e.path))
        )
    for error in errors:
        where = pointer(error.absolute_path) or "(top level)"
        # At most the first line of the value, shortened: a document pasted into a field is
        # not printed back.
        message = error.message.replace(repr(error.instance), quote(error.instance))
        if error.validator == "additionalProperties":
            schema = error.schema if isinstance(error.schema, dict) else {}
            allowed = ", ".join(sorted(schema.get("properties", {})))
            message += f"; allowed: {allowed}"
        elif (
            error.validator == "contains"
            and error.absolute_path
            and error.absolute_path[-1] == "examples"
        ):
            message = "needs at least one example that must pass and one that must fail"
        elif len(message) > 200:
            message = message[:197] + "..."
        problems.append(f"{where}: {message}")
    if problems:
        return problems

    unknown = [i for i in document.get("scuba", []) if i not in scuba_baselines()]
    if unknown:
        problems.append(
            f"/scuba: {', '.join(unknown)} is no current SCuBA baseline policy "
            "(auditor/reference/scuba-baselines.json)"
        )
    declared = document.get("parameters", {})

    defaults = {name: p["default"] for name, p in declared.items()}
    for name, param in declared.items():
        if "schema" in param:
            try:
                jsonschema.Draft202012Validator.check_schema(param["schema"])
            except jsonschema.SchemaError as exc:
                problems.append(
                    f"/parameters/{name}/schema: not a valid JSON Schema: {exc.message}"
                )
                continue
            unusable = evaluation_problems(param["schema"])
            problems.extend(f"/parameters/{name}/schema{at}: {why}" for at, why in unusable)
            if unusable:
                continue
            error = jsonschema.exceptions.best_match(
                python_validator(param["schema"]).iter_errors(param["default"])
            )
            if error is not None:
                problems.append(f"/parameters/{name}/default: {error.message}")

    schemas = {"/schema": document["schema"]}
    for profile, schema in document.get("profile_schemas", {}).items():
        schemas[f"/profile_schemas/{profile}"] = schema
        if profile not in document["profiles"]:
            problems.append(
                f"/profile_schemas/{profile}: profile {profile!r} is not listed in profiles"
            )
    if "applicable" in document:
        schemas["/applicable/schema"] = document["applicable"]["schema"]
    for where, schema in schemas.items():
        unknown = [(p, n) for p, n in param_references(schema) if n not in declared]
        for at, name in unknown:
            problems.append(f"{where}{at}: $param {name!r} is not declared under parameters")
        if not unknown:
            problems.extend(_schema_problems(schema, where, defaults))
    for i, example in enumerate(document["examples"]):
        profile = example.get("profile")
        if profile is not None and profile not in document["profiles"]:
            problems.append(f"/examples/{i}/profile: {profile!r} is not listed in profiles")
        for name in example.get("parameters", {}):
            if name not in declared:
                problems.append(f"/examples/{i}/parameters: {name!r} is not a declared parameter")
    return problems


def parse_policy(content: bytes, file_name: str, where: str) -> Policy:
    """A Policy from a file's bytes; PolicyError lists every problem, each naming `where`."""
    try:
        # NaN and Infinity are not JSON; nesting is bounded before the parser recurses into it.
        document = loads_strict(content, max_depth=MAX_DEPTH)
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{where}: not UTF-8 text"]) from exc
    except json.JSONDecodeError as exc:
        raise PolicyError([f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from exc
    problems = check_document(document)
    if not problems and document["id"] != file_name.removesuffix(".json"):
        problems.append(
            f"/id: {document['id']!r} must match the file name {file_name!r} without .json"
        )
    if problems:
        raise PolicyError([f"{where}: {p}" for p in problems])

    remediation = document["remediation"]
    applicable = document.get("applicable")
    explain = document.get("explain", {})
    return Policy(
        id=document["id"],
        title=document["title"],
        severity=document["severity"],
        responsibility=document["responsibility"],
        citations=tuple(document["citations"]),
        scuba=tuple(document.get("scuba", [])),
        category=document["category"],
        platform=document["platform"],
        subject_kind=document["subject"],
        profiles=tuple(document["profiles"]),
        rationale=document["rationale"],
        remediation_summary=remediation["summary"],
        remediation_steps=tuple(remediation["steps"]),
        remediation_references=tuple(remediation.get("references", [])),
        source=document["source"],
        schema=document["schema"],
        profile_schemas=dict(document.get("profile_schemas", {})),
        applicable_schema=applicable["schema"] if applicable else None,
        applicable_reason=applicable["reason"] if applicable else None,
        parameters={
            name: Parameter(name, p["description"], p["default"], p.get("schema"))
            for name, p in document.get("parameters", {}).items()
        },
        evidence_pointers=tuple(document.get("evidence", [])),
        explain_pass=explain.get("pass"),
        explain_fail=explain.get("fail"),
        examples=tuple(
            Example(
                name=e["name"],
                expect=e["expect"],
                input=e["input"],
                profile=e.get("profile"),
                parameters=dict(e.get("parameters", {})),
                fail_pointers=tuple(e.get("fail_pointers", [])),
            )
            for e in document["examples"]
        ),
        file_name=file_name,
        content=content,
    )


def load_policy_file(path: Path) -> Policy:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return parse_policy(content, path.name, str(path))


def policy_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory of policy files"])
    return sorted(p for p in directory.glob("*.json") if p.is_file())


@dataclass(frozen=True)
class Override:
    """A policy file that replaced an earlier directory's file of the same id."""

    path: str
    replaces: str  # "built-in" for the bundled policies, else the earlier directory

    def warning(self, policy_id: str) -> str:
        what = (
            "the built-in control of that id"
            if self.replaces == "built-in"
            else f"the one of that id in {self.replaces}"
        )
        return f"policy {policy_id} from {self.path} replaces {what}"


@dataclass
class PolicySet:
    policies: dict[str, Policy]
    # Ids whose file replaced an earlier directory's: said in the run and the manifest, so an
    # override by accident (or by someone else) is never silent.
    overridden: dict[str, Override] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Policy]:
        return iter(sorted(self.policies.values(), key=lambda p: p.id))

    def __len__(self) -> int:
        return len(self.policies)

    @property
    def profiles(self) -> list[str]:
        return sorted({name for p in self.policies.values() for name in p.profiles})

    def digest(self) -> str:
        """Identifies the exact policy set: the hash of each file's hash and name."""
        lines = "".join(f"{p.sha256}  {p.file_name}\n" for p in self)
        return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()

    def select(
        self,
        profile: str,
        controls: Iterable[str] = (),
        skip_controls: Iterable[str] = (),
    ) -> PolicySet:
        if profile not in self.profiles:
            raise ConfigError(
                f"unknown profile {profile!r}; known profiles: {', '.join(self.profiles)}"
            )
        include = list(controls)
        exclude = list(skip_controls)
        chosen = {
            pid: p
            for pid, p in self.policies.items()
            if profile in p.profiles
            and (not include or any(fnmatch.fnmatchcase(pid, g) for g in include))
            and not any(fnmatch.fnmatchcase(pid, g) for g in exclude)
        }
        return PolicySet(chosen, {k: v for k, v in self.overridden.items() if k in chosen})

    def check_parameters(self, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        """ConfigError for a parameter override of an unknown control or parameter, or a value
        its schema rejects."""
        for control, values in overrides.items():
            policy = self.policies.get(control)
            if policy is None:
                raise ConfigError(f"[policies.parameters] names unknown control {control!r}")
            for name, value in values.items():
                param = policy.parameters.get(name)
                if param is None:
                    known = ", ".join(sorted(policy.parameters)) or "none"
                    raise ConfigError(
                        f'[policies.parameters."{control}"]: unknown parameter {name!r} '
                        f"(parameters of this control: {known})"
                    )
                if param.schema is not None:
                    error = jsonschema.exceptions.best_match(
                        python_validator(param.schema).iter_errors(value)
                    )
                    if error is not None:
                        raise ConfigError(
                            f'[policies.parameters."{control}"] {name}: {error.message}'
                        )
            policy.check_values(
                policy.resolve_parameters(values), f'[policies.parameters."{control}"]'
            )


def read_policy_files(directories: Iterable[Path]) -> tuple[list[tuple[Path, Policy]], list[str]]:
    """Every policy file of each directory, in order, and every problem found on the way."""
    loaded: list[tuple[Path, Policy]] = []
    problems: list[str] = []
    for directory in directories:
        try:
            files = policy_files(directory)
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        for path in files:
            try:
                loaded.append((path, load_policy_file(path)))
            except PolicyError as exc:
                problems.extend(exc.problems)
    return loaded, problems


def load_policies(directories: Iterable[Path], built_in: Path | None = None) -> PolicySet:
    """Policies from each directory in turn; a later directory overrides an earlier one's ids,
    and the set remembers which (`built_in` names the bundled directory). PolicyError lists
    every problem in every file."""
    loaded, problems = read_policy_files(directories)
    if problems:
        raise PolicyError(problems)
    policies: dict[str, Policy] = {}
    origin: dict[str, Path] = {}
    overridden: dict[str, Override] = {}
    for path, policy in loaded:
        if policy.id in origin:
            earlier = origin[policy.id].parent
            replaces = "built-in" if earlier == built_in else str(earlier)
            overridden[policy.id] = Override(str(path), replaces)
        policies[policy.id] = policy
        origin[policy.id] = path
    return PolicySet(policies, overridden)


def policies_from_contents(contents: Mapping[str, bytes], where: str) -> PolicySet:
    """Policies from file name -> bytes (as a bundle carries them)."""
    policies: dict[str, Policy] = {}
    problems: list[str] = []
    for name, content in sorted(contents.items()):
        try:
            policy = parse_policy(content, name, f"{where}/{name}")
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        policies[policy.id] = policy
    if problems:
        raise PolicyError(problems)
    return PolicySet(policies)


def catalogue_problems(policy_file: str, policy: Policy, catalogue: Catalogue) -> list[str]:
    """A source no connector emits, or a field the section's schema does not declare, read by
    the policy's schemas (each profile's, the applicability test's) or its evidence pointers;
    an example whose input the section's schema refuses."""
    reads = paths_read(policy.schema)
    for schema in [*policy.profile_schemas.values(), policy.applicable_schema]:
        reads |= paths_read(schema)
    reads |= {path_of_pointer(p) for p in policy.evidence_pointers}
    return catalogue.problems_of(policy_file, policy.sections, reads) + catalogue.example_problems(
        policy_file, policy.sections, ((e.name, e.input) for e in policy.examples)
    )


@cache
def scuba_baselines() -> dict[str, dict[str, str]]:
    """CISA's SCuBA baseline policies by id (auditor/reference/scuba-baselines.json)."""
    text = resources.files("auditor.reference").joinpath("scuba-baselines.json").read_text("utf-8")
    policies: dict[str, dict[str, str]] = json.loads(text)["policies"]
    return policies
