"""Evaluation throughput on a large section: 100,000 user records against an if/then schema
(every enabled member must be registered for MFA), through the whole engine, for each validator.

    python bench/engine_throughput.py [--users N] [--repeat R]

Prints figures only; nothing here asserts a time (see the developers' guide).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.engine import EvaluationContext, evaluate
from auditor.model.section import Section
from auditor.model.snapshot import Snapshot
from auditor.policy import PolicySet, parse_policy
from auditor.validation import BACKENDS, HAVE_RS

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
TENANT = "bench.onmicrosoft.com"

POLICY = {
    "format": "commsaudit/policy/v1",
    "id": "bench.mfa.registered-users",
    "title": "Every enabled member is registered for MFA",
    "severity": "high",
    "responsibility": "customer",
    "citations": ["164.312(d)"],
    "category": "authentication",
    "platform": "m365",
    "subject": "tenant",
    "profiles": ["hipaa"],
    "rationale": "Benchmark policy shaped like m365.mfa.registered-users.",
    "remediation": {"summary": "Register users for MFA.", "steps": ["Require registration."]},
    "source": "m365.entra.user_registration",
    "schema": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["userPrincipalName"],
            "if": {
                "properties": {"userType": {"const": "member"}, "accountEnabled": {"const": True}},
                "required": ["userType", "accountEnabled"],
            },
            "then": {
                "required": ["isMfaRegistered"],
                "properties": {
                    "isMfaRegistered": {"const": True, "description": "registered for MFA"}
                },
            },
        },
    },
    "evidence": [],
    "examples": [
        {
            "name": "registered",
            "expect": "pass",
            "input": [
                {
                    "userPrincipalName": "a",
                    "userType": "member",
                    "accountEnabled": True,
                    "isMfaRegistered": True,
                }
            ],
        },
        {
            "name": "not registered",
            "expect": "fail",
            "input": [
                {
                    "userPrincipalName": "a",
                    "userType": "member",
                    "accountEnabled": True,
                    "isMfaRegistered": False,
                }
            ],
        },
    ],
}


def users(count: int, failing_every: int | None) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        out.append(
            {
                "id": f"00000000-0000-0000-0000-{i:012d}",
                "userPrincipalName": f"user{i}@bench.example",
                "userType": "guest" if i % 10 == 0 else "member",
                "accountEnabled": i % 50 != 0,
                "isMfaRegistered": not (failing_every and i % failing_every == 0),
                "methodsRegistered": ["microsoftAuthenticatorPush", "softwareOneTimePasscode"],
            }
        )
    return out


def snapshot(data: list[dict[str, Any]]) -> Snapshot:
    snap = Snapshot(collected_at=NOW)
    snap.add_subject("m365", "tenant", TENANT)
    snap.sections.append(
        Section(
            "m365.entra.user_registration",
            "m365",
            TENANT,
            "ok",
            data,
            "graph:GET /v1.0/reports/authenticationMethods/userRegistrationDetails",
            NOW,
        )
    )
    return snap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    policy = parse_policy(json.dumps(POLICY).encode(), "bench.mfa.registered-users.json", "bench")
    policies = PolicySet({policy.id: policy})
    backends = BACKENDS if HAVE_RS else ("jsonschema",)
    print(f"{args.users:,} user records, if/then schema, best of {args.repeat} runs, whole engine")
    print(f"{'validator':<15} {'case':<26} {'seconds':>8} {'records/s':>12} {'evidence':>9}")
    for case, failing_every in (("all pass", None), ("1 in 7 unregistered", 7)):
        snap = snapshot(users(args.users, failing_every))
        for backend in backends:
            best = float("inf")
            evidence = 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                results = evaluate(
                    policies, snap, EvaluationContext("hipaa", NOW, backend=backend)
                ).results
                best = min(best, time.perf_counter() - started)
                evidence = len(results[0].evidence)
            print(
                f"{backend:<15} {case:<26} {best:>8.3f} {args.users / best:>12,.0f} {evidence:>9,}"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
