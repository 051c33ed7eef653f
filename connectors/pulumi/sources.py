"""Where a stack's declared resources come from: a `pulumi stack export` file, the Automation
API (which runs the Pulumi CLI), or a Python program run under mocks. Each gives a StackState:
the resources, and a copy of what was read with every secret value removed, for the evidence."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auditor.jsonutil import loads_strict
from connectors.pulumi.normalise import TYPES, DeclaredResource

# How Pulumi marks a secret value in state and in the wire format (a signature, not a secret).
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105
REDACTED = "[secret]"
# Inputs a mock run sees in the clear that must not reach the evidence all the same.
_SENSITIVE_KEY = re.compile(r"(password|secret\w*|privatekey|token|credentials?)$", re.IGNORECASE)


class StackError(Exception):
    """The stack could not be read; the message says what to do."""


@dataclass
class StackState:
    name: str  # project/stack (or org/project/stack as configured)
    method: str  # export, automation or mocks
    resources: list[DeclaredResource]
    evidence: dict[str, Any]  # what was read, secrets removed
    secrets: list[str] = field(default_factory=list)  # plaintexts seen, to scrub from logs


def strip_secrets(value: Any, found: list[str]) -> Any:
    """`value` with every Pulumi secret replaced by a marker; plaintexts go into `found`."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            plaintext = value.get("plaintext")
            if isinstance(plaintext, str):
                try:
                    decoded = json.loads(plaintext)
                except json.JSONDecodeError:
                    decoded = plaintext
                found.extend(_strings(decoded))
            return REDACTED
        return {k: strip_secrets(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_secrets(v, found) for v in value]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _provider_urn(reference: str | None) -> str | None:
    # A provider reference is "<provider urn>::<provider id>".
    return reference.rsplit("::", 1)[0] if reference else None


def _region(
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    provider: str | None,
    providers: dict[str, str],
    default: str,
) -> str:
    for candidate in (inputs.get("region"), outputs.get("region"), providers.get(provider or "")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return default


def from_export(document: Any, where: str, name: str | None, default_region: str) -> StackState:
    """A `pulumi stack export` document (deployment version 3)."""
    if not isinstance(document, dict) or "deployment" not in document:
        raise StackError(
            f"{where}: not a Pulumi stack export (no 'deployment'); "
            "make one with `pulumi stack export --file FILE`"
        )
    if document.get("version") != 3:
        raise StackError(
            f"{where}: deployment version {document.get('version')!r} is not "
            "supported (expected 3, what Pulumi 3.x exports)"
        )
    found: list[str] = []
    clean = strip_secrets(document, found)
    deployment = clean["deployment"]
    # The secrets provider's state (salt, wrapped key) says nothing an auditor needs.
    if isinstance(deployment.get("secrets_providers"), dict):
        deployment["secrets_providers"] = {"type": deployment["secrets_providers"].get("type")}
    raw_resources = deployment.get("resources") or []
    providers = {
        str(r.get("urn")): str((r.get("inputs") or {}).get("region") or "")
        for r in raw_resources
        if str(r.get("type", "")).startswith("pulumi:providers:aws")
    }
    stack_name = name
    resources = []
    for r in raw_resources:
        rtype = str(r.get("type", ""))
        urn = str(r.get("urn", ""))
        if rtype == "pulumi:pulumi:Stack" and stack_name is None:
            # urn:pulumi:<stack>::<project>::pulumi:pulumi:Stack::<name>
            parts = urn.split("::")
            stack_name = (
                f"{parts[1]}/{parts[0].removeprefix('urn:pulumi:')}" if len(parts) > 2 else None
            )
        if rtype not in TYPES or r.get("delete"):
            continue
        inputs = r.get("inputs") or {}
        outputs = r.get("outputs") or {}
        resources.append(
            DeclaredResource(
                type=rtype,
                name=urn.rsplit("::", 1)[-1],
                inputs=inputs,
                outputs=outputs,
                region=_region(
                    inputs, outputs, _provider_urn(r.get("provider")), providers, default_region
                ),
                urn=urn,
                id=r.get("id"),
            )
        )
    if stack_name is None:
        raise StackError(
            f"{where}: the export has no stack resource to name the stack by; "
            "set `name` for this stack in [pulumi]"
        )
    return StackState(stack_name, "export", resources, clean, found)


def read_export(path: Path, name: str | None, default_region: str) -> StackState:
    try:
        document = loads_strict(path.read_bytes())  # NaN and Infinity are not JSON
    except OSError as exc:
        raise StackError(f"{path}: cannot read the stack export: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StackError(f"{path}: not valid JSON: {exc}") from None
    return from_export(document, str(path), name, default_region)


def automation_export(
    work_dir: Path, stack: str, name: str | None, default_region: str
) -> StackState:
    """`select_stack` and `export_stack` through the Automation API (needs the Pulumi CLI and
    access to the stack's backend)."""
    try:
        from pulumi import automation
    except ImportError:
        raise StackError(
            f"reading stack {stack!r} through the Automation API needs Pulumi's SDK, which is "
            "not installed: pip install 'commsaudit[pulumi]', or give this stack as "
            "`export = FILE` (from `pulumi stack export`)"
        ) from None

    try:
        selected = automation.select_stack(stack_name=stack, work_dir=str(work_dir))
        deployment = selected.export_stack()
    except FileNotFoundError:
        raise StackError(
            "the Pulumi CLI is not installed, and the Automation API needs it; install it "
            "(https://www.pulumi.com/docs/install/), or give this stack as `export = FILE` "
            "(from `pulumi stack export`) or `program = DIR` instead"
        ) from None
    except json.JSONDecodeError:
        raise StackError(
            f"pulumi stack export for {stack!r} did not print a stack export"
        ) from None
    except automation.errors.CommandError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise StackError(
            f"pulumi could not export stack {stack!r} from {work_dir}: "
            + (lines[-1] if lines else "the CLI failed")
        ) from None
    document = {"version": deployment.version, "deployment": deployment.deployment}
    state = from_export(document, f"stack {stack} in {work_dir}", name, default_region)
    state.method = "automation"
    return state


def project_name(directory: Path) -> str:
    """The project's name from its Pulumi.yaml (the directory's name when it has none)."""
    project_file = directory / "Pulumi.yaml"
    try:
        document = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return directory.name
    return (
        str(document.get("name") or directory.name)
        if isinstance(document, dict)
        else directory.name
    )


def stack_config(program: Path, stack: str) -> dict[str, str]:
    """The stack's configuration from `Pulumi.<stack>.yaml`, keyed `namespace:key` as the
    runtime expects; secure values are not decrypted (they read as a marker)."""
    project = project_name(program)
    path = program / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"
    if not path.is_file():
        return {}
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    config: dict[str, str] = {}
    for key, value in (document.get("config") or {}).items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and "secure" in value:
            config[full] = REDACTED
        else:
            config[full] = value if isinstance(value, str) else json.dumps(value)
    return config


def run_program(
    program: Path,
    stack: str,
    config: dict[str, str],
    python: str | None,
    timeout: float,
    name: str | None,
    default_region: str,
) -> StackState:
    """Run the program under `pulumi.runtime.set_mocks` in a child interpreter (its own
    project environment's Python when `python` is set) and read what it declares."""
    merged = {**stack_config(program, stack), **config}
    region = merged.get("aws:region") or default_region
    # By path, so a project's own interpreter needs only pulumi (and PyYAML, which it brings).
    command = [
        python or sys.executable,
        str(Path(__file__).with_name("mockrun.py")),
        str(program),
        stack,
        json.dumps(merged),
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_child_env(),
        )
    except FileNotFoundError:
        raise StackError(f"cannot run the program: no Python at {command[0]}") from None
    except subprocess.TimeoutExpired:
        raise StackError(
            f"the program in {program} did not finish under mocks within {timeout:.0f}s"
        ) from None
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()]
        hint = ""
        if any("No module named 'pulumi" in line for line in last):
            hint = (
                "; run it with the project's own environment: set `python` for this stack"
                if python
                else "; install Pulumi's SDK (pip install 'commsaudit[pulumi]' and the "
                "program's own packages), or set `python` to the project's environment"
            )
        why = last[-1] if last else "no message"
        raise StackError(f"the program in {program} failed under mocks: {why}{hint}")
    captured = json.loads(done.stdout)
    providers: dict[str, str] = {}
    for item in captured["resources"]:
        if str(item["type"]).startswith("pulumi:providers:aws"):
            providers[item["name"]] = str(item["inputs"].get("region") or "")
    resources = []
    evidence_items = []
    for item in captured["resources"]:
        if item["type"] not in TYPES:
            continue
        provider = item.get("provider") or ""
        # "<urn>::<id>"; the urn ends in the provider's name.
        provider_name = provider.rsplit("::", 2)[-2] if provider.count("::") >= 2 else ""
        inputs = _scrub(item["inputs"])
        resources.append(
            DeclaredResource(
                type=item["type"],
                name=item["name"],
                inputs=inputs,
                region=_region(inputs, {}, provider_name, providers, region),
            )
        )
        evidence_items.append({"type": item["type"], "name": item["name"], "inputs": inputs})
    full_name = name or f"{captured['project']}/{stack}"
    evidence = {
        "program": str(program),
        "stack": stack,
        "method": "mocks",
        "config": _scrub(merged),
        "resources": evidence_items,
    }
    return StackState(full_name, "mocks", resources, evidence)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _SENSITIVE_KEY.search(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _child_env() -> dict[str, str]:
    import os

    # The program runs with no cloud credentials: under mocks nothing may reach a provider.
    drop = ("AWS_", "AZURE_", "ARM_", "PULUMI_ACCESS_TOKEN", "GOOGLE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}
