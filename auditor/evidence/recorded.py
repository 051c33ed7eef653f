"""A bundle's raw/m365/ is a recorded tenant: copy it out, for the sandbox to serve."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from auditor.errors import BundleError
from auditor.evidence.layout import unsafe_reason

_PREFIX = "raw/m365/"


def write_recorded_tenants(bundle: Path, directory: Path) -> list[Path]:
    """Write the bundle's recorded tenant to `directory/<default domain>/`; returns the paths.
    Secrets were removed when the bundle was written."""
    with zipfile.ZipFile(bundle) as archive:
        names = [n for n in archive.namelist() if n.startswith(_PREFIX)]
        if f"{_PREFIX}tenant.json" not in names:
            return []
        tenant = json.loads(archive.read(f"{_PREFIX}tenant.json"))
        target = directory / str(tenant["default_domain"])
        for name in names:
            relative = name[len(_PREFIX) :]
            if unsafe_reason(relative) or unsafe_reason(target.name):
                raise BundleError(f"refusing to write {name!r} outside {directory}")
            if relative == "_errors.json":
                continue  # failures are not answers: a recorded tenant answers them 403
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(name))
    return [target]
