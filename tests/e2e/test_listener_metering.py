"""Listener metering end to end: requests sent through a listener of the real lb-runtime, read into the
listener's traffic history by the worker's recording round, are metered exactly once as ``listener_requests``,
``listener_ingress_bytes`` (the bytes the client sent) and ``listener_egress_bytes`` (the bytes it read), and
the user's usage (``GET /api/billing/usage``, by meter, through the gateway) shows them to the byte.

The test owns its lb-runtime (tests.e2e.test_traffic_history's private one on 127.0.0.2) and does the
recorder's rounds itself, so every request is in the history before it meters. It meters with the metering
functions directly and writes only its own listener's records, in the session worker's window size: the
record ids are the ones the session worker derives, so whichever of the two writes a window first, the other
changes nothing (and no other tenant's window is touched before its grace).

A container's ``egress_bytes`` leaves out its answers through the listener (they are the listener's egress):
a container that serves known bytes both through the listener and directly on its own published port is
metered for the direct ones only, up to protocol overhead (``HEADER_TOLERANCE``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from shared.billing.invoices import period_containing
from shared.billing.meters import MeterName
from shared.db import Database
from tests.conftest import TEST_DATABASE_URL, RunningGateway
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.e2e.test_traffic import _deploy, _listener, web_archive  # noqa: F401
from tests.e2e.test_traffic_history import (  # noqa: F401
    BIND,
    PrivateLb,
    private_lb,
    record_reading,
    send,
    served_user,
    wait_until_served,
)
from tests.support.docker_containers import remove_labelled
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL
from worker.metering import meter_window, window_bounds
from worker.metering_store import MeteringStore
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker

REQUESTS = 25


async def meter_listener(listener_id: str, since: datetime) -> int:
    """Meter every window from the one holding ``since`` to the current one, keeping the listener's records
    only; how many records were inserted."""
    window = WorkerSettings().metering_window_seconds
    database = Database(TEST_DATABASE_URL, max_size=2)
    await database.open()
    try:
        store = MeteringStore(database)
        start = window_bounds(since, window)
        inserted = 0
        while start <= datetime.now(UTC):
            end = start + timedelta(seconds=window)
            records = [r for r in await meter_window(store, start, end) if r.subject_id == listener_id]
            inserted += await store.write(records)
            start = end
        return inserted
    finally:
        await database.close()


def listener_usage(client: httpx.Client, user: SignedInUser, since: datetime) -> dict[str, Decimal]:
    """The user's usage of the listener meters in the billing period holding ``since``."""
    period = period_containing(since)
    answer = client.get(
        "/api/billing/usage",
        params={"from": period.start.isoformat(), "to": period.end.isoformat(), "group_by": "meter"},
        headers=user.auth_headers,
    )
    assert answer.status_code == 200, answer.text
    quantities = {item["meter"]: item["quantity"] for item in answer.json()["items"]}
    meters = (MeterName.LISTENER_REQUESTS, MeterName.LISTENER_INGRESS_BYTES, MeterName.LISTENER_EGRESS_BYTES)
    return {meter: Decimal(str(quantities.get(meter, 0))) for meter in meters}


def test_requests_through_a_listener_are_metered_once(
    gateway: RunningGateway,
    served_user: tuple[SignedInUser, dict[str, Any]],  # noqa: F811
    private_lb: PrivateLb,  # noqa: F811
) -> None:
    user, listener = served_user
    # GIVEN the private lb-runtime serving the listener, and the recorder's first reading of it (its cursor)
    wait_until_served(private_lb, listener["id"])
    record_reading(private_lb.admin_url)
    since = datetime.now(UTC) - timedelta(seconds=1)

    # WHEN requests go through the listener, the recorder reads them into the history, and the windows are
    # metered twice
    sent, received = send(listener["port"], REQUESTS)
    record_reading(private_lb.admin_url)
    first = asyncio.run(meter_listener(listener["id"], since))
    again = asyncio.run(meter_listener(listener["id"], since))

    # THEN the listener's requests and the bytes its client sent and read are its usage, counted once
    assert first >= 3 and again == 0
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert listener_usage(client, user, since) == {
            MeterName.LISTENER_REQUESTS: REQUESTS,
            MeterName.LISTENER_INGRESS_BYTES: sent,
            MeterName.LISTENER_EGRESS_BYTES: received,
        }


BLOB_BYTES = 1024 * 1024
BLOB_GETS = 6
# What a container transmits beyond the answers its clients read: the frame headers of every segment
# (Ethernet 14 + IP 20 + TCP 32 bytes per segment of at most 1448 bytes of payload: under 4.6%, less with
# segmentation offload), its handshakes and ACKs, and the answers to lb-runtime's health checks. All of it stays
# container egress (lb-runtime counts payload only), so the test allows 6% of the bytes served plus 64 KiB.
HEADER_TOLERANCE = (Decimal("0.06"), 64 * 1024)


