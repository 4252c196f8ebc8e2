"""How the host routes of lb-runtime's shared ports are named, defined once: the control plane
(lb_runtime.control_plane) names each route after the listener that owns its host name, lb-runtime reports a
route's figures under that name like a listener's, and the traffic recorder (worker.traffic_store) counts them
toward the owning listener with its own port's.

A route id is ``<listener id>:<host>``, and ``<listener id>:<host>:redirect`` for the http side of an https
listener's name (answered 308 to https). A listener id is a UUID and a host name holds no colon, so the owning
listener is what comes before the first colon; an id without a colon is a listener's own (or a shared port's
front, ``shared-http`` / ``shared-https``, which belongs to no listener).
"""

from __future__ import annotations

REDIRECT = "redirect"


def route_id(listener_id: str, host: str) -> str:
    """The id of the route serving ``host`` (on a shared port) for listener ``listener_id``."""
    return f"{listener_id}:{host}"


def redirect_route_id(listener_id: str, host: str) -> str:
    """The id of the route answering ``host`` on the shared http port with a redirect to https."""
    return f"{route_id(listener_id, host)}:{REDIRECT}"


def owning_listener(reported_id: str) -> str:
    """The listener whose traffic a reported id (a listener's or a host route's) is."""
    return reported_id.partition(":")[0]
