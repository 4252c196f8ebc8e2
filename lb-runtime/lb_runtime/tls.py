"""TLS termination for https listeners: one SSLContext per certificate, chosen by the client's SNI.

Every context is TLS 1.2 or 1.3 only, with forward-secret AEAD ciphers for 1.2 (TLS 1.3's suites are all
modern), ALPN ``http/1.1``, no compression, no renegotiation. A listener's server context carries its first
certificate (for clients without SNI or with an unknown name) and an SNI callback that switches to the
certificate naming the host (exact name first, then ``*.parent``); on a shared port, a route's host is given
one of its own route's certificates only. A new set of certificates replaces the selection in place:
connections made afterwards get them, the listener is not re-bound.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from lb_runtime.snapshot import Certificate
from shared.certificates import inspect_certificate

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN = ["http/1.1"]


def certificate_hostnames(chain_pem: str, key_pem: str) -> tuple[str, ...]:
    """The names a snapshot certificate serves; ValueError when it does not parse or the key is not its own."""
    return inspect_certificate(chain_pem, key_pem, full=False).hostnames


def server_context(certificate: Certificate | None = None) -> ssl.SSLContext:
    """A server context with Berth's TLS settings, holding ``certificate`` when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(ALPN)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if certificate is not None:
        load_certificate(context, certificate)
    return context


def load_certificate(context: ssl.SSLContext, certificate: Certificate) -> None:
    """Put ``certificate`` into ``context`` (OpenSSL reads files: a private 0600 file, removed at once)."""
    with tempfile.TemporaryDirectory(prefix="berth-lb-tls-") as directory:
        chain_path = os.path.join(directory, "chain.pem")
        key_path = os.path.join(directory, "key.pem")
        for path, text in ((chain_path, certificate.chain_pem), (key_path, certificate.key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
        context.load_cert_chain(chain_path, key_path)


class CertificateSelector:
    """The server context of one https listener and the SNI choice among its certificates.

    On a shared port (``hosts``: each host route's host and that route's own certificates), a route's host is
    only ever given one of its own route's certificates: another route's certificate is not, whatever names it
    carries (a certificate's names are no proof of owning them; the host names were proven to the control
    plane). Other names (no route's) get the default, the first certificate."""

    def __init__(
        self, certificates: Sequence[Certificate], hosts: Mapping[str, Sequence[Certificate]] | None = None
    ) -> None:
        self.context = server_context()
        self.context.sni_callback = self._on_server_name
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}
        self._loaded: tuple[Any, ...] = ()
        self.update(certificates, hosts)

    def update(
        self, certificates: Sequence[Certificate], hosts: Mapping[str, Sequence[Certificate]] | None = None
    ) -> None:
        """Serve ``certificates`` (and ``hosts``' choices) from the next handshake on (the first is the default)."""
        certificates = tuple(certificates)
        scoped = None if hosts is None else tuple((host, tuple(own)) for host, own in hosts.items())
        if (certificates, scoped) == self._loaded:
            return
        contexts: dict[Certificate, ssl.SSLContext] = {}

        def context_of(certificate: Certificate) -> ssl.SSLContext:
            if certificate not in contexts:
                contexts[certificate] = server_context(certificate)
            return contexts[certificate]

        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        if scoped is None:
            for certificate in certificates:
                for name in certificate.hostnames:
                    target = wildcard if name.startswith("*.") else exact
                    target.setdefault(name.removeprefix("*."), context_of(certificate))
        else:
            for host, own in scoped:
                chosen = _naming(own, host)
                if chosen is not None:
                    exact[host] = context_of(chosen)
        load_certificate(self.context, certificates[0])
        self._exact, self._wildcard, self._loaded = exact, wildcard, (certificates, scoped)

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context whose certificate names ``server_name`` (None: keep the default)."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        found = self._exact.get(name)
        if found is None and "." in name:
            found = self._wildcard.get(name.split(".", 1)[1])
        return found

    def _on_server_name(self, connection: Any, server_name: str | None, _: ssl.SSLContext) -> None:
        chosen = self.context_for(server_name)
        if chosen is not None:
            connection.context = chosen


def _naming(certificates: Sequence[Certificate], host: str) -> Certificate | None:
    """The first of ``certificates`` naming ``host`` exactly, else by a wildcard, else the first one (a route
    whose certificates do not name its host still presents its own); None when there are none."""
    parent = "*." + host.split(".", 1)[1] if "." in host else None
    for wanted in (host, parent):
        for certificate in certificates:
            if wanted in certificate.hostnames:
                return certificate
    return certificates[0] if certificates else None
