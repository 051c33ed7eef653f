"""The sandbox's own certificate authority, its server certificate, and a client certificate
for certificate-credential sign-in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.pki import LocalCA, name

_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class SandboxPki:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes
    client_certificate: x509.Certificate

    def write(self, directory: Path) -> dict[str, Path]:
        """ca.pem, server.pem (chain + key) and client.pem (certificate + key) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "ca": directory / "ca.pem",
            "server": directory / "server.pem",
            "client": directory / "client.pem",
        }
        paths["ca"].write_bytes(self.ca_pem)
        paths["server"].write_bytes(self.server_cert_pem + self.ca_pem + self.server_key_pem)
        paths["client"].write_bytes(self.client_key_pem + self.client_cert_pem)
        for path in paths.values():
            path.chmod(0o600)
        return paths


def make_pki() -> SandboxPki:
    ca = LocalCA()
    server = ca.issue(["127.0.0.1", "localhost"], not_before_days=0, not_after_days=2)
    # Entra ID app certificates are RSA; so is this one (the token endpoint checks RS256/PS256).
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(name("commsaudit sandbox app"))
        .issuer_name(name("commsaudit sandbox app"))
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(client_key, hashes.SHA256())
    )
    pkcs8 = serialization.PrivateFormat.PKCS8
    return SandboxPki(
        ca_pem=ca.pem,
        server_cert_pem=server.cert_pem,
        server_key_pem=server.key_pem,
        client_cert_pem=client_cert.public_bytes(_PEM),
        client_key_pem=client_key.private_bytes(_PEM, pkcs8, serialization.NoEncryption()),
        client_certificate=client_cert,
    )
