"""Region-aware selection: which region serves a request, and which of its instances.

A listener with a region policy (``Listener.regions``) gets a ``RegionalBalancer`` instead of one pool: one
plain balancer (``backends.Balancer``, the listener's algorithm) per region, tried in a per-request order.
The contract it keeps:

- The preferred region is the ``Berth-Prefer-Region`` header's when the listener has instances there, else
  the client's (``routing: client_region``: country by GeoIP, then the operator's country -> region table),
  else this lb-runtime's own (``BERTH_LB_REGION``), else the policy's first.
- From there the policy's ``order`` is followed, then regions it does not name (by name), then instances of
  no known region. A region is passed over while it has fewer than ``min_healthy`` instances taking traffic,
  more than ``max_in_flight`` requests in flight per such instance, or a p95 latency above ``max_p95_ms`` in
  the last window; when every region is passed over, the first one with any instance taking traffic serves.
  A region with none is never chosen.
- The client's address is the direct peer's, or, only when the peer is a trusted proxy
  (``BERTH_LB_TRUSTED_PROXIES``), the right-most address of ``X-Forwarded-For`` that is not a trusted proxy.
  An untrusted peer's ``X-Forwarded-For`` is ignored for location (it is still passed on, as always).
- An instance may answer ``Berth-Replay: region=<r>`` to have the request served in region r instead
  (``http_proxy.HttpClientConnection.replay``): once per request, GET, HEAD, OPTIONS, PUT and DELETE with at
  most 64 KiB of body, and only to a region with an instance taking traffic; otherwise its answer goes out.

Balancing within a region, health, ejection and draining are the plain balancers' (this module only chooses
among them), so TCP listeners (which have no headers) get the same preference for this lb-runtime's region.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lb_runtime.backends import Backend
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import Listener, RegionPolicy
from lb_runtime.stats import LATENCY_BUCKETS

# Instances whose host's region is unknown form this group, tried after every named region.
NO_REGION = ""
# How long a region's p95 (from its instances' latency histograms) stands before it is measured again.
P95_WINDOW_SECONDS = 0.5
_CACHE_LIMIT = 4096


class ClientLocator:
    """The client's address and region for a request: trusted-proxy rule, GeoIP country, country table."""

    def __init__(self, settings: LbSettings) -> None:
        self.home = settings.region
        self._trusted = tuple(ipaddress.ip_network(network, strict=False) for network in settings.trusted_proxies)
        self._trusted_cache: dict[bytes, bool] = {}
        table = {country.upper(): region for country, region in settings.country_regions.items()}
        if settings.country_regions_file:
            table |= load_country_regions(settings.country_regions_file)
        self.country_regions = table
        self._geoip: Any = None
        self._region_cache: dict[str, str | None] = {}
        self._located: dict[tuple[bytes, bytes], str | None] = {}

    def is_trusted(self, address: bytes) -> bool:
        """Whether ``address`` is one of the configured trusted proxies."""
        known = self._trusted_cache.get(address)
        if known is None:
            known = False
            if self._trusted:
                try:
                    parsed = ipaddress.ip_address(address.decode("ascii").strip())
                except (ValueError, UnicodeDecodeError):
                    parsed = None
                known = parsed is not None and any(parsed in network for network in self._trusted)
            if len(self._trusted_cache) >= _CACHE_LIMIT:
                self._trusted_cache.clear()
            self._trusted_cache[address] = known
        return known

    def client_address(self, peer: bytes, forwarded_for: bytes) -> bytes:
        """The address the request came from: ``peer``, or the right-most untrusted hop of ``X-Forwarded-For``
        when ``peer`` is a trusted proxy (a client cannot name itself through a proxy that is not trusted)."""
        if not forwarded_for or not self.is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(b",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def locate(self, peer: bytes, forwarded_for: bytes) -> str | None:
        """The client's region for a request from ``peer`` with ``forwarded_for`` (remembered: a few hundred ns
        per request instead of a few microseconds)."""
        key = (peer, forwarded_for)
        try:
            return self._located[key]
        except KeyError:
            pass
        region = self.region_of(self.client_address(peer, forwarded_for))
        if len(self._located) >= _CACHE_LIMIT:
            self._located.clear()  # bounded: the header is the client's to choose
        self._located[key] = region
        return region

    def country_of(self, address: str) -> str | None:
        """The ISO country code of ``address`` from geoip2fast's bundled data; None when it has none."""
        if self._geoip is None:
            from geoip2fast import GeoIP2Fast  # loaded on first use: ~0.1 s and a few MB, only where needed

            self._geoip = GeoIP2Fast(verbose=False)
        try:
            code = self._geoip.lookup(address).country_code
        except Exception:  # a malformed address: no country
            return None
        return code if isinstance(code, str) and len(code) == 2 and code.isalpha() else None

    def region_of(self, address: bytes) -> str | None:
        """The region the operator's table sends ``address``'s country to ("*" for any other); None: none."""
        if not self.country_regions:
            return None
        text = address.decode("ascii", "replace")
        if text in self._region_cache:
            return self._region_cache[text]
        country = self.country_of(text)
        region = self.country_regions.get(country) if country else None
        if region is None:
            region = self.country_regions.get("*")
        if len(self._region_cache) >= _CACHE_LIMIT:
            self._region_cache.clear()
        self._region_cache[text] = region
        return region


def load_country_regions(path: str) -> dict[str, str]:
    """The operator's country -> region table from a JSON file (``{"DE": "eu-central", "*": "us-east"}``)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: the country -> region table must be a JSON object of strings")
    return {country.upper(): region for country, region in data.items()}


class _Region:
    """One region's instances, their balancer and its load measure."""

    __slots__ = ("backends", "balancer", "name", "next_measure", "overloaded", "seen_buckets")

    def __init__(self, name: str, balancer: Any) -> None:
        self.name = name
        self.balancer = balancer
        self.backends: tuple[Backend, ...] = tuple(balancer.backends)
        self.next_measure = 0.0
        self.overloaded = False
        self.seen_buckets = [0] * (len(LATENCY_BUCKETS) + 1)


class RegionalBalancer:
    """The listener's balancer when it has a region policy: ``pick`` (this lb-runtime's preference, what TCP
    and retries without a request region use) and ``pick_region`` (a request's own preferred region)."""

    def __init__(
        self,
        policy: RegionPolicy,
        algorithm: str,
        backends: Sequence[Backend],
        regions: Mapping[str, str | None],
        balancer_class: Any,
        locator: ClientLocator,
    ) -> None:
        self.policy = policy
        self.algorithm = algorithm
        self.backends: tuple[Backend, ...] = tuple(backends)
        self.locator = locator
        grouped: dict[str, list[Backend]] = {}
        for backend in self.backends:
            grouped.setdefault(regions.get(backend.id) or NO_REGION, []).append(backend)
        self.regions = {name: _Region(name, balancer_class(algorithm, members)) for name, members in grouped.items()}
        named = [name for name in policy.order if name in self.regions]
        named += sorted(name for name in self.regions if name not in policy.order and name != NO_REGION)
        tail = [NO_REGION] if NO_REGION in self.regions else []
        base = [*named, *tail]
        self._orders: dict[str | None, tuple[_Region, ...]] = {
            name: tuple(self.regions[r] for r in [name, *(other for other in base if other != name)]) for name in named
        }
        home = locator.home if locator.home in self._orders else None
        self._orders[None] = self._orders[home] if home is not None else tuple(self.regions[r] for r in base)
        self.home = home
        self._max_in_flight = policy.max_in_flight
        self._max_p95 = None if policy.max_p95_ms is None else policy.max_p95_ms / 1000.0
        self._min_healthy = policy.min_healthy
        self._client_routing = policy.routing == "client_region"

    def request_region(self, peer: bytes, forwarded_for: bytes, prefer: bytes) -> str | None:
        """The region a request prefers (None: this lb-runtime's default order); see the module docstring."""
        if prefer:
            name = prefer.decode("ascii", "replace").strip().lower()
            if name in self._orders:
                return name
        if self._client_routing:
            located = self.locator.locate(peer, forwarded_for)
            if located in self._orders:
                return located
        return None

    def pick(self, exclude: Any = ()) -> Backend | None:
        """A backend by this lb-runtime's own region preference."""
        return self.pick_region(exclude, None)

    def pick_region(self, exclude: Any, region: str | None) -> Backend | None:
        """A backend of the first region, in ``region``'s order, that takes traffic without crossing a limit;
        else of the first with any instance taking traffic; None when no instance anywhere does."""
        order = self._orders.get(region) or self._orders[None]
        fallback: _Region | None = None
        for group in order:
            healthy = 0
            in_flight = 0
            if exclude:
                for backend in group.backends:
                    if backend.takes_traffic() and backend not in exclude:
                        healthy += 1
                        in_flight += backend.active
            else:
                for backend in group.backends:
                    if backend.takes_traffic():
                        healthy += 1
                        in_flight += backend.active
            if not healthy:
                continue
            if fallback is None:
                fallback = group
            if healthy < self._min_healthy:
                continue
            if self._max_in_flight is not None and in_flight >= self._max_in_flight * healthy:
                continue
            if self._max_p95 is not None and self._slow(group):
                continue
            return group.balancer.pick(exclude)
        return None if fallback is None else fallback.balancer.pick(exclude)

    def pick_in(self, region: str) -> Backend | None:
        """A backend of ``region`` and no other (a ``Berth-Replay``); None when it has none taking traffic."""
        group = self.regions.get(region) if region != NO_REGION else None
        return None if group is None else group.balancer.pick(())

    def region_of(self, backend: Backend | None) -> str:
        """The region of one of this listener's backends ("" when it has none known)."""
        for name, group in self.regions.items():
            if backend in group.backends:
                return name
        return NO_REGION

    def _slow(self, group: _Region) -> bool:
        now = time.monotonic()
        if now >= group.next_measure:
            group.next_measure = now + P95_WINDOW_SECONDS
            totals = [0] * len(group.seen_buckets)
            for backend in group.backends:
                for index, count in enumerate(backend.bucket_counts):
                    totals[index] += count
            window = [total - seen for total, seen in zip(totals, group.seen_buckets, strict=True)]
            group.seen_buckets = totals
            group.overloaded = window_p95(window) > (self._max_p95 or 0.0)
        return group.overloaded

    def split(self) -> dict[str, dict[str, int]]:
        """Per region: instances, how many take traffic, requests in flight (for /stats)."""
        return {
            name or "unknown": {
                "instances": len(group.backends),
                "healthy": sum(1 for backend in group.backends if backend.takes_traffic()),
                "in_flight": sum(backend.active for backend in group.backends),
            }
            for name, group in self.regions.items()
        }


def window_p95(bucket_counts: Iterable[int]) -> float:
    """The upper bound (seconds) of the histogram bucket holding the 95th percentile; 0 for no samples."""
    counts = list(bucket_counts)
    total = sum(counts)
    if not total:
        return 0.0
    rank = 0.95 * total
    running = 0
    bounds = (*LATENCY_BUCKETS, float("inf"))
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        if running >= rank:
            return bound
    return bounds[-1]


def instance_regions(config: Listener) -> dict[str, str | None]:
    """Instance id -> region, as the snapshot gives it."""
    return {instance.id: instance.region for instance in config.instances}
