"""Container operations of the Docker runtime adapter against the machine's real Docker Engine: a customer
container is reachable where it is published, runs without privileges, cannot reach the platform's
services, and its logs, stats, state and labels come back through the port."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import LOCAL_AWS_PORT
from tests.support.docker_images import built_test_image
from tests.support.waiting import wait_until, wait_until_async
from worker.container_runtime import (
    CONTAINER_ID_LABEL,
    OWNER_LABEL,
    ContainerSpec,
    DockerRuntime,
    LogStream,
    RuntimeFinal,
    _cpu_counter_files,
    _read_cpu_counter,
)

pytestmark = pytest.mark.docker

MEMORY_MB = 64
CPU = 0.5
PIDS_LIMIT = 64
# The image's own command is `httpd -v`, which logs only response codes; -vv also logs each request's url.
WEB_COMMAND = ["httpd", "-f", "-vv", "-p", "8080", "-h", "/srv/www"]
# Busybox 1.35's `wget -T` segfaults (exit 139), which would pass any "connection fails" check by itself;
# busybox `timeout` bounds the attempt instead.
FETCH = ["timeout", "5", "wget", "-q", "-O-"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _spec(image: str, network: str, **overrides: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "name": _unique("berth-test-ctr"),
        "image": image,
        "network": network,
        "labels": {CONTAINER_ID_LABEL: _unique("ctr"), OWNER_LABEL: _unique("owner")},
        "container_ports": [(8080, "tcp")],
        "host_bind": "127.0.0.1",
        "host_ports": {8080: _free_port()},
        "cpu": CPU,
        "memory_mb": MEMORY_MB,
        "pids_limit": PIDS_LIMIT,
    }
    values.update(overrides)
    return ContainerSpec(**values)


def _exec(docker_client: Any, container_id: str, command: list[str]) -> tuple[int, str]:
    """Run ``command`` in the container (low-level exec API); returns its exit code and output."""
    exec_id = docker_client.api.exec_create(container_id, command, stdout=True, stderr=True)["Id"]
    output = docker_client.api.exec_start(exec_id)
    return int(docker_client.api.exec_inspect(exec_id)["ExitCode"]), output.decode(errors="replace")


def _wait_for_200(url: str, timeout: float = 20.0) -> httpx.Response:
    return wait_until(
        lambda: response if (response := httpx.get(url, timeout=2)).status_code == 200 else None,
        timeout=timeout,
        interval=0.2,
        ignoring=(httpx.HTTPError,),
        message=f"{url} did not answer 200",
    )


@pytest.fixture(scope="module")
def web_image(docker_client: Any) -> Iterator[str]:
    tag = f"berth-test/web:{secrets.token_hex(4)}"
    with built_test_image(docker_client, "web", tag):
        yield tag


@pytest.fixture(scope="module")
def runtime() -> DockerRuntime:
    return DockerRuntime(timeout=60)


@pytest.fixture(scope="module")
async def network(runtime: DockerRuntime, docker_client: Any) -> AsyncIterator[str]:
    name = _unique("berth-test-net")
    network_id = await runtime.ensure_network(name)
    try:
        yield name
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_network(network_id)


@pytest.fixture
def cleanup(docker_client: Any) -> Iterator[list[str]]:
    """Names or ids appended here are force-removed after the test, whatever happened."""
    created: list[str] = []
    yield created
    for reference in created:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_container(reference, force=True, v=True)


@pytest.fixture(scope="module")
async def web(
    runtime: DockerRuntime, web_image: str, network: str, docker_client: Any
) -> AsyncIterator[dict[str, Any]]:
    """One started web container for the read-only checks of this module."""
    spec = _spec(web_image, network, command=WEB_COMMAND)
    try:
        container_id = await runtime.create_container(spec)
        await runtime.start_container(container_id)
        url = f"http://127.0.0.1:{spec.host_ports[8080]}"
        await asyncio.to_thread(_wait_for_200, url + "/")
        yield {"id": container_id, "spec": spec, "url": url}
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_container(spec.name, force=True, v=True)


def test_a_spec_without_the_ownership_labels_is_refused() -> None:
    with pytest.raises(ValueError, match=OWNER_LABEL):
        ContainerSpec(name="x", image="y", network="z", labels={CONTAINER_ID_LABEL: "c"})


async def test_ensure_network_is_idempotent_and_lets_containers_talk(
    runtime: DockerRuntime, network: str, docker_client: Any
) -> None:
    details = docker_client.api.inspect_network(network)
    assert await runtime.ensure_network(network) == details["Id"]
    assert details["Driver"] == "bridge" and details["Internal"] is False
    assert details["Options"]["com.docker.network.bridge.enable_icc"] == "true"


async def test_the_container_answers_on_its_published_address_only(web: dict[str, Any], docker_client: Any) -> None:
    # GIVEN the started container (the fixture waited for a 200 on 127.0.0.1:<host port>)
    # WHEN its cgi script is asked for the hostname THEN the container answers
    response = await asyncio.to_thread(_wait_for_200, web["url"] + "/cgi-bin/whoami")
    assert response.text.strip()
    # AND the port is published on the spec's bind address only
    bindings = docker_client.api.inspect_container(web["id"])["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(web["spec"].host_ports[8080])}]}


async def test_the_container_runs_without_privileges(web: dict[str, Any], docker_client: Any) -> None:
    # WHEN the container's first process is looked at from inside
    code, output = await asyncio.to_thread(
        _exec, docker_client, web["id"], ["grep", "-E", "^(CapEff|NoNewPrivs):", "/proc/1/status"]
    )
    # THEN it has no capabilities at all and cannot gain privileges (setuid binaries do nothing)
    assert code == 0, output
    fields = dict(line.split(":", 1) for line in output.splitlines())
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"

    # AND Docker holds the limits the spec asked for
    host = docker_client.api.inspect_container(web["id"])["HostConfig"]
    assert host["Memory"] == MEMORY_MB * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]  # no swap
    assert host["NanoCpus"] == int(CPU * 1_000_000_000)
    assert host["PidsLimit"] == PIDS_LIMIT
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Privileged"] is False
    assert not host["Binds"] and not host["Devices"] and not host.get("Mounts")
    assert host["RestartPolicy"]["Name"] == "no"
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert host["Init"] is True


async def test_the_platform_services_are_unreachable_from_the_container(
    web: dict[str, Any], network: str, docker_client: Any
) -> None:
    # GIVEN the host as the container sees it: its network's gateway
    gateway = docker_client.api.inspect_network(network)["IPAM"]["Config"][0]["Gateway"].split("/")[0]

    # AND, as a control, a listener of the test's own on that gateway address (so the route works)
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"control")

        def log_message(self, *args: Any) -> None:
            pass

    control = HTTPServer((gateway, 0), Hello)
    thread = threading.Thread(target=control.serve_forever, daemon=True)
    thread.start()
    try:
        control_url = f"http://{gateway}:{control.server_address[1]}/"
        code, output = await asyncio.to_thread(_exec, docker_client, web["id"], [*FETCH, control_url])
        assert (code, output) == (0, "control"), output

        # WHEN the container tries PostgreSQL, Redis and the local AWS (moto), which listen on the host's
        # 127.0.0.1 only
        for port in (5432, 6379, LOCAL_AWS_PORT):
            code, output = await asyncio.to_thread(
                _exec, docker_client, web["id"], [*FETCH, f"http://{gateway}:{port}/"]
            )
            # THEN nothing answers: the connection is refused (or, behind a firewall, times out)
            assert code != 0, f"port {port} answered from inside a customer container: {output}"
            assert "Connection refused" in output or code in (124, 143), (code, output)
    finally:
        control.shutdown()
        control.server_close()
        thread.join(5)


async def _log_lines(
    runtime: DockerRuntime, docker_id: str, stream: LogStream, **options: Any
) -> list[tuple[datetime, str]]:
    """(time, text) of each line of one of the container's streams, read through the runtime."""
    entries: list[bytes] = []
    assert await runtime.read_logs(docker_id, stream, entries.extend, **options)
    stamped = (raw.partition(" ") for raw in b"".join(entries).decode().splitlines())
    return [(datetime.fromisoformat(stamp), text) for stamp, _, text in stamped]


