"""The sandbox's own certificate authority, its server certificate, and a client certificate
for certificate-credential sign-in."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "commsaudit sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(days=2)
    )


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
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("commsaudit sandbox CA")
    ca_cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Entra ID app certificates are RSA; so is this one (the token endpoint checks RS256/PS256).
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client_cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name("commsaudit sandbox app"))
        .issuer_name(_name("commsaudit sandbox app"))
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .sign(client_key, hashes.SHA256())
    )
    pkcs8 = serialization.PrivateFormat.PKCS8
    return SandboxPki(
        ca_pem=ca_cert.public_bytes(_PEM),
        server_cert_pem=server_cert.public_bytes(_PEM),
        server_key_pem=server_key.private_bytes(_PEM, pkcs8, serialization.NoEncryption()),
        client_cert_pem=client_cert.public_bytes(_PEM),
        client_key_pem=client_key.private_bytes(_PEM, pkcs8, serialization.NoEncryption()),
        client_certificate=client_cert,
    )
