"""A self-signed certificate for serving HTTPS on 127.0.0.1 and localhost during development.

Generated once with ``cryptography`` into ``<state dir>/tls`` and reused while it stays valid for at least
a week and still names both hosts; the private key file is readable by its owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERTIFICATE_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)
HOST_NAMES = ("localhost",)
HOST_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertificatePaths:
    certificate: Path
    private_key: Path


def _still_usable(certificate_path: Path, key_path: Path, now: dt.datetime) -> bool:
    if not (certificate_path.is_file() and key_path.is_file()):
        return False
    try:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    dns_names = set(names.get_values_for_type(x509.DNSName))
    addresses = {str(address) for address in names.get_values_for_type(x509.IPAddress)}
    return (
        certificate.not_valid_after_utc - now > RENEW_BEFORE
        and set(HOST_NAMES) <= dns_names
        and set(HOST_ADDRESSES) <= addresses
    )


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)


def ensure_self_signed_certificate(state_dir: Path) -> CertificatePaths:
    """The certificate and key under ``state_dir/tls``, generated when missing or about to expire."""
    directory = state_dir / "tls"
    paths = CertificatePaths(directory / "gateway.crt", directory / "gateway.key")
    now = dt.datetime.now(dt.UTC)
    if _still_usable(paths.certificate, paths.private_key, now):
        return paths
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Berth local gateway")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERTIFICATE_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host) for host in HOST_NAMES]
                + [x509.IPAddress(ipaddress.ip_address(address)) for address in HOST_ADDRESSES]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        paths.private_key,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    paths.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return paths