async def test_logs_come_back_by_stream_with_their_time(web: dict[str, Any], runtime: DockerRuntime) -> None:
    # GIVEN a request for a path only this test asks for (busybox httpd -vv logs each url to stderr)
    before = datetime.now(UTC) - timedelta(seconds=2)  # Docker's clock is this machine's clock
    await asyncio.to_thread(_wait_for_200, web["url"] + "/index.html")

    # WHEN stderr is read THEN the request line is there, with its time

    async def logged() -> list[tuple[datetime, str]] | None:
        lines = await _log_lines(runtime, web["id"], "stderr", tail=50)
        return lines if any(text.endswith(": url:/index.html") for _, text in lines) else None

    lines = await wait_until_async(logged, timeout=10, interval=0.2, message="the request line never reached the logs")
    matching = [ts for ts, text in lines if text.endswith(": url:/index.html")]
    assert len(matching) == 1, lines
    assert before <= matching[0] <= datetime.now(UTC) + timedelta(seconds=2)
    assert [ts for ts, _ in lines] == sorted(ts for ts, _ in lines)
    # AND stdout holds none of stderr's lines
    assert not any(text.endswith(": url:/index.html") for _, text in await _log_lines(runtime, web["id"], "stdout"))

    # AND tail and since narrow the answer
    assert len(await _log_lines(runtime, web["id"], "stderr", tail=1)) == 1
    later = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    assert await _log_lines(runtime, web["id"], "stderr", since=later) == []

    # AND a container Docker does not have reads as missing
    assert await runtime.read_logs(f"berth-test-missing-{secrets.token_hex(4)}", "stdout", [].extend) is False


