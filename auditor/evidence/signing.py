"""ed25519 keys and detached signatures over SHA256SUMS."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditor.model.errors import InputError

ALGORITHM = "ed25519"


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key: short enough to compare by eye, unique in practice."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _pem_text(data: bytes) -> bytes:
    """PEM as given, or PEM that was base64-encoded to fit in one CI secret line."""
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        return stripped
    try:
        decoded = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return stripped
    return decoded.strip() if decoded.strip().startswith(b"-----BEGIN") else stripped


def load_private_key(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_pem_text(data), password=None)
    except (ValueError, TypeError) as exc:
        # The exception text may quote key material; never repeat it.
        raise InputError(
            "not an unencrypted PEM private key",
            where=where,
            hint="make one with `commsaudit keygen --out signing-key.pem`",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(
            "the signing key is not an ed25519 key",
            where=where,
            hint="make one with `commsaudit keygen --out signing-key.pem`",
        )
    return key


def load_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    text = _pem_text(data)
    try:
        if b"PRIVATE KEY" in text:
            private = serialization.load_pem_private_key(text, password=None)
            key = private.public_key()
        else:
            key = serialization.load_pem_public_key(text)
    except (ValueError, TypeError) as exc:
        raise InputError("not a PEM public key", where=where) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InputError("not an ed25519 public key", where=where)
    return key


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the public key: {exc.strerror}", where=str(path)) from exc
    return load_public_key(data, str(path))


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def signature_valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def write_keypair(path: Path, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write a new private key (mode 0600) and its public key beside it (`.pub` suffix).

    Each file is created, never opened: a name that is already taken, a dangling symbolic link
    included, is refused (or, with `overwrite`, replaced by a new file, never written through),
    so a link planted where the key goes cannot send the private key somewhere else."""
    public_path = path.with_name(path.name.removesuffix(".pem") + ".pub.pem")
    for target in (path, public_path):
        if os.path.lexists(target) and not overwrite:
            raise InputError(
                "already exists; refusing to overwrite a key",
                where=str(target),
                hint="choose another --out or pass --force",
            )
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    _create(path, private_pem(key), 0o600, replace=overwrite)
    _create(public_path, public_pem(key.public_key()), 0o644, replace=overwrite)
    return path, public_path, fingerprint(key.public_key())


def _create(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write `data` to a file that did not exist before this call (`O_EXCL`: never through a
    link); with `replace`, to a new file beside `path` that then takes its name."""
    target = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp") if replace else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, mode)
    except FileExistsError as exc:
        raise InputError(
            "already exists (perhaps as a link); refusing to write a key through it",
            where=str(target),
            hint="choose another --out or remove it",
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            target.replace(path)
    except BaseException:
        if replace:
            with contextlib.suppress(OSError):
                target.unlink()
        raise
