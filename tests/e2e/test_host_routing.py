"""Host-based routing on lb-runtime's shared ports, end to end: two tenants each deploy a replica of the "web"
test image through the gateway, put a listener in front of it, claim a host name and prove it with a DNS TXT
record (published in the run's own resolver, `hostname_resolver`). Requests to the session lb-runtime's
shared http port on 127.0.0.1 then reach the replica of the tenant whose name the Host header gives, and
nobody else's: an unknown or unproven host is a 404 ``unknown_host``, a connection that switches hosts a 421,
and a proven name cannot be claimed by another tenant (409). Switched to https, each listener's name is served
on the shared https port with the certificate its tenant uploaded, chosen by SNI, and the shared http port
redirects the name there (308).

Each replica answers /cgi-bin/whoami with its own hostname, so every answer names the replica that served it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import RunningGateway, RunningLb
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.e2e.test_traffic import WHOAMI, _deploy, _hostname, _listener, web_archive  # noqa: F401 (a fixture)
from tests.support.certificates import CertificateAuthority, make_ca
from tests.support.dns import LocalResolver
from tests.support.docker_containers import remove_labelled
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL

pytestmark = pytest.mark.docker

HOSTNAMES = "/api/load-balancer/hostnames"
LISTENERS = "/api/load-balancer/listeners"
CERTIFICATES = "/api/load-balancer/certificates"
A_HOST, B_HOST = "a.example.test", "b.example.test"


@dataclass
class Tenant:
    user: SignedInUser
    host: str
    replica: str  # the hostname its one replica answers whoami with
    listener_id: str
    claim_ids: list[str] = field(default_factory=list)


@dataclass
class Site:
    """The two tenants and the shared ports they are reached on."""

    a: Tenant
    b: Tenant
    http_port: int
    https_port: int


def _claim(client: httpx.Client, user: SignedInUser, hostname: str, **body: Any) -> httpx.Response:
    return client.post(HOSTNAMES, json={"hostname": hostname, **body}, headers=user.auth_headers)


def _prove(client: httpx.Client, user: SignedInUser, claim: dict[str, Any], resolver: LocalResolver) -> None:
    """Publish the claim's TXT record in the run's resolver and verify it: the name is then the user's."""
    path = f"{HOSTNAMES}/{claim['id']}/verify"
    early = client.post(path, json={"method": "dns"}, headers=user.auth_headers)
    assert early.status_code == 409 and early.json()["error"]["code"] == "verification_failed", early.text
    resolver.records[claim["verification"]["dns_txt_name"]] = [claim["verification"]["dns_txt_value"]]
    verified = client.post(path, json={"method": "dns"}, headers=user.auth_headers)
    assert verified.status_code == 200, verified.text
    assert (verified.json()["status"], verified.json()["verified_by"]) == ("verified", "dns")


def _get(port: int, host: str) -> httpx.Response:
    """GET whoami on the shared http port on a connection of its own, naming ``host``."""
    with httpx.Client(timeout=10) as traffic:
        return traffic.get(f"http://127.0.0.1:{port}{WHOAMI}", headers={"Host": host})


def _get_tls(port: int, host: str, ca: CertificateAuthority) -> httpx.Response:
    """GET whoami on the shared https port naming ``host`` by SNI and Host, trusting only ``ca``'s certificates
    (for ``host``: a certificate of another CA or for another name fails the handshake)."""
    with httpx.Client(verify=ssl.create_default_context(cadata=ca.pem), timeout=10) as traffic:
        return traffic.get(
            f"https://127.0.0.1:{port}{WHOAMI}", headers={"Host": host}, extensions={"sni_hostname": host}
        )


def _wait_until_served(port: int, tenant: Tenant, ca: CertificateAuthority | None = None) -> None:
    """Wait until lb-runtime routes the tenant's host (over TLS with ``ca`` when given) to its replica."""

    def served() -> bool:
        answer = _get(port, tenant.host) if ca is None else _get_tls(port, tenant.host, ca)
        return (answer.status_code, answer.text.strip()) == (200, tenant.replica)

    wait_until(
        served,
        timeout=30,
        interval=0.2,
        ignoring=(httpx.HTTPError,),
        message=f"{tenant.host} is not routed to {tenant.replica} on port {port}",
    )


