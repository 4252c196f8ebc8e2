"""Host names on the shared ports: claim, prove ownership (DNS TXT or HTTP token), attach to a listener.

A name belongs to one tenant only: claiming or verifying a name another tenant has verified is a 409, and
the database's partial unique index settles a race between two verifications. Only a verified name can be
attached, and only to the caller's own http or https listener; lb-runtime then routes requests whose Host is
that name, on the shared ports, to that listener's service (never to anyone else's). No HTTP framework here.
"""

from __future__ import annotations

from typing import Any

from functions.load_balancer.hostname_store import HostnameStore, HostnameTaken
from functions.load_balancer.models import (
    CreateHostname,
    Hostname,
    HostnamePage,
    HostnameVerification,
    UpdateHostname,
    VerifyHostname,
)
from functions.load_balancer.ownership import OwnershipProof, http_path, new_token, txt_name, txt_value
from functions.load_balancer.store import ListenerStore
from shared.errors import Conflict, NotFound
from shared.pagination import decode_cursor, page_of, parse_id


class HostnameClaimed(Conflict):
    code = "hostname_taken"


class VerificationFailed(Conflict):
    """No proof of ownership found yet: the claim stands, the client publishes the proof and asks again."""

    code = "verification_failed"


class HostnameNotVerified(Conflict):
    code = "hostname_not_verified"


def _hostname(row: dict[str, Any]) -> Hostname:
    name = row["hostname"]
    return Hostname(
        id=str(row["id"]),
        hostname=name,
        status="verified" if row["verified_at"] is not None else "pending",
        verified_by=row["verified_by"],
        listener_id=str(row["listener_id"]) if row["listener_id"] else None,
        verification=HostnameVerification(
            dns_txt_name=txt_name(name),
            dns_txt_value=txt_value(row["token"]),
            http_url=f"http://{name}{http_path(str(row['id']))}",
            http_body=row["token"],
        ),
        created_at=row["created_at"],
    )


async def _owned(hostnames: HostnameStore, owner_id: str, claim_id: str) -> dict[str, Any]:
    row = await hostnames.get(owner_id, parse_id(claim_id))
    if row is None:
        raise NotFound(f"No host name claim {claim_id}.")
    return row


async def claim_hostname(
    hostnames: HostnameStore, listeners: ListenerStore, owner_id: str, body: CreateHostname
) -> Hostname:
    """A pending claim with its proof instructions (409 when another tenant holds the name)."""
    name = body.hostname.lower().rstrip(".")
    if body.listener_id is not None:
        # Checked before anything is written: a refused claim leaves no claim behind.
        await _check_listener(listeners, owner_id, body.listener_id)
    if await hostnames.verified_by_other(owner_id, name):
        raise HostnameClaimed(f"{name} belongs to another account.")
    try:
        row = await hostnames.create(owner_id, name, new_token())
    except HostnameTaken as exc:
        raise HostnameClaimed(f"You already claimed {name}; verify or delete that claim.") from exc
    if body.listener_id is not None:
        # Recorded now, routed once verified (the control plane serves verified names only).
        row = await hostnames.attach(owner_id, str(row["id"]), parse_id(body.listener_id)) or row
    return _hostname(row)


async def verify_hostname(
    hostnames: HostnameStore, proof: OwnershipProof, owner_id: str, claim_id: str, body: VerifyHostname
) -> Hostname:
    """Check the DNS TXT record or the HTTP token now; 422 when absent, 409 when another tenant won the name."""
    row = await _owned(hostnames, owner_id, claim_id)
    if row["verified_at"] is not None:
        return _hostname(row)
    name, token = row["hostname"], row["token"]
    if body.method == "dns":
        proven = txt_value(token) in await proof.txt_records(txt_name(name))
        where = f"a TXT record {txt_name(name)} = {txt_value(token)}"
    else:
        proven = (await proof.http_body(name, http_path(str(row["id"]))) or "").strip() == token
        where = f"http://{name}{http_path(str(row['id']))} answering 200 with the token"
    if not proven:
        raise VerificationFailed(f"No proof found for {name}: publish {where}, then verify again.")
    try:
        verified = await hostnames.mark_verified(owner_id, str(row["id"]), body.method)
    except HostnameTaken as exc:
        raise HostnameClaimed(f"{name} was verified by another account first.") from exc
    if verified is None:
        raise NotFound(f"No host name claim {claim_id}.")
    return _hostname(verified)


class ListenerNotHttp(Conflict):
    """The listener named is the caller's, but its protocol (tcp) routes no host names: a state of that
    listener (a PATCH may change it), not a malformed request."""

    code = "listener_not_http"


async def _check_listener(listeners: ListenerStore, owner_id: str, listener_id: str) -> None:
    """404 when ``listener_id`` is not one of the caller's listeners, 409 when it is not http or https."""
    listener = await listeners.get(owner_id, parse_id(listener_id))
    if listener is None:
        raise NotFound(f"listener_id {listener_id} is not one of your listeners.")
    if listener["protocol"] not in ("http", "https"):
        raise ListenerNotHttp(
            f"Listener {listener_id} is {listener['protocol']}; host names route HTTP: attach them to an http or "
            "https listener (or change this one's protocol first)."
        )


async def update_hostname(
    hostnames: HostnameStore, listeners: ListenerStore, owner_id: str, claim_id: str, body: UpdateHostname
) -> Hostname:
    row = await _owned(hostnames, owner_id, claim_id)
    if body.listener_id is not None:
        await _check_listener(listeners, owner_id, body.listener_id)
        if row["verified_at"] is None:
            raise HostnameNotVerified(f"Verify {row['hostname']} before routing it.")
    updated = await hostnames.attach(owner_id, str(row["id"]), parse_id(body.listener_id) if body.listener_id else None)
    if updated is None:
        raise NotFound(f"No host name claim {claim_id}.")
    return _hostname(updated)


async def get_hostname(hostnames: HostnameStore, owner_id: str, claim_id: str) -> Hostname:
    return _hostname(await _owned(hostnames, owner_id, claim_id))


async def list_hostnames(hostnames: HostnameStore, owner_id: str, limit: int, cursor: str | None) -> HostnamePage:
    rows = await hostnames.page(owner_id, limit + 1, decode_cursor(cursor) if cursor is not None else None)
    items, next_cursor = page_of(rows, limit, _hostname)
    return HostnamePage(items=items, next_cursor=next_cursor)


async def delete_hostname(hostnames: HostnameStore, owner_id: str, claim_id: str) -> None:
    if await hostnames.delete(owner_id, parse_id(claim_id)) is None:
        raise NotFound(f"No host name claim {claim_id}.")
