"""The bundled sample organisation: audited with no credentials and no network.

The sample's dates are written relative to today (`${date:-120}` is 120 days ago), so the demo
tells the same story whenever it runs. Files ending in `.tmpl` are rendered into a working copy.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

from auditor.resources import demo_dir

DEMO_ORGANISATION = "contoso-health"
_PLACEHOLDER = re.compile(r"\$\{date:([+-]\d+)\}")


def render_template(text: str, today: dt.date) -> str:
    return _PLACEHOLDER.sub(
        lambda m: (today + dt.timedelta(days=int(m.group(1)))).isoformat(), text
    )


def prepare(workdir: Path, today: dt.date, organisation: str = DEMO_ORGANISATION) -> Path:
    """Copy the sample into `workdir`, render its templates, and return its config path."""
    source = demo_dir() / organisation
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(source)
        if path.suffix == ".tmpl":
            target = workdir / relative.with_suffix("")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                render_template(path.read_text(encoding="utf-8"), today), encoding="utf-8"
            )
        else:
            target = workdir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return workdir / "commsaudit.toml"
