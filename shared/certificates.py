"""TLS certificates as Berth accepts them: a PEM chain (leaf first) and its PEM private key.

``inspect_certificate`` is the one check, used by the load-balancer function before it stores an upload
(every check on) and by lb-runtime when it loads a snapshot (key and parse only: the control plane checked
the rest). It raises ``CertificateProblem`` with a stable ``code``:

- ``malformed``: not PEM, no certificate, or a key that is not an unencrypted PEM private key;
- ``key_mismatch``: the key is not the leaf certificate's;
- ``incomplete_chain``: a certificate in the chain is not signed by the next one, or the last one is neither
  self-signed nor issued by a root this machine trusts (the intermediates were left out);
- ``expired`` / ``not_yet_valid``: the leaf (or any certificate of the chain) is outside its validity period.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID


class CertificateProblem(ValueError):
    """The upload is not a usable certificate; ``code`` says why (see the module docstring)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CertificateInfo:
    hostnames: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    subject: str
    issuer: str
    fingerprint_sha256: str


def inspect_certificate(
    chain_pem: str, key_pem: str, *, now: datetime | None = None, full: bool = True
) -> CertificateInfo:
    """Parse and check a certificate upload; ``full`` adds the chain and validity checks."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise CertificateProblem("malformed", "the certificate chain is not PEM certificates") from exc
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateProblem("malformed", "the private key is not an unencrypted PEM private key") from exc
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise CertificateProblem("key_mismatch", "the private key does not belong to the first certificate")
    if full:
        _check_chain(chain)
        moment = now or datetime.now(UTC)
        for certificate in chain:
            if certificate.not_valid_after_utc <= moment:
                raise CertificateProblem(
                    "expired", f"{_name(certificate.subject)} expired on {certificate.not_valid_after_utc.isoformat()}"
                )
            if certificate.not_valid_before_utc > moment:
                raise CertificateProblem(
                    "not_yet_valid",
                    f"{_name(certificate.subject)} is valid from {certificate.not_valid_before_utc.isoformat()}",
                )
    return CertificateInfo(
        hostnames=certificate_hostnames(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        subject=_name(leaf.subject),
        issuer=_name(leaf.issuer),
        fingerprint_sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def certificate_hostnames(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate serves (subject alternative names; the common name without them)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names = [str(attribute.value) for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    else:
        names = list(extension.value.get_values_for_type(x509.DNSName))
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names if name))


def _check_chain(chain: list[x509.Certificate]) -> None:
    for certificate, issuer in itertools.pairwise(chain):
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateProblem(
                "incomplete_chain", f"{_name(certificate.subject)} is not issued by the next certificate of the chain"
            ) from exc
    last = chain[-1]
    if last.issuer == last.subject:
        return  # ends in a root (self-signed)
    for root in _trusted_roots().get(last.issuer.public_bytes(), ()):
        try:
            last.verify_directly_issued_by(root)
            return
        except (ValueError, TypeError, InvalidSignature):
            continue
    raise CertificateProblem(
        "incomplete_chain",
        f"the chain ends at {_name(last.subject)}, issued by {_name(last.issuer)}, which is neither in the chain "
        "nor a trusted root: append the intermediate certificates",
    )


@functools.cache
def _trusted_roots() -> dict[bytes, tuple[x509.Certificate, ...]]:
    """This machine's trusted roots (the OpenSSL CA file), by subject."""
    cafile = ssl.get_default_verify_paths().cafile
    roots: dict[bytes, list[x509.Certificate]] = {}
    if cafile and Path(cafile).exists():
        try:
            for root in x509.load_pem_x509_certificates(Path(cafile).read_bytes()):
                roots.setdefault(root.subject.public_bytes(), []).append(root)
        except ValueError:
            pass
    return {subject: tuple(found) for subject, found in roots.items()}


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()
