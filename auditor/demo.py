"""The bundled sample organisation: audited with no credentials and no network.

The sample's dates are written relative to today (`${date:-120}` is 120 days ago), so the demo
tells the same story whenever it runs. Files ending in `.tmpl` are rendered into a working copy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.errors import ConfigError
from auditor.resources import demo_dir, tenants_dir

if TYPE_CHECKING:  # the sandboxes are imported when the demo runs, not by every command
    from connectors.dns.sandbox.world import EmailWorld
    from connectors.m365.sandbox.server import Sandbox

DEMO_ORGANISATION = "contoso-health"
_PLACEHOLDER = re.compile(r"\$\{date:([+-]\d+)\}")
_SANDBOX = "${sandbox:m365}"
_DNS = "${sandbox:dns}"


def samples() -> list[str]:
    return sorted(p.name for p in demo_dir().iterdir() if (p / "commsaudit.toml.tmpl").is_file())


def sample(name: str) -> str:
    """The sample organisation called `name`, or ConfigError naming the ones there are."""
    if name not in samples():
        raise ConfigError(
            f"no sample organisation {name!r}; the samples are {', '.join(samples())}"
        )
    return name


@contextlib.contextmanager
def email_world(organisation: str = DEMO_ORGANISATION) -> Iterator[EmailWorld | None]:
    """The sample's mail domains on local DNS, MTA-STS and SMTP servers (None for a sample
    without mail domains)."""
    path = demo_dir() / organisation / "email-world.json"
    if not path.is_file():
        yield None
        return
    from connectors.dns.sandbox.world import serve_world

    with serve_world(path) as world:
        yield world


def render_template(
    text: str, today: dt.date, sandbox: Sandbox | None = None, world: str | None = None
) -> str:
    text = _PLACEHOLDER.sub(
        lambda m: (today + dt.timedelta(days=int(m.group(1)))).isoformat(), text
    )
    if _SANDBOX in text:
        if sandbox is None:
            raise ValueError("this sample needs a running sandbox")
        text = text.replace(_SANDBOX, sandbox.config_toml(auth="certificate").rstrip())
    if _DNS in text:
        if world is None:
            raise ValueError("this sample needs its local mail servers")
        text = text.replace(_DNS, world.rstrip())
    return text


def sandbox_for(organisation: str = DEMO_ORGANISATION, **kwargs: object) -> Sandbox:
    """The sandbox serving the sample organisation's recorded Microsoft 365 tenant."""
    from connectors.m365.sandbox.server import Sandbox

    return Sandbox(tenants_dir() / organisation, **kwargs)  # type: ignore[arg-type]


def prepare(
    workdir: Path,
    today: dt.date,
    organisation: str = DEMO_ORGANISATION,
    sandbox: Sandbox | None = None,
    world: EmailWorld | None = None,
) -> Path:
    """Copy the sample into `workdir`, render its templates (dates relative to `today`, the
    running sandbox's endpoints), and return its config path."""
    source = demo_dir() / organisation
    world_toml = None
    if world is not None:
        ca_path = workdir / "demo-ca.pem"
        workdir.mkdir(parents=True, exist_ok=True)
        ca_path.write_bytes(world.ca_pem)
        world_toml = world.config_toml(ca_path)
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(source)
        if path.suffix == ".tmpl":
            target = workdir / relative.with_suffix("")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                render_template(path.read_text(encoding="utf-8"), today, sandbox, world_toml),
                encoding="utf-8",
            )
        else:
            target = workdir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return workdir / "commsaudit.toml"
