"""Every action this repository runs, or tells its users to run, is pinned by commit SHA (#15
item 2): action.yml, the workflows under .github/workflows, the workflow `commsaudit init` writes
and the `uses:` lines of the README and docs. Organisations that require SHA pinning reject a
composite action that uses a tag inside, and a tag can be moved under a running audit.

A pin is `owner/repo[/path]@<40 hex>` with the release it is in a comment (`# v5.0.0`), the form
Dependabot keeps up to date through .github/dependabot.yml. YAML drops comments, so the lines are
read as text, and checked against the parsed `uses:` values so that none is missed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor import __version__
from auditor.scaffold import WORKFLOW_FILE, write_starter

from helpers import REPO
from test_action import ACTION, load_yaml, workflow_files

DEPENDABOT = REPO / ".github" / "dependabot.yml"

_PINNED = re.compile(
    r"^(?P<action>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?:/[A-Za-z0-9_./-]+)?@(?P<sha>[0-9a-f]{40})$"
)
_USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)(?:\s+#\s*(?P<comment>.*?))?\s*$")
_SEMVER = re.compile(r"^v(?P<major>\d+)\.\d+\.\d+$")
_MAJOR = re.compile(r"^v(?P<major>\d+)$")
# Its releases are tagged by major only (v20, v21): every release is a new major.
_MAJOR_ONLY_RELEASES = {"dawidd6/action-download-artifact"}
# The first major of each action whose action.yml says `runs: using: node24`; the majors before
# run on Node 20, which GitHub deprecated on its runners. An action not listed here is a new
# dependency: look its runtime up and add it.
_NODE24_SINCE = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    # v5 carried node24 but still ran on node20 by default.
    "actions/upload-artifact": 6,
    "github/codeql-action": 4,
    "aws-actions/configure-aws-credentials": 6,
    "dawidd6/action-download-artifact": 17,
}
# This repository's own action, in what init writes and the README shows: its commit is that of
# the release the user reviews, so it is a placeholder that cannot resolve, never a tag.
_SELF = "OWNER/commsaudit"
_SELF_PLACEHOLDER = f"{_SELF}@COMMIT_SHA"


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _init_workflow(directory: Path) -> str:
    write_starter(
        directory,
        tenant="contoso-health.onmicrosoft.com",
        aws_account="123456789012",
        domains=["contoso-health.org"],
        force=False,
    )
    return (directory / WORKFLOW_FILE).read_text(encoding="utf-8")


def _yaml_uses(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "uses" and isinstance(value, str):
                yield value
            else:
                yield from _yaml_uses(value)
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_uses(item)


def _uses_lines(text: str) -> Iterator[tuple[int, str, str | None]]:
    for number, line in enumerate(text.splitlines(), start=1):
        found = _USES_LINE.match(line)
        if found:
            yield number, found["ref"].strip("'\""), found["comment"]


def pin_problems(text: str, where: str, *, is_yaml: bool, init: bool = False) -> list[str]:
    """What is not pinned by commit SHA with its release in a comment, one line each."""
    problems: list[str] = []
    lines = list(_uses_lines(text))
    if is_yaml:
        parsed = sorted(_yaml_uses(load_yaml(text)))
        if parsed != sorted(ref for _, ref, _ in lines):
            problems.append(f"{where}: `uses:` not on a line of its own: {parsed}")
    for number, ref, comment in lines:
        here = f"{where}:{number}: uses: {ref}"
        if ref.startswith(("./", "docker://")):
            continue
        version = (comment or "").split()[0] if comment else ""
        if ref == _SELF_PLACEHOLDER:
            wanted = f"v{__version__}" if init else None
            if not _SEMVER.match(version) or (wanted and version != wanted):
                problems.append(f"{here}: its comment is not the release (# {wanted or 'vX.Y.Z'})")
            continue
        pinned = _PINNED.match(ref)
        if pinned is None:
            problems.append(f"{here}: not owner/repo@<40-hex commit sha>")
            continue
        form = _MAJOR if pinned["action"] in _MAJOR_ONLY_RELEASES else _SEMVER
        if not form.match(version):
            problems.append(f"{here}: no `# {form.pattern}` release comment after the sha")
    return problems


def _all_sources(tmp_path: Path) -> dict[str, tuple[str, bool]]:
    sources = {"action.yml": (ACTION.read_text(encoding="utf-8"), True)}
    for path in workflow_files():
        sources[str(path.relative_to(REPO))] = (path.read_text(encoding="utf-8"), True)
    sources[f"commsaudit init: {WORKFLOW_FILE}"] = (_init_workflow(tmp_path), True)
    for path in _docs():
        sources[str(path.relative_to(REPO))] = (path.read_text(encoding="utf-8"), False)
    return sources


def test_every_uses_is_pinned_by_commit_sha_with_its_release(tmp_path: Path) -> None:
    problems: list[str] = []
    for where, (text, is_yaml) in _all_sources(tmp_path).items():
        init = where.startswith("commsaudit init")
        problems += pin_problems(text, where, is_yaml=is_yaml, init=init)
    assert problems == []


def test_the_places_checked_do_use_actions(tmp_path: Path) -> None:
    # Guards the check above against reading nothing (a renamed file, a changed layout).
    sources = _all_sources(tmp_path)
    assert {".github/workflows/ci.yml", ".github/workflows/scheduled-audit.yml"} <= set(sources)
    for where in ("action.yml", f"commsaudit init: {WORKFLOW_FILE}", "README.md"):
        assert list(_uses_lines(sources[where][0])), where


_TAGGED = re.compile(r"^(?P<action>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?:/[^@]*)?@(?P<tag>v\d[\w.]*)$")


def _pins(tmp_path: Path) -> dict[str, set[tuple[str, str]]]:
    """action -> {(commit or tag, release)}: a pin's release is its comment, a tag's the tag."""
    pins: dict[str, set[tuple[str, str]]] = {}
    for text, _ in _all_sources(tmp_path).values():
        for _, ref, comment in _uses_lines(text):
            pinned, tagged = _PINNED.match(ref), _TAGGED.match(ref)
            if pinned and comment:
                pins.setdefault(pinned["action"], set()).add((pinned["sha"], comment.split()[0]))
            elif tagged and not ref.startswith(_SELF):
                pins.setdefault(tagged["action"], set()).add((tagged["tag"], tagged["tag"]))
    return pins


def test_each_action_has_one_pin_everywhere(tmp_path: Path) -> None:
    # Dependabot updates the YAML files, not the workflow init writes from auditor/scaffold.py:
    # this fails on its pull request until scaffold.py carries the same pin.
    pins = _pins(tmp_path)
    assert set(pins) >= {"actions/checkout", "actions/upload-artifact"}
    assert {action: sorted(p) for action, p in pins.items() if len(p) > 1} == {}


def test_pinned_releases_run_on_node24(tmp_path: Path) -> None:
    pins = _pins(tmp_path)
    assert set(pins) >= {"actions/checkout", "actions/upload-artifact"}
    problems = []
    for action, releases in sorted(pins.items()):
        for _ref, version in sorted(releases):
            since = _NODE24_SINCE.get(action)
            major = int(version[1:].split(".")[0])
            if since is None or major < since:
                problems.append(f"{action} {version}: node24 since v{since}")
    assert problems == []


def test_dependabot_keeps_the_action_pins_fresh() -> None:
    assert DEPENDABOT.is_file(), "no .github/dependabot.yml"
    config = load_yaml(DEPENDABOT.read_text(encoding="utf-8"))
    assert config["version"] == 2
    updates = [u for u in config["updates"] if u["package-ecosystem"] == "github-actions"]
    assert len(updates) == 1
    (update,) = updates
    # "/" covers .github/workflows and the composite action.yml at the repository's root.
    directories = update.get("directories") or [update.get("directory")]
    assert "/" in directories
    assert update["schedule"]["interval"] == "weekly"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("      - uses: actions/checkout@v4", "not owner/repo@<40-hex commit sha>"),
        ("      - uses: actions/checkout@3d3c42e", "not owner/repo@<40-hex commit sha>"),
        (f"      - uses: actions/checkout@{'a' * 40}", "release comment"),
        (f"      - uses: actions/checkout@{'a' * 40} # v7", "release comment"),
        (f"      - uses: actions/checkout@{'A' * 40} # v7.0.1", "40-hex"),
        ("      - uses: OWNER/commsaudit@v1", "not owner/repo@<40-hex commit sha>"),
    ],
)
def test_the_pin_check_catches_what_is_not_a_pin(line: str, expected: str) -> None:
    text = f"jobs:\n  a:\n    steps:\n{line}\n"
    problems = pin_problems(text, "x.yml", is_yaml=True)
    assert any(expected in p for p in problems), problems


def test_the_pin_check_sees_a_uses_hidden_in_flow_style() -> None:
    text = "jobs:\n  a:\n    steps:\n      - {uses: actions/checkout@v4}\n"
    assert pin_problems(text, "x.yml", is_yaml=True)
