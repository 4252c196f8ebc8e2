"""The meters: what is measured, in which unit, and how it is priced. Named once here for the host worker
(which meters), the billing function (which answers usage) and invoicing (which prices it).

A meter's quantity is kept in its base unit (``unit``) as an exact decimal; a plan prices it per
``price_unit``, which is ``price_scale`` base units (a CPU-hour is 3600 CPU-seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class MeterName(StrEnum):
    CPU_SECONDS = "cpu_seconds"
    MEMORY_GIB_SECONDS = "memory_gib_seconds"
    EGRESS_BYTES = "egress_bytes"
    REPLICA_SECONDS = "replica_seconds"
    IMAGE_STORAGE_GIB_HOURS = "image_storage_gib_hours"
    LISTENER_REQUESTS = "listener_requests"
    LISTENER_EGRESS_BYTES = "listener_egress_bytes"
    LISTENER_INGRESS_BYTES = "listener_ingress_bytes"


@dataclass(frozen=True)
class Meter:
    name: MeterName
    subject_kind: str  # container, image or listener
    unit: str
    price_unit: str
    price_scale: Decimal
    description: str


GIB = Decimal(1024**3)

METERS: dict[str, Meter] = {
    meter.name: meter
    for meter in (
        Meter(MeterName.CPU_SECONDS, "container", "cpu-second", "cpu-hour", Decimal(3600), "CPU time used"),
        Meter(
            MeterName.MEMORY_GIB_SECONDS,
            "container",
            "GiB-second",
            "GiB-hour",
            Decimal(3600),
            "Memory reserved (limit x time running)",
        ),
        # Bytes a container transmitted, less its answers to lb-runtime (those are the listener's egress).
        Meter(MeterName.EGRESS_BYTES, "container", "byte", "GiB", GIB, "Network egress"),
        Meter(MeterName.REPLICA_SECONDS, "container", "replica-second", "replica-hour", Decimal(3600), "Replica time"),
        Meter(
            MeterName.IMAGE_STORAGE_GIB_HOURS,
            "image",
            "GiB-hour",
            "GiB-month",
            Decimal(730),
            "Image storage",
        ),
        Meter(
            MeterName.LISTENER_REQUESTS,
            "listener",
            "request",
            "million requests",
            Decimal(1_000_000),
            "Requests through load-balancer listeners",
        ),
        # Bytes lb-runtime wrote to a listener's clients (its answers, headers included; TLS not counted).
        Meter(MeterName.LISTENER_EGRESS_BYTES, "listener", "byte", "GiB", GIB, "Data out to load-balancer clients"),
        # Bytes lb-runtime received from a listener's clients (their requests or TCP streams).
        Meter(MeterName.LISTENER_INGRESS_BYTES, "listener", "byte", "GiB", GIB, "Data in from load-balancer clients"),
    )
}
METER_NAMES: tuple[str, ...] = tuple(METERS)