async def test_stats_are_one_sample_of_non_negative_numbers(web: dict[str, Any], runtime: DockerRuntime) -> None:
    stats = await runtime.container_stats(web["id"])
    assert set(stats) == {
        "cpu_percent",
        "memory_bytes",
        "memory_limit_bytes",
        "net_rx_bytes",
        "net_tx_bytes",
        "block_read_bytes",
        "block_write_bytes",
        "cpu_usage_ns",  # the cgroup's cumulative counter, which CPU metering reads
    }
    assert all(value >= 0 for value in stats.values()), stats
    assert stats["memory_limit_bytes"] == MEMORY_MB * 1024 * 1024
    assert 0 < stats["memory_bytes"] <= stats["memory_limit_bytes"]
    assert stats["net_rx_bytes"] > 0  # it has served HTTP


async def test_containers_are_sized_by_full_id(web: dict[str, Any], runtime: DockerRuntime) -> None:
    sizes = await runtime.container_sizes([web["id"], "0" * 64])
    assert set(sizes) == {web["id"]} and sizes[web["id"]] >= 0
    assert await runtime.container_sizes([]) == {}


async def test_labelled_containers_are_listed_with_their_labels(web: dict[str, Any], runtime: DockerRuntime) -> None:
    listed = {item["id"]: item for item in await runtime.list_labelled_containers(CONTAINER_ID_LABEL)}
    mine = listed[web["id"]]
    assert mine["name"] == web["spec"].name
    assert mine["status"] == "running"
    assert mine["labels"][CONTAINER_ID_LABEL] == web["spec"].labels[CONTAINER_ID_LABEL]
    assert mine["labels"][OWNER_LABEL] == web["spec"].labels[OWNER_LABEL]

    # AND a label value narrows the listing to the containers carrying exactly that value
    record_id = web["spec"].labels[CONTAINER_ID_LABEL]
    assert [item["id"] for item in await runtime.list_labelled_containers(CONTAINER_ID_LABEL, record_id)] == [web["id"]]
    assert await runtime.list_labelled_containers(CONTAINER_ID_LABEL, record_id + "-other") == []


