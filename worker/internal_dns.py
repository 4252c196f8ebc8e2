"""The internal DNS: ``<service>.internal`` names for a tenant's own services, served by each host worker.

Names (TTL ``RECORD_TTL_SECONDS``):

- ``<service>.internal``            A: the tenant-network addresses of the asking tenant's passing replicas of
                                    that service on this host;
- ``_<service>._tcp.internal``      SRV: one per replica (its container port), target the name below;
- ``<container>.<service>.internal`` A: that one replica.

Who asks decides what is answered. A query from a tenant network's subnet is that tenant's and is answered
from its own services only: another tenant's service name is NXDOMAIN, never its addresses. A query from the
host itself (a platform process: its source is one of the host's own addresses) is answered from the
platform's ``internal-services`` by the same scheme, never from customers'. Any other source is REFUSED: this
is never an open resolver. A tenant's names outside ``.internal`` are forwarded to the upstream nameservers
(the host's resolv.conf by default) or REFUSED when there are none.

Answers follow the registry live: each question is looked up in the registry, behind a cache of
``CACHE_SECONDS``; a replica leaves the registry before it is stopped and enters it within one registration
round of passing its health check. The server listens on UDP and TCP port 53 of each tenant network's gateway
(containers get ``dns=[gateway]``; Docker's embedded resolver forwards to it from the container's own address).
Records of other hosts are not answered: tenant networks are per host (cross-host needs an overlay).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from shared.registry import HealthStatus, Namespace, ServiceRegistry
from worker.tenant_networks import TenantNetwork, TenantNetworks

logger = get_logger("worker")

ZONE = dns.name.from_text("internal.")
RECORD_TTL_SECONDS = 1
CACHE_SECONDS = 0.2
UPSTREAM_TIMEOUT_SECONDS = 2.0
# Registry meta a customer instance carries for the internal DNS (worker.registration writes them).
META_NETWORK_ADDRESS = "network_address"
META_CONTAINER_NAME = "container_name"
META_CONTAINER_PORT = "container_port"
META_HOST_ID = "host_id"


@dataclass(frozen=True)
class Replica:
    """One answerable replica: its name (``<name>.<service>.internal``), address and port."""

    name: str
    address: str
    port: int


@dataclass(frozen=True)
class Asker:
    """Who sent a query: a tenant (its owner id) or the host itself (owner None)."""

    owner_id: uuid.UUID | None


class Directory:
    """Replicas by (asker, service), read from the registry behind a tiny cache."""

    def __init__(self, registry: ServiceRegistry, host_id: str, cache_seconds: float = CACHE_SECONDS) -> None:
        self.registry = registry
        self.host_id = host_id
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[uuid.UUID | None, str], tuple[float, list[Replica]]] = {}

    async def replicas(self, asker: Asker, service: str) -> list[Replica]:
        """The passing replicas of ``service`` the asker may see, ordered by name."""
        key = (asker.owner_id, service)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        found = await self._lookup(asker, service)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now, found)
        return found

    async def _lookup(self, asker: Asker, service: str) -> list[Replica]:
        if asker.owner_id is None:
            instances = await self.registry.instances(Namespace.INTERNAL_SERVICES, service, passing_only=True)
            return sorted(
                (Replica(i.id.lower(), i.address, i.port) for i in instances if _ipv4(i.address)),
                key=lambda r: r.name,
            )
        instances = await self.registry.instances(
            Namespace.CLIENT_CONTAINERS, service, owner_id=asker.owner_id, passing_only=True
        )
        replicas = []
        for instance in instances:
            meta = instance.meta
            address = meta.get(META_NETWORK_ADDRESS, "")
            # Only this host's replicas: tenant networks do not span hosts.
            if instance.status is not HealthStatus.PASSING or meta.get(META_HOST_ID) != self.host_id:
                continue
            if not _ipv4(address) or instance.owner_id != asker.owner_id:
                continue
            port = int(meta.get(META_CONTAINER_PORT) or instance.port)
            replicas.append(Replica(meta.get(META_CONTAINER_NAME) or instance.id, address, port))
        return sorted(replicas, key=lambda r: (r.name, r.address))


def _ipv4(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False


def asker_by_network(networks: TenantNetworks) -> Callable[[str], Asker | None]:
    """Who a source address is: the tenant whose network holds it, the host (a gateway address or loopback),
    or nobody."""

    def asker_of(source: str) -> Asker | None:
        owner = networks.owner_of(source)
        if owner is not None:
            return Asker(owner)
        return Asker(None) if networks.is_gateway(source) or is_host_address(source) else None

    return asker_of


@functools.lru_cache(maxsize=256)
def is_host_address(address: str) -> bool:
    """Whether ``address`` is one of this host's own (a platform process asking): loopback, or an address a
    socket can bind to here. Tenant containers' addresses live in their own network namespaces."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


class Forwarder:
    """Sends a tenant's other questions to upstream nameservers (first answer wins, in order)."""

    def __init__(self, nameservers: Sequence[str], timeout: float = UPSTREAM_TIMEOUT_SECONDS) -> None:
        self.nameservers = list(nameservers)
        self.timeout = timeout

    async def forward(self, query: dns.message.Message) -> dns.message.Message | None:
        for nameserver in self.nameservers:
            try:
                response = await dns.asyncquery.udp(query, nameserver, timeout=self.timeout)
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(query, nameserver, timeout=self.timeout)
                return response
            except (dns.exception.DNSException, OSError) as exc:
                log_event(logger, "upstream nameserver failed", nameserver=nameserver, error=type(exc).__name__)
        return None


