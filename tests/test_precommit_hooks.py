"""The pre-commit hooks a policy repository uses: each is a commsaudit command that passes on
good policy files and fails on a broken one."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from auditor.resources import policies_dir

from helpers import REPO, run_cli

HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())


@pytest.mark.parametrize("hook", HOOKS, ids=[h["id"] for h in HOOKS])
def test_each_hook_passes_good_policies_and_stops_a_broken_one(
    hook: dict[str, object], tmp_path: Path
) -> None:
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    command = shlex.split(str(hook["entry"]))
    assert command[0] == "commsaudit"
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(policies_dir() / "org.training.current.json", policies)
    good = run_cli(*command[1:], *hook["args"], cwd=tmp_path)  # type: ignore[misc]
    assert good.returncode == 0, good.stderr
    broken = json.loads((policies / "org.training.current.json").read_text())
    broken["schema"]["properties"]["latest"]["type"] = "objekt"
    (policies / "org.training.current.json").write_text(json.dumps(broken))
    bad = run_cli(*command[1:], *hook["args"], cwd=tmp_path)  # type: ignore[misc]
    assert bad.returncode != 0, bad.stdout