@pytest.fixture
def blob_user(
    gateway: RunningGateway,
    worker: Any,
    web_archive: Path,  # noqa: F811
    docker_client: docker.DockerClient,
) -> Iterator[tuple[SignedInUser, dict[str, Any], dict[str, Any]]]:
    """A user with one replica of service "web" serving /blob.bin (BLOB_BYTES), and a listener in front of it."""
    command = [
        "sh",
        "-c",
        f"head -c {BLOB_BYTES} /dev/zero > /srv/www/blob.bin && exec httpd -f -p 8080 -h /srv/www",
    ]
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        try:
            image = upload_and_process(client, user, "web", web_archive)
            assert image["status"] == "ready", image
            container = _deploy(client, user, image["id"], "blob-0", command=command)
            yield user, container, _listener(client, user)
        finally:
            remove_labelled(docker_client, OWNER_LABEL, user.id)


def get_blobs(address: str, port: int) -> int:
    """BLOB_GETS GETs of /blob.bin, each on its own connection read to its close; the bytes read."""
    request = f"GET /blob.bin HTTP/1.1\r\nHost: {address}:{port}\r\nConnection: close\r\n\r\n".encode()
    received = 0
    for _ in range(BLOB_GETS):
        answer = bytearray()
        with socket.create_connection((address, port), timeout=10) as connection:
            connection.sendall(request)
            while chunk := connection.recv(1 << 20):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") or answer.startswith(b"HTTP/1.0 200 "), bytes(answer[:200])
        assert len(answer) > BLOB_BYTES
        received += len(answer)
    return received


async def container_egress(container_id: str, start: datetime, end: datetime) -> tuple[Decimal, int, int]:
    """The container's egress metered over [start, end) as one window (computed, never written), with what
    its transmit counter grew by and what lb-runtime recorded receiving from it over the same span."""
    database = Database(TEST_DATABASE_URL, max_size=2)
    await database.open()
    try:
        store = MeteringStore(database)
        metered = sum(
            (
                record.quantity
                for record in await meter_window(store, start, end)
                if record.subject_id == container_id and record.meter == MeterName.EGRESS_BYTES
            ),
            Decimal(0),
        )
        samples = [row for row in await store.counter_samples(start, end) if str(row["container_id"]) == container_id]
        transmitted = int(samples[-1]["net_tx_bytes"]) - int(samples[0]["net_tx_bytes"])
        proxied = (await store.proxied_answers(start, end)).get(container_id, 0)
        return metered, transmitted, proxied
    finally:
        await database.close()


def latest_sample(container_id: str) -> datetime | None:
    async def read() -> datetime | None:
        database = Database(TEST_DATABASE_URL, max_size=1)
        await database.open()
        try:
            row = await database.fetch_one(
                "SELECT max(ts) AS ts FROM container_stats WHERE container_id = %s", (container_id,)
            )
            return row["ts"] if row else None
        finally:
            await database.close()

    return asyncio.run(read())


def test_container_egress_leaves_out_its_answers_through_a_listener(
    blob_user: tuple[SignedInUser, dict[str, Any], dict[str, Any]],
    private_lb: PrivateLb,  # noqa: F811
) -> None:
    _user, container, listener = blob_user
    published = container["ports"][0]
    # GIVEN the private lb-runtime serving the listener, the recorder's first reading of it, and a stats sample
    # of the container taken before any of the test's traffic
    wait_until_served(private_lb, listener["id"])
    record_reading(private_lb.admin_url)
    start = datetime.fromtimestamp(time.time() // 10 * 10, UTC)
    wait_until(
        lambda: (latest := latest_sample(container["id"])) is not None and latest >= start,
        timeout=30,
        interval=0.5,
        message="the worker stored no stats sample of the container",
    )

    # WHEN the container serves BLOB_GETS blobs through the listener and as many directly on its published
    # port, the recorder reads lb-runtime, and the worker samples the container's counters after it all
    through_listener = get_blobs(BIND, listener["port"])
    direct = get_blobs(published["host_ip"] or "127.0.0.1", published["host_port"])
    record_reading(private_lb.admin_url)
    served = datetime.now(UTC)
    wait_until(
        lambda: (latest := latest_sample(container["id"])) is not None and latest > served + timedelta(seconds=1),
        timeout=30,
        interval=0.5,
        message="the worker stored no stats sample after the traffic",
    )
    end = datetime.now(UTC)

    # THEN lb-runtime received the answers it served, and metered over the span the container's egress is
    # what it sent directly (its answers through the listener are the listener's egress), up to the headers
    metered, transmitted, proxied = asyncio.run(container_egress(container["id"], start, end))
    share, fixed = HEADER_TOLERANCE
    figures = (
        f"metered {metered}, transmitted {transmitted}, received by lb-runtime {proxied}, "
        f"read through the listener {through_listener}, read directly {direct}"
    )
    print(figures)
    assert proxied > BLOB_GETS * BLOB_BYTES, figures
    assert transmitted >= proxied + direct, figures
    assert metered == transmitted - proxied, figures
    assert direct <= metered <= direct + share * (through_listener + direct) + fixed, figures
