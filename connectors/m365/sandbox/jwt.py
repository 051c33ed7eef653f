"""The little JWT the sandbox needs: check a client assertion (RS256 or PS256, signed with the
registered certificate), and issue and check its own access tokens (HS256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class TokenError(Exception):
    """The token is not acceptable; the message says why (it is returned to the client)."""


def b64url_decode(text: str) -> bytes:
    # MSAL and azure-identity send segments with '=' padding; others without. Accept both.
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signed bytes, signature)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise TokenError("not a JWT (expected three dot-separated parts)")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, json.JSONDecodeError) as exc:
        raise TokenError(f"malformed JWT: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("malformed JWT: header and claims must be objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def thumbprints(certificate: x509.Certificate) -> set[str]:
    """Every spelling of the certificate's x5t and x5t#S256 that clients send."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    out = set()
    for digest in (hashlib.sha1(der).digest(), hashlib.sha256(der).digest()):  # noqa: S324 - x5t is SHA-1 by definition
        encoded = base64.urlsafe_b64encode(digest).decode()
        out |= {encoded, encoded.rstrip("=")}
    return out


def verify_assertion(
    token: str, certificate: x509.Certificate, *, client_id: str, audiences: set[str]
) -> dict[str, Any]:
    header, claims, signed, signature = split(token)
    thumbprint = header.get("x5t#S256") or header.get("x5t")
    if thumbprint not in thumbprints(certificate):
        raise TokenError("the assertion names a certificate that is not registered for this app")
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    alg = header.get("alg")
    try:
        if alg == "RS256":
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            key.verify(
                signature,
                signed,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                hashes.SHA256(),
            )
        else:
            raise TokenError(f"unsupported assertion algorithm {alg!r}")
    except InvalidSignature as exc:
        raise TokenError("the assertion's signature does not verify") from exc
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise TokenError("the assertion's iss and sub must be the client id")
    if claims.get("aud") not in audiences:
        raise TokenError(f"the assertion's aud {claims.get('aud')!r} is not this token endpoint")
    if float(claims.get("exp", 0)) < time.time():
        raise TokenError("the assertion has expired")
    return claims


def issue(secret: bytes, claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(mac)}"


def check(secret: bytes, token: str) -> dict[str, Any]:
    _header, claims, signed, signature = split(token)
    if not hmac.compare_digest(hmac.new(secret, signed, hashlib.sha256).digest(), signature):
        raise TokenError("invalid access token")
    if float(claims.get("exp", 0)) < time.time():
        raise TokenError("the access token has expired")
    return claims
