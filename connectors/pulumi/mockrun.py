"""Run a Pulumi Python program under `pulumi.runtime.set_mocks` and print every resource it
registers (type, name, inputs, provider) as JSON on stdout. Nothing is deployed: the mocks
answer each registration with a placeholder id and the inputs as outputs.

Run as `python mockrun.py PROGRAM_DIR STACK CONFIG_JSON`, in a process of its
own: a user's program imports what it likes and leaves global state behind, and the Pulumi
runtime keeps module-level settings, so the auditor never runs it in its own interpreter."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

# The inputs that become a resource's id on deployment (bucket, trail, log group, topic, ...).
_ID_INPUTS = ("bucket", "configurationSetName", "emailIdentity", "name")


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(
            {
                "type": args.typ,
                "name": args.name,
                "inputs": args.inputs,
                "provider": args.provider or None,
                "custom": bool(args.custom),
            }
        )
        # No id exists before deployment. Where AWS makes the id the resource's own name (a
        # bucket, a trail), that is the id; elsewhere a placeholder that says what it is.
        named = next(
            (args.inputs[k] for k in _ID_INPUTS if isinstance(args.inputs.get(k), str)), None
        )
        resource_id = named or f"{args.name}-undeployed"
        service = args.typ.split(":")[1].split("/")[0] if args.typ.count(":") == 2 else "unknown"
        outputs = {"arn": f"arn:aws:{service}:undeployed:undeployed:{resource_id}", **args.inputs}
        return resource_id, outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":  # noqa: S105
            return {"accountId": "000000000000", "arn": "", "userId": ""}, None
        if args.token == "aws:index/getRegion:getRegion":  # noqa: S105
            return {"name": args.args.get("name") or "us-east-1", "id": "us-east-1"}, None
        return {}, None


def main(argv: list[str]) -> int:
    program, stack, config_json = argv
    # Run by path, this file's directory leads sys.path; the program's own modules come first.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    directory = Path(program).resolve()
    project, main_path = _project(directory)
    config: dict[str, str] = json.loads(config_json)
    recorder = _Recorder()
    pulumi.runtime.set_mocks(recorder, project=project, stack=stack, preview=False)
    pulumi.runtime.set_all_config(config)
    entry = main_path if main_path.is_file() else main_path / "__main__.py"
    sys.path.insert(0, str(entry.parent))
    os.chdir(entry.parent)
    # Output the program writes must not mix with the JSON on stdout.
    real_stdout = sys.stdout
    sys.stdout = sys.stderr

    def program_main() -> None:
        runpy.run_path(str(entry), run_name="__main__")

    try:
        _sync_await(run_pulumi_func(program_main))
    finally:
        sys.stdout = real_stdout
    json.dump({"project": project, "stack": stack, "resources": recorder.resources}, sys.stdout)
    return 0


def _project(directory: Path) -> tuple[str, Path]:
    """The project's name and its program (Pulumi.yaml's `main`, default the directory)."""
    for name in ("Pulumi.yaml", "Pulumi.yml"):
        path = directory / name
        if path.is_file():
            import yaml

            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            main = (
                (directory / str(document["main"])).resolve() if document.get("main") else directory
            )
            return str(document.get("name") or directory.name), main
    return directory.name, directory


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