def upstream_nameservers(setting: str, resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """``resolv.conf``: the host's nameservers; ``none`` (or empty): none; else comma-separated addresses."""
    value = setting.strip()
    if value.lower() in ("", "none"):
        return []
    if value.lower() != "resolv.conf":
        return [str(ipaddress.ip_address(item.strip())) for item in value.split(",") if item.strip()]
    servers = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    servers.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
    return servers


class Resolver:
    """Answers one DNS query for one source address (the logic, without sockets)."""

    def __init__(
        self,
        directory: Directory,
        asker_of: Callable[[str], Asker | None],
        forwarder: Forwarder | None = None,
    ) -> None:
        self.directory = directory
        self.asker_of = asker_of
        self.forwarder = forwarder

    async def resolve(self, query: dns.message.Message, source: str) -> dns.message.Message:
        asker = self.asker_of(source)
        if asker is None or len(query.question) != 1 or query.opcode() != 0:
            return _reply(query, dns.rcode.REFUSED)
        question = query.question[0]
        name = question.name
        if question.rdclass != dns.rdataclass.IN:
            return _reply(query, dns.rcode.REFUSED)
        if not name.is_subdomain(ZONE):
            if asker.owner_id is not None and self.forwarder is not None and self.forwarder.nameservers:
                answered = await self.forwarder.forward(query)
                if answered is not None:
                    answered.id = query.id
                    return answered
                return _reply(query, dns.rcode.SERVFAIL)
            return _reply(query, dns.rcode.REFUSED)
        try:
            return await self._answer_internal(query, asker, name, question.rdtype)
        except (DependencyError, OSError) as exc:
            log_event(logger, "internal DNS lookup failed", error=str(exc))
            return _reply(query, dns.rcode.SERVFAIL)

    async def _answer_internal(
        self, query: dns.message.Message, asker: Asker, name: dns.name.Name, rdtype: int
    ) -> dns.message.Message:
        labels = [label.decode("ascii", errors="replace").lower() for label in name.relativize(ZONE).labels]
        response = _reply(query, dns.rcode.NOERROR)
        response.flags |= dns.flags.AA
        if len(labels) == 2 and labels[1] == "_tcp" and labels[0].startswith("_"):
            service = labels[0][1:]
            replicas = await self.directory.replicas(asker, service)
            if not replicas:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response
            if rdtype in (dns.rdatatype.SRV, dns.rdatatype.ANY):
                targets = [dns.name.from_text(f"{replica.name}.{service}", ZONE) for replica in replicas]
                srv = dns.rrset.from_text_list(
                    name,
                    RECORD_TTL_SECONDS,
                    "IN",
                    "SRV",
                    [f"10 10 {replica.port} {target}" for replica, target in zip(replicas, targets, strict=True)],
                )
                response.answer.append(srv)
                for replica, target in zip(replicas, targets, strict=True):
                    response.additional.append(
                        dns.rrset.from_text(target, RECORD_TTL_SECONDS, "IN", "A", replica.address)
                    )
            return response
        if len(labels) == 1 and not labels[0].startswith("_"):
            replicas = await self.directory.replicas(asker, labels[0])
        elif len(labels) == 2 and not labels[1].startswith("_"):
            replicas = [r for r in await self.directory.replicas(asker, labels[1]) if r.name == labels[0]]
        else:
            replicas = []
        if not replicas:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        if rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            addresses = list(dict.fromkeys(replica.address for replica in replicas))
            response.answer.append(dns.rrset.from_text_list(name, RECORD_TTL_SECONDS, "IN", "A", addresses))
        return response  # other types of an existing name: no data


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(rcode)
    return response


# ---------------------------------------------------------------------------------------------- the server


def _encode_udp(query: dns.message.Message, response: dns.message.Message) -> bytes:
    limit = max(512, query.payload if query.edns >= 0 else 512)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = _reply(query, response.rcode())
        truncated.flags |= dns.flags.TC
        return truncated.to_wire()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        task = asyncio.create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # not a DNS query: no answer
        response = await self.resolver.resolve(query, str(addr[0]))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(_encode_udp(query, response), addr)


class DnsServer:
    """The internal DNS on one address: UDP and TCP on ``port``."""

    def __init__(self, resolver: Resolver, address: str, port: int) -> None:
        self.resolver = resolver
        self.address = address
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.resolver), local_addr=(self.address, self.port)
        )
        self._udp = transport
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port, reuse_address=True)
        except OSError:
            transport.close()
            raise

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = str(writer.get_extra_info("peername")[0])
        try:
            while True:
                # DNS over TCP: each message is led by its two-byte length (RFC 1035 4.2.2).
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
                query = dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), 10))
                wire = (await self.resolver.resolve(query, source)).to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, dns.exception.DNSException):
            pass
        finally:
            writer.close()


class InternalDns:
    """Serves the internal DNS on every tenant network's gateway (a ``NetworkListener``)."""

    def __init__(self, resolver: Resolver, port: int = 53) -> None:
        self.resolver = resolver
        self.port = port
        self._servers: dict[str, DnsServer] = {}

    async def network_added(self, network: TenantNetwork) -> None:
        address = str(network.gateway)
        if address in self._servers:
            return
        server = DnsServer(self.resolver, address, self.port)
        try:
            await server.start()
        except OSError as exc:
            log_event(logger, "internal DNS could not listen", address=address, port=self.port, error=str(exc))
            return
        self._servers[address] = server
        log_event(logger, "internal DNS listening", address=address, port=self.port)

    async def network_removed(self, network: TenantNetwork) -> None:
        server = self._servers.pop(str(network.gateway), None)
        if server is not None:
            await server.stop()

    async def close(self) -> None:
        for server in list(self._servers.values()):
            await server.stop()
        self._servers.clear()

    @property
    def addresses(self) -> list[str]:
        return sorted(self._servers)
