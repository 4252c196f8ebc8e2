"""https listeners: TLS terminated with the certificate the client's SNI names, TLS 1.2/1.3 only, ALPN
http/1.1, certificates replaced live; the request reaches the instance as plain HTTP saying it came in https."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import pytest
from cryptography import x509
from lb_runtime import RouteTableError, build_route_table

from tests.lb_runtime.support import listener, running_lb
from tests.support.certificates import CertificateAuthority, make_ca


def https_listener(listener_id: str, instances: list[dict[str, Any]], *certificates: tuple[str, str]) -> dict:
    return listener(
        listener_id,
        instances,
        protocol="https",
        certificates=[
            {"id": f"cert-{index}", "chain_pem": chain, "key_pem": key}
            for index, (chain, key) in enumerate(certificates)
        ],
    )


def client_context(ca: CertificateAuthority, **options: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.pem)
    context.set_alpn_protocols(["h2", "http/1.1"])
    for name, value in options.items():
        setattr(context, name, value)
    return context


async def https_get(port: int, server_name: str, context: ssl.SSLContext, path: str = "/") -> dict[str, Any]:
    """One request over TLS: the certificate's names, the TLS version and ALPN, and the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_name)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        leaf = x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        head, _, body = answer.partition(b"\r\n\r\n")
        return {
            "names": names,
            "version": ssl_object.version(),
            "alpn": ssl_object.selected_alpn_protocol(),
            "status": int(head.split(b" ")[1]),
            "body": body,
        }
    finally:
        writer.close()


async def test_sni_picks_the_certificate_and_the_request_is_proxied(http_backends) -> None:
    # GIVEN an https listener with a certificate for shop.example and a wildcard one for *.api.example
    ca = make_ca()
    backend = await http_backends("a")
    snapshot = {
        "listeners": [https_listener("web", [backend.instance], ca.issue("shop.example"), ca.issue("*.api.example"))]
    }
    async with running_lb(snapshot) as (runtime, _):
        port = runtime.listener_port("web")
        context = client_context(ca)
        # WHEN clients name each host (and one names none of them)
        shop = await https_get(port, "shop.example", context, "/headers")
        api = await https_get(port, "v1.api.example", context)
        unknown_context = client_context(ca, check_hostname=False)
        unknown = await https_get(port, "other.example", unknown_context)
    # THEN each gets the certificate for its name (the first one by default), over TLS 1.3 with http/1.1
    assert shop["names"] == ["shop.example"]
    assert api["names"] == ["*.api.example"]
    assert unknown["names"] == ["shop.example"]
    assert shop["version"] == "TLSv1.3" and shop["alpn"] == "http/1.1"
    # AND the instance got plain HTTP saying the client came in https
    assert shop["status"] == 200
    assert json.loads(shop["body"])["x-forwarded-proto"] == "https"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_only_tls_1_2_and_1_3_are_spoken(http_backends) -> None:
    ca = make_ca()
    backend = await http_backends("a")
    async with running_lb({"listeners": [https_listener("web", [backend.instance], ca.issue("shop.example"))]}) as (
        runtime,
        _,
    ):
        port = runtime.listener_port("web")
        tls12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        assert (await https_get(port, "shop.example", tls12))["version"] == "TLSv1.2"
        tls11 = client_context(ca, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
        tls11.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await https_get(port, "shop.example", tls11)


async def test_a_new_certificate_serves_new_connections_without_a_rebind(http_backends) -> None:
    ca = make_ca()
    backend = await http_backends("a")
    first = ca.issue("shop.example")
    async with running_lb({"listeners": [https_listener("web", [backend.instance], first)]}) as (runtime, source):
        port = runtime.listener_port("web")
        before = await https_get(port, "shop.example", client_context(ca))
        # WHEN the snapshot carries a renewed certificate for the same listener
        renewed = ca.issue("shop.example", "www.shop.example")
        source.set({"listeners": [https_listener("web", [backend.instance], renewed) | {"port": port}]})
        await asyncio.sleep(0.3)
        after = await https_get(port, "www.shop.example", client_context(ca))
    assert before["names"] == ["shop.example"]
    assert after["names"] == ["shop.example", "www.shop.example"]
    assert after["status"] == 200


def test_https_needs_a_certificate_and_a_matching_key() -> None:
    ca = make_ca()
    chain, _ = ca.issue("shop.example")
    _, other_key = ca.issue("other.example")
    with pytest.raises(RouteTableError, match="needs at least one certificate"):
        build_route_table({"listeners": [listener("web", [], protocol="https")]})
    with pytest.raises(RouteTableError, match="does not belong"):
        build_route_table({"listeners": [https_listener("web", [], (chain, other_key))]})