async def test_stop_then_remove_twice(
    runtime: DockerRuntime, web_image: str, network: str, cleanup: list[str], docker_client: Any
) -> None:
    # GIVEN a running container
    spec = _spec(web_image, network)
    cleanup.append(spec.name)
    container_id = await runtime.create_container(spec)
    assert (await runtime.container_state(container_id) or {})["status"] == "created"
    await runtime.start_container(container_id)
    running = await runtime.container_state(container_id)
    assert running is not None and running["status"] == "running" and running["started_at"] is not None
    # AND it has an address on its network, where the worker's health checks reach it
    address = running["ip_addresses"][network]
    assert (
        address == docker_client.api.inspect_network(network)["Containers"][container_id]["IPv4Address"].split("/")[0]
    )

    # WHEN it is stopped THEN its state says so, with an exit code and a finish time
    await runtime.stop_container(container_id, timeout_seconds=2)
    stopped = await runtime.container_state(container_id)
    assert stopped is not None
    assert stopped["status"] == "exited"
    assert isinstance(stopped["exit_code"], int)
    assert stopped["finished_at"] is not None and stopped["finished_at"] >= running["started_at"]
    assert stopped["oom_killed"] is False and stopped["health"] is None
    assert stopped["ip_addresses"] == {}  # Docker gives a stopped container no address

    # AND removing it twice is fine; afterwards there is no state
    assert await runtime.remove_container(container_id) is True
    assert await runtime.remove_container(container_id) is False
    assert await runtime.container_state(container_id) is None


# Busy until SIGTERM, then busy a while more (its shutdown), then gone.
BURN_THEN_SHUT_DOWN = [
    "sh",
    "-c",
    "trap 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 0' TERM; while :; do :; done",
]


def _cpu_counter_now(full_id: str) -> int | None:
    return _read_cpu_counter(_cpu_counter_files(full_id))


async def test_a_stop_answers_the_cpu_counter_at_the_containers_end(
    runtime: DockerRuntime, web_image: str, network: str, cleanup: list[str]
) -> None:
    # GIVEN a running container that burns CPU, and burns more while it shuts down after SIGTERM
    spec = _spec(web_image, network, command=BURN_THEN_SHUT_DOWN)
    cleanup.append(spec.name)
    container_id = await runtime.create_container(spec)
    await runtime.start_container(container_id)
    await asyncio.sleep(0.5)
    before = _cpu_counter_now(container_id)
    if before is None:
        pytest.skip("this process cannot see the host's cgroup files (the worker then meters from Docker's stats)")

    # WHEN it is stopped
    ended = await runtime.stop_container(container_id, timeout_seconds=10)

    # THEN the stop answers the counter at its end: past the last reading before it, by the shutdown's CPU too
    stopped = await runtime.container_state(container_id)
    assert stopped is not None and stopped["status"] == "exited" and stopped["exit_code"] == 0, stopped
    assert ended is not None and ended - before >= 50_000_000, (before, ended)
    assert _cpu_counter_now(container_id) is None  # the counter went with the container: only the stop saw it


async def test_a_missing_image_is_a_final_error(runtime: DockerRuntime, network: str, cleanup: list[str]) -> None:
    missing = f"berth-test/no-such-image:{secrets.token_hex(4)}"
    spec = _spec(missing, network)
    cleanup.append(spec.name)
    with pytest.raises(RuntimeFinal, match="is not on this host") as raised:
        await runtime.create_container(spec)
    assert missing in str(raised.value)
