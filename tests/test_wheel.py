"""`pip install .` gives a working commsaudit: the wheel carries the policies, schemas, templates
and demo fixtures, and the demo runs from it with no checkout in sight."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

pytest.importorskip(
    "hatchling", reason="building the wheel offline needs the test extra's hatchling"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return next(out.glob("commsaudit-*.whl"))


def test_wheel_carries_the_data_the_demo_needs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (REPO / "policies").glob("*.json"))
    assert shipped
    for name in shipped:
        assert f"auditor/_data/policies/{name}" in names
    for required in (
        "auditor/_data/fixtures/demo/contoso-health/commsaudit.toml.tmpl",
        "auditor/_data/fixtures/demo/contoso-health/attestations.yaml.tmpl",
        "auditor/_data/fixtures/demo/contoso-health/recorded-sections.json",
        "auditor/_data/fixtures/tenants/contoso-health/tenant.json",
        "auditor/_data/fixtures/tenants/contoso-health/exo/Get-TransportConfig.json",
        "auditor/schemas/policy.schema.json",
        "auditor/reports/templates/report.html.j2",
        "connectors/attestations/schema.json",
    ):
        assert required in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    # run(): main, then an exit that skips the interpreter's teardown of a large run.
    assert "commsaudit = auditor.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_demo_and_verify_run_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    prelude = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import auditor; "
        f"assert auditor.__file__.startswith({str(site)!r}), auditor.__file__; "
        "from auditor.cli import main; "
    )
    audit = subprocess.run(
        [
            sys.executable,
            "-c",
            prelude + "raise SystemExit(main(['audit', '--demo', '--out', 'out']))",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 1, audit.stderr
    bundle = next((work / "out").glob("*.zip"))
    verify = subprocess.run(
        [sys.executable, "-c", prelude + f"raise SystemExit(main(['verify', {str(bundle)!r}]))"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
