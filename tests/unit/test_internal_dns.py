"""The internal DNS's answers (worker.internal_dns) with dnspython packets: tenant scoping, A/SRV/name records,
NXDOMAIN for other tenants' names, refusal of sources outside the tenant networks."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from datetime import UTC, datetime

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from shared.registry import HealthStatus, Instance, Namespace, ServiceRegistry, ServiceSummary, WatchResult
from worker.internal_dns import Asker, Directory, Forwarder, Resolver, asker_by_network, upstream_nameservers
from worker.tenant_networks import TenantNetwork, TenantNetworks, bridge_name, free_subnets, tenant_network_name

TENANT_A = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
TENANT_B = uuid.UUID("bbbbbbbb-0000-0000-0000-000000000002")
HOST = "host-1"


def client(
    id: str, service: str, owner: uuid.UUID, address: str, name: str, port: int = 8080, **extra: object
) -> Instance:
    meta = {"host_id": HOST, "container_port": str(port), "network_address": address, "container_name": name}
    return Instance(
        id=id,
        namespace=Namespace.CLIENT_CONTAINERS,
        service=service,
        owner_id=owner,
        address="127.0.0.1",
        port=31000 + int(id[-1]),
        meta={**meta, **{k: str(v) for k, v in extra.items()}},
        status=HealthStatus.PASSING,
    )


class FakeRegistry(ServiceRegistry):
    """Only what the directory reads: instances by namespace, service, owner and health."""

    def __init__(self, instances: list[Instance]) -> None:
        self.items = instances
        self.lookups = 0

    async def instances(
        self, namespace: Namespace, service: str, owner_id: uuid.UUID | None = None, passing_only: bool = False
    ) -> list[Instance]:
        self.lookups += 1
        return [
            i
            for i in self.items
            if i.namespace == namespace
            and i.service == service
            and (owner_id is None or i.owner_id == owner_id)
            and (not passing_only or i.status is HealthStatus.PASSING)
        ]

    async def register(self, instance: Instance) -> Instance:
        raise NotImplementedError

    async def deregister(self, namespace: Namespace, instance_id: str) -> bool:
        raise NotImplementedError

    async def report_health(
        self, namespace: Namespace, instance_id: str, status: HealthStatus, output: str = ""
    ) -> None:
        raise NotImplementedError

    async def services(self, namespace: Namespace, owner_id: uuid.UUID | None = None) -> list[ServiceSummary]:
        raise NotImplementedError

    async def watch(
        self, namespace: Namespace, service: str | None = None, index: int = 0, wait_seconds: float = 60.0
    ) -> WatchResult:
        raise NotImplementedError

    async def current_index(self, namespace: Namespace, service: str | None = None) -> int:
        raise NotImplementedError

    async def expire(self, ttl_seconds: float) -> list[Instance]:
        raise NotImplementedError


def networks() -> TenantNetworks:
    found = TenantNetworks(None, cluster_id="c", host_id=HOST, pool="10.213.0.0/16", prefix=26)  # type: ignore[arg-type]
    for owner, subnet in ((TENANT_A, "10.213.0.0/26"), (TENANT_B, "10.213.0.64/26")):
        net = ipaddress.IPv4Network(subnet)
        found._networks[owner] = TenantNetwork(f"n-{owner}", owner, net, next(net.hosts()), "bt0")
    return found


REGISTRY_ITEMS = [
    client("a1", "api", TENANT_A, "10.213.0.2", "api-1"),
    client("a2", "api", TENANT_A, "10.213.0.3", "api-2"),
    client("a3", "db", TENANT_A, "10.213.0.4", "db-1", port=5432),
    client("b1", "secret", TENANT_B, "10.213.0.66", "secret-1"),
    client("b2", "api", TENANT_B, "10.213.0.67", "b-api"),
    # Not answered: another host's replica (its network is not this host's), a failing one.
    client("a4", "api", TENANT_A, "10.213.9.9", "api-far").model_copy(
        update={"meta": {"host_id": "host-2", "container_port": "8080", "network_address": "10.213.9.9"}}
    ),
    client("a5", "api", TENANT_A, "10.213.0.5", "api-sick").model_copy(update={"status": HealthStatus.CRITICAL}),
    Instance(
        id="host-worker-1",
        namespace=Namespace.INTERNAL_SERVICES,
        service="host-worker",
        address="127.0.0.1",
        port=9181,
        updated_at=datetime.now(UTC),
    ),
]


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(Directory(FakeRegistry(REGISTRY_ITEMS), HOST, cache_seconds=0), asker_by_network(networks()))


def ask(resolver: Resolver, name: str, rdtype: str, source: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    # Through the wire format both ways, as the server sends and receives it.
    wire = asyncio.run(resolver.resolve(dns.message.from_wire(query.to_wire()), source)).to_wire()
    response = dns.message.from_wire(wire)
    assert response.id == query.id
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(item.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for item in rrset)


def test_a_service_name_answers_the_tenants_passing_replicas_on_this_host(resolver: Resolver) -> None:
    # GIVEN tenant A's two passing api replicas here (and a failing one, and one on another host)
    # WHEN a container of A asks for api.internal
    response = ask(resolver, "api.internal", "A", "10.213.0.9")
    # THEN both tenant-network addresses come back, authoritative, with a 1 s TTL
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert addresses(response) == ["10.213.0.2", "10.213.0.3"]
    assert {rrset.ttl for rrset in response.answer} == {1}


def test_the_same_name_asked_by_another_tenant_answers_its_own_replicas(resolver: Resolver) -> None:
    assert addresses(ask(resolver, "api.internal", "A", "10.213.0.70")) == ["10.213.0.67"]


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("secret.internal", "10.213.0.9"),  # B's service asked by A
        ("secret-1.secret.internal", "10.213.0.9"),
        ("_secret._tcp.internal", "10.213.0.9"),
        ("db.internal", "10.213.0.70"),  # A's service asked by B
        ("nothing.internal", "10.213.0.9"),
        ("api-far.api.internal", "10.213.0.9"),  # another host's replica
        ("internal", "10.213.0.9"),
    ],
)
def test_names_outside_the_tenants_own_services_are_nxdomain(resolver: Resolver, name: str, source: str) -> None:
    response = ask(resolver, name, "A", source)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.answer == []


def test_srv_gives_each_replicas_container_port_and_name(resolver: Resolver) -> None:
    response = ask(resolver, "_api._tcp.internal", "SRV", "10.213.0.9")
    assert response.rcode() == dns.rcode.NOERROR
    records = sorted((item.port, item.target.to_text()) for rrset in response.answer for item in rrset)
    assert records == [(8080, "api-1.api.internal."), (8080, "api-2.api.internal.")]
    glue = sorted(item.address for rrset in response.additional for item in rrset)
    assert glue == ["10.213.0.2", "10.213.0.3"]
    db = ask(resolver, "_db._tcp.internal", "SRV", "10.213.0.9")
    assert [item.port for rrset in db.answer for item in rrset] == [5432]


def test_a_replica_name_answers_that_replica_only(resolver: Resolver) -> None:
    assert addresses(ask(resolver, "API-2.api.internal", "A", "10.213.0.9")) == ["10.213.0.3"]


def test_other_record_types_of_an_existing_name_have_no_data(resolver: Resolver) -> None:
    response = ask(resolver, "api.internal", "AAAA", "10.213.0.9")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []


@pytest.mark.parametrize("source", ["10.213.1.5", "192.0.2.200", "172.17.0.5", "10.213.0.200"])
def test_sources_outside_the_tenant_networks_are_refused(resolver: Resolver, source: str) -> None:
    # Not a tenant subnet, not an address of this host: never an open resolver.
    for name in ("api.internal", "example.com"):
        response = ask(resolver, name, "A", source)
        assert response.rcode() == dns.rcode.REFUSED
        assert response.answer == []


def test_the_host_itself_gets_the_platforms_internal_services_never_customers(resolver: Resolver) -> None:
    for source in ("127.0.0.1", "10.213.0.1", "10.213.0.65"):  # loopback and the gateways are the host's
        assert addresses(ask(resolver, "host-worker.internal", "A", source)) == ["127.0.0.1"]
        assert ask(resolver, "api.internal", "A", source).rcode() == dns.rcode.NXDOMAIN
        assert ask(resolver, "example.com", "A", source).rcode() == dns.rcode.REFUSED


def test_tenants_cannot_see_internal_services(resolver: Resolver) -> None:
    assert ask(resolver, "host-worker.internal", "A", "10.213.0.9").rcode() == dns.rcode.NXDOMAIN


def test_other_names_are_refused_without_upstream_and_forwarded_with_one() -> None:
    refusing = Resolver(Directory(FakeRegistry([]), HOST), asker_by_network(networks()), Forwarder([]))
    assert ask(refusing, "example.com", "A", "10.213.0.9").rcode() == dns.rcode.REFUSED

    class Upstream(Forwarder):
        async def forward(self, query: dns.message.Message) -> dns.message.Message | None:
            answer = dns.message.make_response(query)
            answer.id = 0  # the resolver gives the answer the query's id again
            return answer

    forwarding = Resolver(Directory(FakeRegistry([]), HOST), asker_by_network(networks()), Upstream(["192.0.2.53"]))
    assert ask(forwarding, "example.com", "A", "10.213.0.9").rcode() == dns.rcode.NOERROR


def test_the_directory_caches_briefly() -> None:
    registry = FakeRegistry(REGISTRY_ITEMS)
    directory = Directory(registry, HOST, cache_seconds=60)

    async def twice() -> None:
        await directory.replicas(Asker(TENANT_A), "api")
        await directory.replicas(Asker(TENANT_A), "api")
        await directory.replicas(Asker(TENANT_B), "api")  # another tenant: its own entry

    asyncio.run(twice())
    assert registry.lookups == 2


def test_upstream_nameservers_setting(tmp_path: object) -> None:
    from pathlib import Path

    conf = Path(str(tmp_path)) / "resolv.conf"
    conf.write_text("# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example\n")
    assert upstream_nameservers("resolv.conf", conf) == ["192.0.2.53", "fe80::1"]
    assert upstream_nameservers("none", conf) == []
    assert upstream_nameservers("192.0.2.1, 192.0.2.2", conf) == ["192.0.2.1", "192.0.2.2"]


def test_network_names_bridges_and_subnets() -> None:
    owner = uuid.uuid4()
    name = tenant_network_name("cluster", "host-1", owner)
    assert name.startswith("berth-t-") and name.endswith(str(owner))
    assert name != tenant_network_name("cluster", "host-2", owner)
    bridge = bridge_name("cluster", "host-1", owner)
    assert bridge.startswith("bt") and len(bridge) == 15
    pool = ipaddress.IPv4Network("10.213.0.0/24")
    free = list(free_subnets(pool, 26, ["10.213.0.0/26", "172.17.0.0/16", "10.213.0.128/25", "fd00::/64"]))
    assert [str(net) for net in free] == ["10.213.0.64/26"]
