"""The Pulumi connector: each configured stack's declared AWS resources, normalised into the
sections the live AWS connector fills, under subjects of their own (`pulumi:<stack>` for the
account-wide sections, `pulumi:<stack>/<region>` for the regional ones), so the `aws.*` policies
judge "it will stay configured" beside "it is configured"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from auditor.model.errors import InputError
from auditor.model.section import Platform, SubjectKind
from connectors.base import CollectContext, Connector, Permission, RawRecord
from connectors.pulumi.normalise import (
    ACCOUNT_SECTIONS,
    REGION_SECTIONS,
    UNDECLARABLE,
    normalise,
)
from connectors.pulumi.sources import (
    StackError,
    StackState,
    automation_export,
    project_name,
    read_export,
    run_program,
)

_STACK: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "export": {
            "type": "string",
            "minLength": 1,
            "description": "A `pulumi stack export` file (deployment version 3).",
        },
        "program": {
            "type": "string",
            "minLength": 1,
            "description": "A Pulumi Python project directory, run under mocks (nothing "
            "is deployed).",
        },
        "work_dir": {
            "type": "string",
            "minLength": 1,
            "description": "A Pulumi project directory whose stack is exported through the "
            "Automation API (needs the Pulumi CLI and the stack's backend).",
        },
        "stack": {
            "type": "string",
            "minLength": 1,
            "description": "The stack to select (with program or work_dir).",
        },
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "What to call the stack in results (default: project/stack).",
        },
        "account": {
            "type": "string",
            "pattern": "^[0-9]{12}$",
            "description": "The live AWS account the stack deploys to, for the drift check "
            "(default: the only live account audited).",
        },
        "python": {
            "type": "string",
            "minLength": 1,
            "description": "The interpreter of the program's own environment (with program).",
        },
        "config": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Stack configuration to add or override (with program), keyed "
            "namespace:key.",
        },
    },
}


class PulumiConnector(Connector):
    name: ClassVar[str] = "pulumi"
    title: ClassVar[str] = "Pulumi stacks"
    platforms: ClassVar[tuple[Platform, ...]] = ("pulumi", "aws")
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["stacks"],
        "properties": {
            "stacks": {"type": "array", "minItems": 1, "items": _STACK},
            "default_region": {
                "type": "string",
                "minLength": 1,
                "description": "Region of resources whose provider names none (default "
                "us-east-1, as the AWS provider).",
            },
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.stacks: list[dict[str, Any]] = list(config["stacks"])
        self.read: list[dict[str, Any]] = []

    def preflight(self, now: Any) -> None:
        for index, stack in enumerate(self.stacks):
            sources = [key for key in ("export", "program", "work_dir") if key in stack]
            if len(sources) != 1:
                raise InputError(
                    "give each stack exactly one of export (a `pulumi stack export` file), "
                    "program (a project directory, run under mocks) or work_dir (exported "
                    f"through the Automation API); found {', '.join(sources) or 'none'}",
                    where=f"[pulumi] stacks[{index}]",
                )
            if sources[0] != "export" and "stack" not in stack:
                raise InputError(
                    f'{sources[0]} needs the stack to select: add stack = "<name>"',
                    where=f"[pulumi] stacks[{index}]",
                )
            for key in ("export", "program", "work_dir"):
                if key in stack and not (self.base_dir / stack[key]).exists():
                    raise InputError(
                        f"{key} {stack[key]!r} does not exist",
                        where=f"[pulumi] stacks[{index}]",
                    )

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        return [("pulumi", "stack", s["name"]) for s in self.stacks if s.get("name")]

    def scope(self) -> dict[str, Any]:
        return {"stacks": self.read}

    @classmethod
    def permissions(cls) -> list[Permission]:
        return [
            Permission("read the stack export file", "with `export`"),
            Permission(
                "pulumi stack export on the stack's backend",
                "with `work_dir` (Automation API; the backend token needs only read access "
                "to the stack)",
            ),
            Permission("none: the program runs under mocks", "with `program`"),
        ]

    async def collect(self, ctx: CollectContext) -> None:
        for stack in self.stacks:
            label = self._label(stack)
            ctx.progress(f"stack {label}")
            try:
                state = await ctx.run_blocking(self._load, stack)
            except StackError as exc:
                self._failed(ctx, label, str(exc))
                continue
            for secret in state.secrets:
                ctx.register_secret(secret)
            self.read.append(report_stack(ctx, state, stack.get("account")))

    def _label(self, stack: dict[str, Any]) -> str:
        """What to call a stack before (or without) reading it: as it will be named."""
        if stack.get("name"):
            return str(stack["name"])
        if "export" in stack:
            return str(stack["export"])
        directory = self.base_dir / (stack.get("program") or stack["work_dir"])
        return f"{project_name(directory)}/{stack['stack']}"

    def _load(self, stack: dict[str, Any]) -> StackState:
        region = str(self.config.get("default_region", "us-east-1"))
        name = stack.get("name")
        if "export" in stack:
            return read_export(self.base_dir / stack["export"], name, region)
        if "work_dir" in stack:
            return automation_export(
                self.base_dir / stack["work_dir"], stack["stack"], name, region
            )
        return run_program(
            self.base_dir / stack["program"],
            stack["stack"],
            dict(stack.get("config", {})),
            stack.get("python"),
            float(self.config.get("timeout_seconds", 120)),
            name,
            region,
        )

    def _failed(self, ctx: CollectContext, name: str, reason: str) -> None:
        subject = f"pulumi:{name}"
        ctx.add_subject("pulumi", "stack", name)
        ctx.add_subject("aws", "account", subject)
        ctx.add_section(
            "pulumi.stack",
            platform="pulumi",
            subject=name,
            data=None,
            source="pulumi",
            status="error",
            reason=reason,
        )
        for section in (*ACCOUNT_SECTIONS, *UNDECLARABLE, "provider.aws"):
            ctx.add_section(
                section,
                platform="aws",
                subject=subject,
                data=None,
                source="pulumi",
                status="error",
                reason=f"the stack could not be read: {reason}",
            )


def report_stack(
    ctx: CollectContext, state: StackState, account: str | None = None
) -> dict[str, Any]:
    """Put one stack's declared sections and subjects into `ctx`; returns its summary. The
    policy pack runs this too, on the resources of a `pulumi preview`."""
    declared = normalise(state.resources)
    account_subject = f"pulumi:{state.name}"
    file = "mock-run.json" if state.method == "mocks" else "stack-export.json"
    raw = ctx.add_raw(
        RawRecord(
            path=f"pulumi/{state.name}/{file}",
            source=f"pulumi:{state.method}",
            body=json.dumps(state.evidence, indent=1, sort_keys=True).encode(),
            collected_at=ctx.now,
            request={"method": state.method, "stack": state.name},
        )
    )
    source = f"pulumi:{state.method} {state.name}"
    regions = sorted(declared.regions)
    summary = {
        "name": state.name,
        "method": state.method,
        "account": account,
        "resources": len(state.resources),
        "types": sorted({r.type for r in state.resources}),
        "regions": regions,
        "declared_subjects": [account_subject, *(f"{account_subject}/{r}" for r in regions)],
    }
    ctx.add_subject("pulumi", "stack", state.name)
    ctx.add_section(
        "pulumi.stack",
        platform="pulumi",
        subject=state.name,
        data=summary,
        source=source,
        raw=(raw,),
    )
    ctx.add_subject("aws", "account", account_subject)
    for section in ACCOUNT_SECTIONS:
        _declared(
            ctx, section, account_subject, declared.account.get(section), raw, source, state.name
        )
    for section, why in UNDECLARABLE.items():
        ctx.add_section(
            section,
            platform="aws",
            subject=account_subject,
            data=None,
            source=source,
            status="not_applicable",
            reason=f"declared state: {why}",
        )
    # The BAA is an agreement for the live account, not a property of a stack.
    ctx.add_section(
        "provider.aws",
        platform="aws",
        subject=account_subject,
        data=None,
        source=source,
        status="not_applicable",
        reason="declared state: the BAA is judged on the live account",
    )
    for region in regions:
        subject = f"{account_subject}/{region}"
        ctx.add_subject("aws", "region", subject)
        for section in REGION_SECTIONS:
            _declared(
                ctx,
                section,
                subject,
                declared.regions[region].get(section),
                raw,
                source,
                state.name,
            )
    return summary


def _declared(
    ctx: CollectContext, section: str, subject: str, data: Any, raw: str, source: str, stack: str
) -> None:
    if data is None:
        ctx.add_section(
            section,
            platform="aws",
            subject=subject,
            data=None,
            source=source,
            raw=(raw,),
            status="not_applicable",
            reason=f"stack {stack} declares nothing this control reads",
        )
        return
    ctx.add_section(section, platform="aws", subject=subject, data=data, source=source, raw=(raw,))
