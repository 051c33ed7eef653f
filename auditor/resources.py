"""Where the data that ships with commsaudit lives.

In a wheel, `policies/` and `fixtures/demo/` are carried inside the package as `auditor/_data/`;
in a source checkout (editable install, tests) they sit at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"commsaudit's bundled {name}/ directory is missing from {_PACKAGE}: reinstall the package"
    )


def policies_dir() -> Path:
    return _data_dir("policies")


def demo_dir() -> Path:
    return _data_dir("fixtures") / "demo"


def tenants_dir() -> Path:
    """The recorded Microsoft 365 tenants the demo's sandbox serves."""
    return _data_dir("fixtures") / "tenants"


def schema_path(name: str) -> Path:
    """A JSON Schema that commsaudit itself uses (policy meta-schema, config, formats)."""
    return _PACKAGE / "schemas" / name
