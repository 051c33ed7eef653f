"""Pulumi's SDK is an optional extra (`commsaudit[pulumi]`): a stack given as an export file needs
nothing of it, and a stack that needs it (the Automation API, a program under mocks) says how to
install it instead of failing obscurely."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO, run_cli

_EXPORT = REPO / "fixtures" / "demo" / "contoso-health" / "contoso-comms-prod.export.json"


def _without_pulumi(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import pulumi` fails, as in an install without the extra."""
    shadow = tmp_path / "shadow" / "pulumi"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'pulumi'\")\n")
    return {"PYTHONPATH": str(tmp_path / "shadow")}


def _audit(tmp_path: Path, stack: str) -> dict[str, object]:
    (tmp_path / "commsaudit.toml").write_text(
        f"[pulumi]\nstacks = [{stack}]\n"
        '[policies]\ncontrols = ["pulumi.*"]\n[evidence]\nout = "out"\n'
    )
    proc = run_cli("audit", "--format", "json", cwd=tmp_path, env=_without_pulumi(tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    results: dict[str, object] = json.loads(proc.stdout) if proc.stdout else {}
    results["stderr"] = proc.stderr
    return results


def test_an_export_file_needs_no_pulumi_sdk(tmp_path: Path) -> None:
    results = _audit(tmp_path, f'{{ export = "{_EXPORT}" }}')
    statuses = {r["status"] for r in results["results"]}  # type: ignore[union-attr]
    assert "error" not in statuses, results["stderr"]


def test_the_automation_api_without_the_sdk_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    results = _audit(tmp_path, '{ work_dir = "project", stack = "dev" }')
    reasons = " ".join(str(r["reason"]) for r in results["results"])  # type: ignore[union-attr]
    assert "pip install 'commsaudit[pulumi]'" in reasons, reasons