@pytest.fixture(scope="module")
def site(
    gateway: RunningGateway,
    worker: Any,
    lb_runtime: RunningLb,
    hostname_resolver: LocalResolver,
    web_archive: Path,  # noqa: F811
    docker_client: docker.DockerClient,
) -> Iterator[Site]:
    """Two tenants, each with one replica of service "web" behind an http listener, its proven host name
    routed to it (A names its listener in the claim, B attaches it once proven). Everything they made is
    removed at the end."""
    assert lb_runtime.shared_http_port is not None and lb_runtime.shared_https_port is not None
    tenants: list[Tenant] = []
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        try:
            for host in (A_HOST, B_HOST):
                user = sign_up_and_in(client)
                image = upload_and_process(client, user, "web", web_archive)
                assert image["status"] == "ready", image
                replica = _hostname(_deploy(client, user, image["id"], "web-0"))
                listener = _listener(client, user)
                tenant = Tenant(user, host, replica, listener["id"])
                tenants.append(tenant)
                attach_now = host == A_HOST
                claimed = _claim(client, user, host, **({"listener_id": listener["id"]} if attach_now else {}))
                assert claimed.status_code == 201, claimed.text
                claim = claimed.json()
                tenant.claim_ids.append(claim["id"])
                assert claim["status"] == "pending"
                _prove(client, user, claim, hostname_resolver)
                if not attach_now:
                    attached = client.patch(
                        f"{HOSTNAMES}/{claim['id']}", json={"listener_id": listener["id"]}, headers=user.auth_headers
                    )
                    assert attached.status_code == 200, attached.text
            a, b = tenants
            for tenant in tenants:
                _wait_until_served(lb_runtime.shared_http_port, tenant)
            yield Site(a, b, lb_runtime.shared_http_port, lb_runtime.shared_https_port)
        finally:
            for tenant in tenants:
                headers = tenant.user.auth_headers
                for claim_id in tenant.claim_ids:
                    client.delete(f"{HOSTNAMES}/{claim_id}", headers=headers)
                client.delete(f"{LISTENERS}/{tenant.listener_id}", headers=headers)
                remove_labelled(docker_client, OWNER_LABEL, tenant.user.id)


def test_each_host_reaches_only_its_own_tenants_replica(site: Site) -> None:
    # WHEN requests on the shared port name each tenant's host, each on a connection of its own
    answers = {tenant.host: [_get(site.http_port, tenant.host) for _ in range(5)] for tenant in (site.a, site.b)}
    # THEN every one is answered by that tenant's replica, never the other's
    for tenant in (site.a, site.b):
        assert [(answer.status_code, answer.text.strip()) for answer in answers[tenant.host]] == [
            (200, tenant.replica)
        ] * 5
    # AND the Host is matched as a host name: any case, with a port, with a trailing dot
    for spelling in ("A.Example.Test", f"{A_HOST}:{site.http_port}", f"{A_HOST}."):
        answer = _get(site.http_port, spelling)
        assert (answer.status_code, answer.text.strip()) == (200, site.a.replica), spelling


def test_a_connection_never_switches_to_another_tenants_host(site: Site) -> None:
    # WHEN one keep-alive connection asks for A's host, then for B's
    with httpx.Client(base_url=f"http://127.0.0.1:{site.http_port}", timeout=10) as traffic:
        first = traffic.get(WHOAMI, headers={"Host": A_HOST})
        second = traffic.get(WHOAMI, headers={"Host": B_HOST})
    # THEN the second is refused (421) rather than sent on under the first one's name
    assert (first.status_code, first.text.strip()) == (200, site.a.replica)
    assert second.status_code == 421 and second.json()["error"]["code"] == "misdirected_request"
    assert site.b.replica not in second.text


