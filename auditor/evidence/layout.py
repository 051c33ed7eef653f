"""Names inside a bundle, and which member names are safe to write or read."""

from __future__ import annotations

import re

MANIFEST = "manifest.json"
SNAPSHOT = "snapshot.json"
RESULTS = "results.json"
SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
PUBLIC_KEY = "signing-key.pub.pem"
POLICIES_DIR = "policies/"
RAW_DIR = "raw/"
RAW_INDEX = "raw/index.json"

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_reason(name: str) -> str | None:
    """Why a member name could escape or confuse an extraction directory; None if it is safe."""
    if not name:
        return "empty file name"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "control character in path"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return "parent-directory (..) segment"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' segment"
    return None
