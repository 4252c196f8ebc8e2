"""Discovery logic over the registry port. A user sees the services of their own containers only; the
platform's own services (``internal-services``) exist only for admins: to anyone else that namespace is
as unknown as a misspelt one (404), so nothing about the platform's inside leaks."""

from __future__ import annotations

from uuid import UUID

from functions.service_discovery.models import InstanceInfo, NamespaceInfo, NamespaceList, Service, ServiceList
from shared.errors import NotFound
from shared.identity import Principal
from shared.registry import SERVICE_NAME, Instance, Namespace, ServiceRegistry

INTERNAL_DNS_ZONE = "internal"
DESCRIPTIONS = {
    Namespace.CLIENT_CONTAINERS: "Your containers, grouped by service name",
    Namespace.INTERNAL_SERVICES: "The platform's own services (host workers, lb-runtime)",
}


def dns_name(service: str) -> str:
    """The service's internal DNS name (``<service>.internal``, answered by each host worker)."""
    return f"{service}.{INTERNAL_DNS_ZONE}"


def _visible(user: Principal) -> list[Namespace]:
    return (
        [Namespace.CLIENT_CONTAINERS, Namespace.INTERNAL_SERVICES] if user.is_admin else [Namespace.CLIENT_CONTAINERS]
    )


def _namespace(user: Principal, name: str) -> Namespace:
    for namespace in _visible(user):
        if namespace.value == name:
            return namespace
    raise NotFound(f"No namespace {name!r}; yours is {Namespace.CLIENT_CONTAINERS.value!r}.")


def _owner(user: Principal, namespace: Namespace) -> UUID | None:
    """Whose instances the user may see: their own in client-containers (admins too: tenancy holds for
    everyone through this API), everything in internal-services (admins only reach it)."""
    return UUID(user.user_id) if namespace is Namespace.CLIENT_CONTAINERS else None


def _instance(instance: Instance) -> InstanceInfo:
    return InstanceInfo(
        id=instance.id,
        address=instance.address,
        port=instance.port,
        status=instance.status.value,
        output=instance.output,
        updated_at=instance.updated_at,
        region=instance.meta.get("region"),
    )


async def namespaces(registry: ServiceRegistry, user: Principal) -> NamespaceList:
    items = []
    for namespace in _visible(user):
        count = len(await registry.services(namespace, _owner(user, namespace)))
        items.append(NamespaceInfo(name=namespace.value, description=DESCRIPTIONS[namespace], services=count))
    return NamespaceList(items=items)


async def services(registry: ServiceRegistry, user: Principal, namespace_name: str) -> ServiceList:
    namespace = _namespace(user, namespace_name)
    owner = _owner(user, namespace)
    items = []
    for summary in await registry.services(namespace, owner):
        found = await registry.instances(namespace, summary.name, owner)
        items.append(
            Service(
                name=summary.name,
                namespace=namespace.value,
                dns_name=dns_name(summary.name),
                instances=[_instance(i) for i in found],
            )
        )
    return ServiceList(items=items)


async def service(registry: ServiceRegistry, user: Principal, namespace_name: str, name: str) -> Service:
    namespace = _namespace(user, namespace_name)
    found = await registry.instances(namespace, name, _owner(user, namespace)) if SERVICE_NAME.match(name) else []
    if not found:
        raise NotFound(f"No service {name!r} in {namespace.value}; a service appears once one of its containers runs.")
    return Service(
        name=name, namespace=namespace.value, dns_name=dns_name(name), instances=[_instance(i) for i in found]
    )
