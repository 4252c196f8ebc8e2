"""TLS certificates and https listeners through the gateway: an upload is checked whole (clear 422 codes for
malformed, mismatched, incomplete or expired ones), its key is stored sealed and never answered, an https
listener presents the caller's own certificates, and a certificate in use cannot be deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_load_balancer_api import _error, _replicas
from tests.support.certificates import make_ca

CERTIFICATES = "/api/load-balancer/certificates"
LISTENERS = "/api/load-balancer/listeners"


@pytest.fixture
def user(client: httpx.Client) -> SignedInUser:
    return sign_up_and_in(client)


def _upload(client: httpx.Client, user: SignedInUser, chain: str, key: str, name: str = "shop") -> httpx.Response:
    return client.post(
        CERTIFICATES, json={"name": name, "certificate_chain": chain, "private_key": key}, headers=user.auth_headers
    )


def test_upload_then_an_https_listener_presents_it(
    client: httpx.Client, user: SignedInUser, test_database: str
) -> None:
    # GIVEN a valid chain and key
    ca = make_ca()
    chain, key = ca.issue("shop.example", "www.shop.example")
    # WHEN it is uploaded
    uploaded = _upload(client, user, chain, key)
    # THEN it is stored with its names, and its key is sealed at rest and never answered
    assert uploaded.status_code == 201, uploaded.text
    certificate = uploaded.json()
    assert certificate["hostnames"] == ["shop.example", "www.shop.example"]
    assert "private_key" not in certificate and "BEGIN" not in uploaded.text
    with psycopg.connect(test_database) as conn:
        row = conn.execute("SELECT key_sealed FROM certificates WHERE id = %s", (certificate["id"],)).fetchone()
    assert row is not None and "PRIVATE KEY" not in row[0]
    assert client.get(f"{CERTIFICATES}/{certificate['id']}", headers=user.auth_headers).json() == certificate
    # WHEN an https listener names it
    _replicas(test_database, user.id, "shop", 1)
    created = client.post(
        LISTENERS,
        json={"service": "shop", "protocol": "https", "certificate_ids": [certificate["id"]]},
        headers=user.auth_headers,
    )
    assert created.status_code == 201, created.text
    listener = created.json()
    assert listener["protocol"] == "https" and listener["certificate_ids"] == [certificate["id"]]
    # THEN the certificate cannot be deleted while presented, and can once the listener is gone
    _error(client.delete(f"{CERTIFICATES}/{certificate['id']}", headers=user.auth_headers), 409)
    assert client.delete(f"{LISTENERS}/{listener['id']}", headers=user.auth_headers).status_code == 204
    assert client.delete(f"{CERTIFICATES}/{certificate['id']}", headers=user.auth_headers).status_code == 204


def test_unusable_uploads_are_a_clear_422(client: httpx.Client, user: SignedInUser) -> None:
    ca = make_ca()
    chain, key = ca.issue("shop.example")
    _, other_key = ca.issue("other.example")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    expired_chain, expired_key = ca.issue("old.example", not_before=yesterday - timedelta(days=30), not_after=yesterday)
    leaf_only = chain.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    cases = {
        "certificate_malformed": (chain.replace("MII", "xyz"), key),
        "certificate_key_mismatch": (chain, other_key),
        "certificate_chain_incomplete": (leaf_only, key),
        "certificate_expired": (expired_chain, expired_key),
    }
    for code, (bad_chain, bad_key) in cases.items():
        assert _error(_upload(client, user, bad_chain, bad_key), 422)["code"] == code
    assert _error(_upload(client, user, chain, "not a key"), 422)["code"] == "certificate_malformed"
    # A name with control characters (NUL among them, which PostgreSQL cannot store) is refused, not a 500.
    for name in ("shop\x00", "shop\nname"):
        assert _error(_upload(client, user, chain, key, name=name), 422)["code"] == "validation_failed"


def test_https_listeners_take_only_their_owners_certificates(
    client: httpx.Client, user: SignedInUser, test_database: str
) -> None:
    ca = make_ca()
    _replicas(test_database, user.id, "shop", 1)
    other = sign_up_and_in(client)
    theirs = _upload(client, other, *ca.issue("theirs.example")).json()
    mine = _upload(client, user, *ca.issue("mine.example")).json()
    # an https listener needs certificates, and only the caller's own
    _error(client.post(LISTENERS, json={"service": "shop", "protocol": "https"}, headers=user.auth_headers), 422)
    _error(
        client.post(
            LISTENERS,
            json={"service": "shop", "protocol": "https", "certificate_ids": [theirs["id"]]},
            headers=user.auth_headers,
        ),
        422,
    )
    # certificates are for https listeners only
    _error(
        client.post(
            LISTENERS,
            json={"service": "shop", "protocol": "http", "certificate_ids": [mine["id"]]},
            headers=user.auth_headers,
        ),
        422,
    )
    # another tenant's certificate is a 404, like any of their resources
    _error(client.get(f"{CERTIFICATES}/{theirs['id']}", headers=user.auth_headers), 404)
    assert [item["id"] for item in client.get(CERTIFICATES, headers=user.auth_headers).json()["items"]] == [mine["id"]]
    # an http listener switched to https names its certificates in the same PATCH
    listener = client.post(LISTENERS, json={"service": "shop"}, headers=user.auth_headers).json()
    patched = client.patch(
        f"{LISTENERS}/{listener['id']}",
        json={"protocol": "https", "certificate_ids": [mine["id"]]},
        headers=user.auth_headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["certificate_ids"] == [mine["id"]]
    back = client.patch(f"{LISTENERS}/{listener['id']}", json={"protocol": "http"}, headers=user.auth_headers)
    assert back.status_code == 200 and back.json()["certificate_ids"] == []
