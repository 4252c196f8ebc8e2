"""The development certificate: generated once for 127.0.0.1 and localhost, then reused."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

from gateway.tls import ensure_self_signed_certificate


def test_a_certificate_is_generated_for_local_hosts_and_reused(tmp_path: Path) -> None:
    paths = ensure_self_signed_certificate(tmp_path)
    certificate = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert stat.S_IMODE(paths.private_key.stat().st_mode) == 0o600
    first = paths.certificate.read_bytes()
    assert ensure_self_signed_certificate(tmp_path).certificate.read_bytes() == first


def test_a_damaged_certificate_is_replaced(tmp_path: Path) -> None:
    paths = ensure_self_signed_certificate(tmp_path)
    paths.certificate.write_text("not a certificate")
    again = ensure_self_signed_certificate(tmp_path)
    assert again.certificate.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