def test_an_unknown_or_unproven_host_reaches_no_service(client: httpx.Client, site: Site) -> None:
    # GIVEN B's claim of a third name, attached to B's listener but never proven
    user = site.b.user
    pending = _claim(client, user, "unproven.example.test", listener_id=site.b.listener_id)
    assert pending.status_code == 201, pending.text
    site.b.claim_ids.append(pending.json()["id"])
    # WHEN requests name it, a name nobody claimed, or just the address
    answers = {
        host: _get(site.http_port, host) for host in ("unproven.example.test", "nobody.example.test", "127.0.0.1")
    }
    # THEN each is the documented 404 unknown_host (there is no default route), naming no replica
    for host, answer in answers.items():
        assert answer.status_code == 404, (host, answer.text)
        assert answer.json()["error"]["code"] == "unknown_host"
        assert site.a.replica not in answer.text and site.b.replica not in answer.text
    # AND the proven names still route as before
    assert _get(site.http_port, B_HOST).text.strip() == site.b.replica


def test_another_tenant_cannot_claim_a_proven_host(client: httpx.Client, site: Site) -> None:
    # WHEN B claims A's proven name
    taken = _claim(client, site.b.user, A_HOST, listener_id=site.b.listener_id)
    # THEN it is refused (409) and no claim is left behind
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "hostname_taken", taken.text
    listed = client.get(HOSTNAMES, headers=site.b.user.auth_headers).json()["items"]
    assert A_HOST not in [item["hostname"] for item in listed]
    # AND A's name still reaches A's replica
    assert _get(site.http_port, A_HOST).text.strip() == site.a.replica


def test_https_names_are_served_with_each_tenants_certificate_and_redirected_from_http(
    client: httpx.Client, site: Site
) -> None:
    # GIVEN each tenant's certificate for its own name (from a CA of its own), uploaded, and its listener
    # switched to https presenting it; A's certificate also names B's host (a certificate's names are no proof
    # of owning them: it must never be presented for B's host)
    authorities: dict[str, CertificateAuthority] = {}
    certificates: dict[str, str] = {}
    names = {A_HOST: (A_HOST, B_HOST), B_HOST: (B_HOST,)}
    try:
        for tenant in (site.a, site.b):
            ca = authorities[tenant.host] = make_ca(f"{tenant.host} CA")
            chain, key = ca.issue(*names[tenant.host])
            uploaded = client.post(
                CERTIFICATES,
                json={"name": tenant.host.split(".")[0], "certificate_chain": chain, "private_key": key},
                headers=tenant.user.auth_headers,
            )
            assert uploaded.status_code == 201, uploaded.text
            certificates[tenant.host] = uploaded.json()["id"]
            switched = client.patch(
                f"{LISTENERS}/{tenant.listener_id}",
                json={"protocol": "https", "certificate_ids": [certificates[tenant.host]]},
                headers=tenant.user.auth_headers,
            )
            assert switched.status_code == 200, switched.text
        for tenant in (site.a, site.b):
            _wait_until_served(site.https_port, tenant, authorities[tenant.host])
        # WHEN each name is asked for over TLS on the shared https port (SNI and Host), trusting only its
        # tenant's CA
        for tenant in (site.a, site.b):
            answer = _get_tls(site.https_port, tenant.host, authorities[tenant.host])
            # THEN the handshake succeeds with that tenant's certificate and its replica answers
            assert (answer.status_code, answer.text.strip()) == (200, tenant.replica)
        # AND the other tenant's CA does not vouch for it: each name gets its own tenant's certificate only, even
        # where the other's names it too
        for tenant, other in ((site.a, site.b), (site.b, site.a)):
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                _get_tls(site.https_port, tenant.host, authorities[other.host])
        # AND the shared http port redirects each name to the same target on the shared https port
        for tenant in (site.a, site.b):
            redirect = _get(site.http_port, tenant.host)
            assert redirect.status_code == 308, redirect.text
            assert redirect.headers["location"] == f"https://{tenant.host}:{site.https_port}{WHOAMI}"
            assert tenant.replica not in redirect.text
    finally:
        # Back to http, as the module's other tests expect; the certificates, no longer presented, are deleted
        for tenant in (site.a, site.b):
            headers = tenant.user.auth_headers
            client.patch(f"{LISTENERS}/{tenant.listener_id}", json={"protocol": "http"}, headers=headers)
            if tenant.host in certificates:
                client.delete(f"{CERTIFICATES}/{certificates[tenant.host]}", headers=headers)
    for tenant in (site.a, site.b):
        _wait_until_served(site.http_port, tenant)
        assert (
            client.get(f"{CERTIFICATES}/{certificates[tenant.host]}", headers=tenant.user.auth_headers).status_code
            == 404
        )
