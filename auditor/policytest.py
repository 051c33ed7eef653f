"""Run each policy's own examples: an example that must pass passes, one that must fail fails
at the pointers it names. `commsaudit policies test` runs these (`policies lint` checks only
that each policy has both kinds)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.engine import SchemaCache, judge
from auditor.policy import Policy
from auditor.validation import EvaluationError


@dataclass(frozen=True)
class ExampleOutcome:
    policy: str
    example: str
    expected: str
    got: str
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def run_examples(policy: Policy, backend: str = "auto") -> list[ExampleOutcome]:
    compiled = SchemaCache(backend)
    outcomes = []
    for example in policy.examples:
        profile = example.profile or policy.profiles[0]
        values = policy.resolve_parameters(example.parameters)
        try:
            verdict = judge(policy, example.input, profile, values, compiled)
        except EvaluationError as exc:
            outcomes.append(
                ExampleOutcome(policy.id, example.name, example.expect, "error", f"error: {exc}")
            )
            continue
        problem = None
        if verdict.status != example.expect:
            problem = f"expected {example.expect}, got {verdict.status}"
            if verdict.failures:
                first = verdict.failures[0]
                problem += f" ({first.pointer or '(whole section)'} {first.message})"
        elif example.fail_pointers:
            found = {f.pointer for f in verdict.failures}
            missing = [p for p in example.fail_pointers if p not in found]
            if missing:
                problem = (
                    f"failed, but not at {', '.join(missing)} "
                    f"(failures at: {', '.join(sorted(found)) or 'none'})"
                )
        outcomes.append(
            ExampleOutcome(policy.id, example.name, example.expect, verdict.status, problem)
        )
    return outcomes
