"""TLS certificate logic: check an upload whole before storing it (key sealed), and the certificates an https
listener presents. No HTTP framework here."""

from __future__ import annotations

from typing import Any

from functions.load_balancer.certificate_store import CertificateInUse, CertificateStore
from functions.load_balancer.models import Certificate, CertificatePage, CreateCertificate
from shared.certificates import CertificateProblem, inspect_certificate
from shared.config import AuthSettings
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.pagination import decode_cursor, page_of, parse_id
from shared.secrets import seal_private_key

# One stable code per way an upload can be unusable (422), so clients can tell them apart.
_PROBLEM_CODES = {
    "malformed": "certificate_malformed",
    "key_mismatch": "certificate_key_mismatch",
    "incomplete_chain": "certificate_chain_incomplete",
    "expired": "certificate_expired",
    "not_yet_valid": "certificate_not_yet_valid",
}


class CertificateRejected(ValidationFailed):
    """The upload is not a usable certificate; ``code`` says why."""

    def __init__(self, problem: CertificateProblem, field: str) -> None:
        super().__init__(f"{problem}.", details=[{"loc": ["body", field], "msg": str(problem)}])
        self.code = _PROBLEM_CODES.get(problem.code, "certificate_invalid")


class CertificateStillUsed(Conflict):
    code = "certificate_in_use"


def _certificate(row: dict[str, Any]) -> Certificate:
    return Certificate(
        id=str(row["id"]),
        name=row["name"],
        hostnames=list(row["hostnames"]),
        subject=row["subject"],
        issuer=row["issuer"],
        fingerprint_sha256=row["fingerprint_sha256"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        created_at=row["created_at"],
    )


async def upload_certificate(
    certificates: CertificateStore, secrets: AuthSettings, owner_id: str, body: CreateCertificate
) -> Certificate:
    """Check the chain and key (parse, key match, chain complete, within validity), then store, key sealed."""
    try:
        info = inspect_certificate(body.certificate_chain, body.private_key)
    except CertificateProblem as problem:
        field = "private_key" if problem.code == "key_mismatch" or "key" in str(problem) else "certificate_chain"
        raise CertificateRejected(problem, field) from problem
    row = await certificates.create(
        owner_id,
        {
            "name": body.name,
            "hostnames": info.hostnames,
            "chain_pem": body.certificate_chain,
            "key_sealed": seal_private_key(secrets, body.private_key),
            "subject": info.subject,
            "issuer": info.issuer,
            "fingerprint_sha256": info.fingerprint_sha256,
            "not_before": info.not_before,
            "not_after": info.not_after,
        },
    )
    return _certificate(row)


async def get_certificate(certificates: CertificateStore, owner_id: str, certificate_id: str) -> Certificate:
    row = await certificates.get(owner_id, parse_id(certificate_id))
    if row is None:
        raise NotFound(f"No certificate {certificate_id}.")
    return _certificate(row)


async def list_certificates(
    certificates: CertificateStore, owner_id: str, limit: int, cursor: str | None
) -> CertificatePage:
    rows = await certificates.page(owner_id, limit + 1, decode_cursor(cursor) if cursor is not None else None)
    items, next_cursor = page_of(rows, limit, _certificate)
    return CertificatePage(items=items, next_cursor=next_cursor)


async def delete_certificate(certificates: CertificateStore, owner_id: str, certificate_id: str) -> None:
    try:
        deleted = await certificates.delete(owner_id, parse_id(certificate_id))
    except CertificateInUse as exc:
        raise CertificateStillUsed(
            f"Certificate {certificate_id} is presented by an https listener; give that listener other "
            "certificates (or delete it) first."
        ) from exc
    if not deleted:
        raise NotFound(f"No certificate {certificate_id}.")


class CertificatesProtocolConflict(Conflict):
    """certificate_ids that do not go with the listener's protocol as it stands (a PATCH naming one of them)."""

    code = "certificates_protocol_mismatch"


async def checked_listener_certificates(
    certificates: CertificateStore,
    owner_id: str,
    protocol: str,
    certificate_ids: list[str] | None,
    *,
    body_alone: bool = True,
) -> list[str]:
    """The certificate ids an https listener will present (the caller's own, at least one); none otherwise.

    A protocol and certificates that do not go together (certificates on a listener that is not https, an
    https listener without any) are a 422 when the request body alone says so (``body_alone``: a create, or a
    PATCH naming both protocol and certificate_ids) and a 409 when the listener's current protocol or
    certificates are part of it (a PATCH naming only one of them)."""
    mismatch = ValidationFailed if body_alone else CertificatesProtocolConflict
    ids = [parse_id(certificate_id) for certificate_id in certificate_ids or []]
    if protocol != "https":
        if ids:
            raise mismatch(
                "certificate_ids are for https listeners only.",
                details=[{"loc": ["body", "certificate_ids"], "msg": "only with protocol https"}],
            )
        return []
    if not ids:
        raise mismatch(
            "An https listener needs certificate_ids: upload a certificate (POST /api/load-balancer/certificates) "
            "and name it here.",
            details=[{"loc": ["body", "certificate_ids"], "msg": "at least one certificate"}],
        )
    if len(set(ids)) != len(ids):
        raise ValidationFailed("certificate_ids repeat a certificate.")
    unknown = sorted(set(ids) - await certificates.owned(owner_id, ids))
    if unknown:
        raise ValidationFailed(
            f"certificate_ids name certificates you do not have: {', '.join(unknown)}.",
            details=[{"loc": ["body", "certificate_ids"], "msg": "ids of your certificates"}],
        )
    return ids
