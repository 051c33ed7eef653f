"""A bundle's raw/m365/ is a recorded tenant: copy it out, for the sandbox to serve. With several
[[m365]] tables, the second tenant's answers are under raw/m365-2/m365/, and so on."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from auditor.errors import BundleError
from auditor.evidence.layout import unsafe_reason

# raw/m365/tenant.json for the first tenant, raw/<instance>/m365/tenant.json for the others.
_TENANT = re.compile(r"raw/(?:(?P<instance>[^/]+)/)?m365/tenant\.json")


def write_recorded_tenants(bundle: Path, directory: Path) -> list[tuple[str, Path]]:
    """Write each recorded tenant in the bundle to `directory/<default domain>/`; returns
    (connector instance, path) pairs in the bundle's order. Secrets were removed when the bundle
    was written."""
    written: list[tuple[str, Path]] = []
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        for name in names:
            match = _TENANT.fullmatch(name)
            if match is None:
                continue
            prefix = name.removesuffix("tenant.json")
            tenant = json.loads(archive.read(name))
            target = directory / str(tenant["default_domain"])
            if any(target == path for _instance, path in written):
                raise BundleError(f"two recorded tenants are both {target.name}")
            for member in names:
                if not member.startswith(prefix):
                    continue
                relative = member[len(prefix) :]
                if unsafe_reason(relative) or unsafe_reason(target.name):
                    raise BundleError(f"refusing to write {member!r} outside {directory}")
                if relative == "_errors.json":
                    continue  # failures are not answers: a recorded tenant answers them 403
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(member))
            written.append((match.group("instance") or "m365", target))
    return written
