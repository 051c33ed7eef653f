"""Write the evidence bundle: hash, sign, zip, and move into place atomically."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.errors import BundleError
from auditor.evidence import layout, signing
from auditor.evidence.ziparchive import Packed, build_zip
from auditor.jsonutil import JSON, dumps_pretty_bytes, sha256_hex
from auditor.redact import Redactor

ManifestBuilder = Callable[[list[dict[str, JSON]], dict[str, JSON] | None], dict[str, JSON]]


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey
    origin: str  # where the key came from, for people: never the key itself
    ephemeral: bool = False  # made for this run only: its public key is written beside the bundle

    @property
    def fingerprint(self) -> str:
        return signing.fingerprint(self.key.public_key())


def sums_text(files: dict[str, bytes], digests: dict[str, str] | None = None) -> bytes:
    """`sha256sum -c` format, sorted by path. `digests` holds hashes worked out already."""
    known = digests or {}
    return "".join(f"{known.get(n) or sha256_hex(files[n])}  {n}\n" for n in sorted(files)).encode()


def parse_sums(text: bytes) -> dict[str, str]:
    """path -> hex digest; ValueError on a malformed line."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.decode("utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"line {number} is not '<sha256>  <path>'")
        if name in out:
            raise ValueError(f"line {number} lists {name} twice")
        out[name] = digest
    return out


def assemble(
    files: dict[str, bytes],
    make_manifest: ManifestBuilder,
    *,
    signer: Signer | None,
    redactor: Redactor,
    digests: dict[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """The bundle's members in order: listed in the manifest, hashed and signed. The files are
    scrubbed already (see `auditor.audit`); the manifest, made here, is scrubbed here.
    `digests` holds the files' sha256 where the caller has them (each hashed once a run)."""
    for name in files:
        problem = layout.unsafe_reason(name)
        if problem:
            raise BundleError(f"refusing to write bundle member {name!r}: {problem}")
    cleaned = dict(files)
    signature_info: dict[str, JSON] | None = None
    if signer is not None:
        cleaned[layout.PUBLIC_KEY] = signing.public_pem(signer.key.public_key())
        signature_info = {
            "algorithm": signing.ALGORITHM,
            "signed_file": layout.SUMS,
            "signature_file": layout.SIGNATURE,
            "public_key_file": layout.PUBLIC_KEY,
            "fingerprint": signer.fingerprint,
        }
    known = dict(digests or {})
    for name, content in cleaned.items():
        if name not in known:
            known[name] = sha256_hex(content)
    listing: list[dict[str, JSON]] = [
        {"path": n, "sha256": known[n], "size": len(cleaned[n])} for n in sorted(cleaned)
    ]
    manifest = make_manifest(listing, signature_info)
    cleaned[layout.MANIFEST] = redactor.bytes(dumps_pretty_bytes(manifest))
    known.pop(layout.MANIFEST, None)
    sums = sums_text(cleaned, known)
    members = [(layout.MANIFEST, cleaned[layout.MANIFEST])]
    members += [(n, cleaned[n]) for n in sorted(cleaned) if n != layout.MANIFEST]
    members.append((layout.SUMS, sums))
    if signer is not None:
        members.append((layout.SIGNATURE, signing.sign(signer.key, sums)))
    return members


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename: a reader sees the
    whole bundle under its final name or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).chmod(0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable where the platform allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_side_files(directory: Path, files: Iterable[tuple[str, bytes]]) -> list[str]:
    """Write each file into `directory` atomically, going on past one that fails (a full disk, a
    read-only name): one line per file not written. A file an earlier run left under such a name
    is removed, so no step that picks the file up takes another run's report for this one's."""
    problems: list[str] = []
    for name, data in files:
        path = directory / name
        try:
            write_atomically(path, data)
        except OSError as exc:
            problems.append(f"{path}: not written ({exc.strerror or exc}){_drop_stale(path)}")
    return problems


def _drop_stale(path: Path) -> str:
    """Remove what an earlier run left at `path`; what became of it, for the problem line."""
    if not path.is_file() and not path.is_symlink():
        return ""
    try:
        path.unlink()
    except OSError:
        return "; the file there is an earlier run's, and could not be removed"
    return "; the earlier run's file there was removed"


def write_bundle(
    path: Path,
    members: list[tuple[str, bytes]],
    moment: dt.datetime,
    packed: dict[str, Packed] | None = None,
) -> None:
    try:
        write_atomically(path, build_zip(members, moment, packed))
    except OSError as exc:
        raise BundleError(f"cannot write the bundle: {exc.strerror}", where=str(path)) from exc
