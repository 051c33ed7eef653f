"""CrossGuard: the `aws.*` policy files enforced at `pulumi preview` time.

`commsaudit pulumi policy-pack DIR` writes a Pulumi policy pack whose policies (one per control)
hand the previewed resources to `stack_violations`: the same normaliser as the Pulumi connector,
the same engine, the same policy files (copied into the pack, so what the pack enforces is
pinned). A non-compliant change is then blocked before it is deployed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.engine import Engine, EvaluationContext
from auditor.errors import PolicyError
from auditor.policy import Policy, PolicySet, load_policies, read_policy_files
from auditor.resources import policies_dir
from connectors.pulumi.preview import PreviewResource, preview_snapshot

PACK_NAME = "commsaudit-aws"


@dataclass(frozen=True)
class Violation:
    control: str
    message: str
    urn: str | None


def stack_violations(
    resources: Iterable[PreviewResource],
    policies: PolicySet,
    *,
    profile: str = "hipaa",
    stack: str = "preview",
    default_region: str = "us-east-1",
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Violation]:
    """Each failing control on the previewed stack, with the resource to blame where one is."""
    now = dt.datetime.now(dt.UTC)
    snapshot = preview_snapshot(resources, stack, now, default_region)
    engine = Engine(EvaluationContext(profile=profile, now=now, parameters=parameters or {}))
    violations = []
    for policy in policies:
        for result in engine.evaluate_policy(policy, snapshot):
            if result.status != "fail":
                continue
            blamed = [
                str(e.context.get("resource"))
                for e in result.evidence
                if isinstance(e.context, dict) and e.context.get("resource")
            ]
            for urn in dict.fromkeys(blamed) or [None]:
                violations.append(Violation(policy.id, f"{policy.title}: {result.reason}", urn))
    return violations


def pack_policies_from(policies: PolicySet, profile: str) -> PolicySet:
    """The policies a pack enforces: the `aws.*` controls of the profile."""
    return policies.select(profile, ["aws.*"])


def pack_policies(directory: Path, profile: str) -> PolicySet:
    return pack_policies_from(load_policies([directory]), profile)


def make_validator(
    policies: PolicySet,
    control: str,
    profile: str,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[Any, Callable[..., None]], None]:
    """A StackValidationPolicy `validate` function for one control."""
    chosen = PolicySet({control: policies.policies[control]})

    def validate(args: Any, report_violation: Callable[..., None]) -> None:
        for violation in stack_violations(
            args.resources, chosen, profile=profile, parameters=parameters
        ):
            report_violation(violation.message, violation.urn)

    return validate


def pack_parameters(directory: Path) -> dict[str, dict[str, Any]]:
    """The `[policies.parameters]` the pack was written with (parameters.json)."""
    path = directory / "parameters.json"
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}


_MAIN = '''"""commsaudit policy pack: the aws.* policies in ./policies, enforced at pulumi preview.
Written by `commsaudit pulumi policy-pack`; regenerate it rather than editing it."""

from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy

from auditor.crossguard import make_validator, pack_parameters, pack_policies

HERE = Path(__file__).parent
PROFILE = {profile}
POLICIES = pack_policies(HERE / "policies", PROFILE)
PARAMETERS = pack_parameters(HERE)

PolicyPack(
    name={name},
    enforcement_level=EnforcementLevel.{level},
    policies=[
        StackValidationPolicy(
            name=policy.id,
            description=policy.title,
            validate=make_validator(POLICIES, policy.id, PROFILE, PARAMETERS),
        )
        for policy in POLICIES
    ],
)
'''


def write_pack(
    directory: Path,
    *,
    profile: str = "hipaa",
    mandatory: bool = True,
    version: str = "",
    policy_dirs: Sequence[Path] = (),
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Policy]:
    """Write the pack into `directory` (created if need be); returns the policies it enforces.
    `policy_dirs` add or override policies after the shipped ones, as `[policies] paths` does
    for an audit, so the pack enforces what the audit judges."""
    loaded, problems = read_policy_files([policies_dir(), *policy_dirs])
    if problems:
        raise PolicyError(problems)
    source = {policy.id: path for path, policy in loaded}  # later directories win
    chosen = pack_policies_from(PolicySet({p.id: p for _path, p in loaded}), profile)
    chosen.check_parameters({k: v for k, v in (parameters or {}).items() if k in chosen.policies})
    (directory / "policies").mkdir(parents=True, exist_ok=True)
    for old in (directory / "policies").glob("*.json"):
        old.unlink()  # a pack written again holds only what it enforces now
    for policy in chosen:
        shutil.copyfile(source[policy.id], directory / "policies" / policy.file_name)
    (directory / "parameters.json").write_text(
        json.dumps(
            {k: dict(v) for k, v in (parameters or {}).items() if k in chosen.policies},
            indent=2,
            sort_keys=True,
        )
        + "\n",
        encoding="utf-8",
    )
    (directory / "PulumiPolicy.yaml").write_text(
        "runtime: python\n"
        f"description: commsaudit {profile} controls for AWS, enforced at preview\n",
        encoding="utf-8",
    )
    level = "MANDATORY" if mandatory else "ADVISORY"
    (directory / "__main__.py").write_text(
        _MAIN.format(profile=json.dumps(profile), name=json.dumps(PACK_NAME), level=level),
        encoding="utf-8",
    )
    pin = f"=={version}" if version else ""
    (directory / "requirements.txt").write_text(
        "pulumi-policy>=1.10\n"
        f"# commsaudit provides the engine and normaliser the pack calls; install the same\n"
        f"# version that wrote the pack (from PyPI, or your own index or checkout).\n"
        f"commsaudit{pin}\n",
        encoding="utf-8",
    )
    (directory / "controls.json").write_text(
        json.dumps({"profile": profile, "controls": [p.id for p in chosen]}, indent=2) + "\n",
        encoding="utf-8",
    )
    return list(chosen)
