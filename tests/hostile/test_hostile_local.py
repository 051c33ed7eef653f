"""Hostile local state: files a key is written to, signals, the sandbox's own arguments, waivers.

What an attacker with a foothold on the runner (a planted link) or an unlucky user (Ctrl-C, a
typo in a port) can do to a run must end in one clear line, never a key in the wrong place, a
traceback, or a left-over temporary directory.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.m365.sandbox.server import Faults, Sandbox

from helpers import REPO, half_trained_attestations, run_cli

TENANT = REPO / "fixtures" / "tenants" / "contoso-health"


def test_keygen_refuses_a_dangling_link_where_the_key_goes(tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker" / "stolen.pem"
    elsewhere.parent.mkdir()
    (tmp_path / "k.pem").symlink_to(elsewhere)  # dangling: the target does not exist yet
    proc = run_cli("keygen", "--out", tmp_path / "k.pem", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "refusing" in proc.stderr and "Traceback" not in proc.stderr
    assert not elsewhere.exists()


def test_keygen_force_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker" / "stolen.pem"
    elsewhere.parent.mkdir()
    for name in ("k.pem", "k.pub.pem"):
        (tmp_path / name).symlink_to(elsewhere.with_name(name))
    proc = run_cli("keygen", "--out", tmp_path / "k.pem", "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not list(elsewhere.parent.iterdir())
    private = tmp_path / "k.pem"
    assert not private.is_symlink() and b"PRIVATE KEY" in private.read_bytes()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert not (tmp_path / "k.pub.pem").is_symlink()
    assert not list(tmp_path.glob("*.tmp"))


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`commsaudit ARGS` as a child with default signal handling (a shell's background job
    would ignore SIGINT), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "auditor", *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_during_collection_ends_the_run_in_one_line_and_leaves_nothing_behind(
    tmp_path: Path, signum: signal.Signals, code: int, word: str
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with Sandbox(TENANT, faults=Faults(latency_ms=1500)) as served:
        config = tmp_path / "commsaudit.toml"
        config.write_text(served.config_toml() + '[evidence]\nout = "out"\n')
        proc = _start(
            ["audit", "--config", str(config)],
            tmp_path,
            {**served.environment(), "TMPDIR": str(temp)},
        )
        _wait_for(lambda: len(served.log) >= 1, "the first answer")  # signed in, reading
        time.sleep(0.3)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Task" not in err, err
    assert err.strip().splitlines()[-1] == f"commsaudit: {word}", err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert not list(temp.iterdir())


def test_sigterm_during_the_demo_removes_its_temporary_directories(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = _start(
        ["audit", "--demo", "--out", str(tmp_path / "out")], tmp_path, {"TMPDIR": str(temp)}
    )
    _wait_for(
        lambda: any(p.name.startswith("commsaudit-sandbox-") for p in temp.iterdir()),
        "the demo's sandbox",
    )
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    assert not list(temp.iterdir())
    assert not list((tmp_path / "out").glob("*.zip*")) if (tmp_path / "out").exists() else True


class _Stopped(BaseException):
    """Stands for the SIGTERM the command raises where the run is."""


@pytest.mark.parametrize("where", ["making its keys", "starting"])
def test_a_sandbox_stopped_before_any_with_takes_it_leaves_no_key_files(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's SIGTERM test races the sandbox: a signal while its keys are made (in
    __init__), or while it starts (in __enter__), comes before any `with` could clean up, and the
    command ends without the interpreter's teardown. Each must remove the directory itself."""
    import connectors.m365.sandbox.server as server

    def stop(*_args: object, **_kwargs: object) -> None:
        raise _Stopped

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    # The exception is held, as the command holds it until it exits: its traceback keeps the
    # half-made sandbox alive, so no finaliser can remove the directory in the meantime.
    if where == "making its keys":
        monkeypatch.setattr(server.rsa, "generate_private_key", stop)
        with pytest.raises(_Stopped) as raised:
            Sandbox(TENANT)
    else:
        sandbox = Sandbox(TENANT)
        assert list(tmp_path.iterdir())  # its key files, until it stops
        monkeypatch.setattr(server.RecordedTenant, "preload", stop)
        with pytest.raises(_Stopped) as raised:
            sandbox.start()
    assert raised.traceback
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("port", ["70000", "65534", "-1", "http"])
def test_sandbox_refuses_a_port_out_of_range_in_one_usage_line(tmp_path: Path, port: str) -> None:
    proc = run_cli("sandbox", "m365", TENANT, "--port", port, cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert "argument --port" in proc.stderr and "Traceback" not in proc.stderr
    assert "internal error" not in proc.stderr


def test_sandbox_says_which_port_is_taken_and_leaves_no_key_files(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        first = busy - 2  # the third of the sandbox's five ports is the taken one
        proc = run_cli(
            "sandbox", "m365", TENANT, "--port", str(first), cwd=tmp_path, timeout=30,
            env={"TMPDIR": str(temp)},
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"127.0.0.1:{busy}" in proc.stderr and "internal error" not in proc.stderr
    assert not list(temp.iterdir())


def _waived_run(
    tmp_path: Path, waiver: str, policies: str = ""
) -> subprocess.CompletedProcess[str]:
    """An audit of one failing control (half the workforce trained) under one waiver."""
    half_trained_attestations(tmp_path)
    (tmp_path / "commsaudit.toml").write_text(
        '[attestations]\nfile = "attestations.yaml"\n'
        f'[policies]\ncontrols = ["org.training.current"]\n{policies}'
        '[[waivers]]\ncontrol = "org.training.current"\nreason = "campaign extended"\n'
        f'approved_by = "Dana Reyes"\n{waiver}'
    )
    return run_cli("audit", "--out", tmp_path / "out", cwd=tmp_path)


def _day(offset: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def test_a_waiver_that_never_really_expires_stops_the_run(tmp_path: Path) -> None:
    proc = _waived_run(tmp_path, "expires = 9999-12-31\n")
    assert proc.returncode == 2, proc.stderr
    assert "[[waivers]] #1 (org.training.current): expires 9999-12-31" in proc.stderr
    assert "at most 365 days" in proc.stderr and "Traceback" not in proc.stderr


def test_a_waiver_counts_its_life_from_its_approval(tmp_path: Path) -> None:
    proc = _waived_run(tmp_path, f"approved_on = {_day(-300)}\nexpires = {_day(100)}\n")
    assert proc.returncode == 2, proc.stderr
    assert "400 days after its approval" in proc.stderr
    later = _waived_run(tmp_path, f"approved_on = {_day(1)}\nexpires = {_day(100)}\n")
    assert later.returncode == 2 and "later than today" in later.stderr


def test_the_cap_is_configurable_and_a_waiver_within_it_still_waives(tmp_path: Path) -> None:
    two_years = f"approved_on = {_day(-10)}\nexpires = {_day(700)}\n"
    proc = _waived_run(tmp_path, two_years, policies="waiver_max_days = 730\n")
    assert proc.returncode == 0, proc.stderr
    assert "expires on" not in proc.stderr  # far from its expiry: no notice


def test_a_waiver_near_its_expiry_is_reported(tmp_path: Path) -> None:
    proc = _waived_run(tmp_path, f"approved_on = {_day(-200)}\nexpires = {_day(10)}\n")
    assert proc.returncode == 0, proc.stderr
    assert f"[[waivers]] #1 (org.training.current) expires on {_day(10)}, in 10 days" in " ".join(
        proc.stderr.split()
    )
