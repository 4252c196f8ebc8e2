"""The container runtime port (what a host worker asks of Docker) and its Docker Engine adapter.

Every Docker call has a timeout, and every failure is classified: ``RuntimeRetryable`` (the daemon is
busy, down or timed out: try the job again later) or ``RuntimeFinal`` (Docker refused this input:
trying again will not help).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig

from shared.container_stats import StatField

# Tenants' images live on hosts as <namespace>/<owner id>/<name>:<tag>, so no two tenants can collide.
PLATFORM_NAMESPACE = "berth"


# The two output streams of a container, read apart so each line is known to come from its stream.
LogStream = Literal["stdout", "stderr"]


def image_repository(owner_id: str, name: str) -> str:
    return f"{PLATFORM_NAMESPACE}/{owner_id}/{name}"


class RuntimeRetryable(Exception):
    """Docker failed in a way that may pass: the job should be retried."""


class RuntimeFinal(Exception):
    """Docker refused the request: retrying the same job cannot succeed."""


# Every customer container carries these labels, so a reconciler can tell whose it is and which record it
# belongs to (and remove the ones nobody tracks). The cluster label names the installation that made it: two
# installations sharing one Docker Engine never take each other's containers for orphans.
CONTAINER_ID_LABEL = "berth.container-id"
OWNER_LABEL = "berth.owner"
CLUSTER_LABEL = "berth.cluster"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the platform decides about one customer container; the image decides the rest."""

    name: str
    image: str
    network: str
    labels: Mapping[str, str]
    command: list[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # (container port, "tcp" | "udp"); each is published on host_bind, at host_ports[port] or a free port.
    container_ports: Sequence[tuple[int, str]] = ()
    host_bind: str = "127.0.0.1"
    host_ports: Mapping[int, int] = field(default_factory=dict)
    cpu: float = 0.5
    memory_mb: int = 256
    pids_limit: int = 256
    # Nameservers Docker's embedded resolver forwards to (the tenant network's internal DNS); none: the host's.
    dns: Sequence[str] = ()

    def __post_init__(self) -> None:
        missing = [key for key in (CONTAINER_ID_LABEL, OWNER_LABEL) if not self.labels.get(key)]
        if missing:
            raise ValueError(f"a container spec needs the labels {', '.join(missing)}")
        if self.cpu <= 0 or self.memory_mb <= 0 or self.pids_limit <= 0:
            raise ValueError("cpu, memory_mb and pids_limit must be positive")
        unknown = set(self.host_ports) - {port for port, _ in self.container_ports}
        if unknown:
            raise ValueError(f"host ports given for unexposed container ports {sorted(unknown)}")


class ContainerRuntime(Protocol):
    async def load_image(self, chunks: Iterable[bytes]) -> str:
        """Load a ``docker save`` stream; returns the loaded image id (``sha256:...``)."""
        ...

    async def tag_image(self, image_id: str, repository: str, tag: str) -> None:
        """Point ``repository:tag`` at ``image_id``."""
        ...

    async def image_id(self, reference: str) -> str | None:
        """The id ``reference`` points to, or None when there is no such image."""
        ...

    async def remove_image(self, reference: str, *, expected_id: str | None = None) -> bool:
        """Remove ``reference`` (only if it still points to ``expected_id``, when given)."""
        ...

    async def platform_image_references(self) -> list[str]:
        """Every ``repository:tag`` on this host under the platform namespace."""
        ...

    async def ensure_network(self, name: str) -> str:
        """Create the customer bridge network ``name`` unless it exists; returns its id."""
        ...

    async def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a hardened container from ``spec``; returns its id."""
        ...

    async def start_container(self, container_id: str) -> None:
        """Start a created or stopped container."""
        ...

    async def stop_container(self, container_id: str, timeout_seconds: int = 10) -> int | None:
        """Send SIGTERM, then SIGKILL after ``timeout_seconds``; the container's CPU counter (ns) at its end
        when the runtime could watch it, else None."""
        ...

    async def remove_container(self, container_id: str) -> bool:
        """Force-remove a container; False when it was already gone."""
        ...

    async def container_state(self, container_id: str) -> dict[str, Any] | None:
        """Status, exit code, start/finish times, OOM kill, health and IP address per network; None when there
        is no such container."""
        ...

    async def read_logs(
        self,
        container_id: str,
        stream: LogStream,
        consume: Callable[[Iterable[bytes]], None],
        *,
        since: float | None = None,
        tail: int | None = None,
    ) -> bool:
        """Feed ``consume`` (in a thread) one stream's log entries, raw and each led by Docker's RFC 3339 time,
        oldest first (the last ``tail``, after epoch second ``since``), stopping the read when it returns;
        False when there is no such container."""
        ...

    async def container_stats(self, container_id: str) -> dict[str, float]:
        """One sample of CPU, memory, network and block I/O use, by ``StatField``."""
        ...

    async def container_sizes(self, container_ids: Sequence[str]) -> dict[str, int]:
        """Bytes each container wrote to its own filesystem layer (Docker's SizeRw), by full container id;
        containers Docker does not know or did not size are missing."""
        ...

    async def list_labelled_containers(self, label_key: str, value: str | None = None) -> list[dict[str, Any]]:
        """Every container (running or not) carrying ``label_key`` (set to ``value``, when given): id, name,
        labels, status."""
        ...


def _classify(exc: Exception, action: str) -> Exception:
    if (
        isinstance(exc, APIError)
        and exc.status_code is not None
        and 400 <= exc.status_code < 500
        and exc.status_code not in (408, 409, 429)
    ):
        return RuntimeFinal(f"Docker refused to {action}: {exc.explanation or exc}")
    return RuntimeRetryable(f"Docker could not {action} right now: {exc}")


# Threads of a runtime's own for its blocking Docker calls: the process's default executor (cores + 4) also
# holds the job queues' long polls, and a stats reading holds its thread about two seconds (Docker takes two
# readings a second apart), so sharing one pool let a round of stats delay a container's stop by seconds
# (and the CPU it burnt meanwhile went unmetered). Stats have a pool of their own, as many as a round reads
# at once (worker.stats.STATS_CONCURRENCY); every other call has the other.
DOCKER_CALL_THREADS = 16
DOCKER_STATS_THREADS = 8


# A container's cumulative CPU counter under the host's cgroup mount: cgroup v1 (cgroupfs, and the
# combined cpu,cpuacct mount), then v2 (systemd's scope, cgroupfs). Visible when the worker runs on the host.
_CPU_COUNTER_FILES = (
    "/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat",
    "/sys/fs/cgroup/docker/{id}/cpu.stat",
)
CPU_WATCH_INTERVAL_SECONDS = 0.01
_FULL_ID = frozenset("0123456789abcdef")


def _cpu_counter_files(full_id: str) -> list[Path]:
    if len(full_id) != 64 or not set(full_id) <= _FULL_ID:
        return []
    return [Path(pattern.format(id=full_id)) for pattern in _CPU_COUNTER_FILES]


def _read_cpu_counter(files: list[Path]) -> int | None:
    """The counter in nanoseconds from the first file that exists; None when none does (any more)."""
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.name == "cpu.stat":
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) * 1000
            return None
        return int(text.strip())
    return None


class DockerRuntime:
    """ContainerRuntime over the Docker Engine API (docker SDK), blocking calls run in threads of its own."""

    def __init__(self, base_url: str | None = None, timeout: float = 120.0) -> None:
        self._timeout = timeout
        self._client = (
            docker.DockerClient(base_url=base_url, timeout=int(timeout))
            if base_url
            else docker.from_env(timeout=int(timeout))
        )
        self._calls = ThreadPoolExecutor(DOCKER_CALL_THREADS, thread_name_prefix="docker")
        self._stats = ThreadPoolExecutor(DOCKER_STATS_THREADS, thread_name_prefix="docker-stats")

    async def _run(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._run_within(self._timeout, action, call, *args, **kwargs)

    async def _run_within(
        self,
        seconds: float,
        action: str,
        call: Any,
        *args: Any,
        pool: ThreadPoolExecutor | None = None,
        **kwargs: Any,
    ) -> Any:
        # As asyncio.to_thread, with the caller's context (request ids in log lines), in the runtime's pool.
        bound = functools.partial(contextvars.copy_context().run, call, *args, **kwargs)
        running = asyncio.get_running_loop().run_in_executor(pool or self._calls, bound)
        try:
            return await asyncio.wait_for(running, seconds + 5)
        except TimeoutError as exc:
            raise RuntimeRetryable(f"Docker did not {action} within {seconds:.0f}s") from exc
        except ImageNotFound:
            raise
        except (DockerException, requests.RequestException) as exc:
            raise _classify(exc, action) from exc

    async def load_image(self, chunks: Iterable[bytes]) -> str:
        def load() -> str:
            # A sized iterable (``len()``) goes out with a Content-Length, each chunk as one write; anything
            # else is sent with chunked transfer encoding.
            output = self._client.api.load_image(chunks)
            messages = output if isinstance(output, list) else list(output)
            for message in messages:
                if isinstance(message, dict) and message.get("error"):
                    raise RuntimeFinal(f"Docker could not load the image: {message['error']}")
                stream = message.get("stream", "") if isinstance(message, dict) else ""
                if "Loaded image ID:" in stream:
                    return str(stream.split("Loaded image ID:", 1)[1].strip())
                if "Loaded image:" in stream:
                    return str(self._client.images.get(stream.split("Loaded image:", 1)[1].strip()).id)
            raise RuntimeFinal("Docker loaded nothing from the archive")

        result: str = await self._run("load the image", load)
        return result

    async def tag_image(self, image_id: str, repository: str, tag: str) -> None:
        await self._run("tag the image", self._client.api.tag, image_id, repository, tag, force=True)

    async def image_id(self, reference: str) -> str | None:
        try:
            image = await self._run("inspect the image", self._client.images.get, reference)
        except ImageNotFound:
            return None
        return str(image.id)

    async def remove_image(self, reference: str, *, expected_id: str | None = None) -> bool:
        current = await self.image_id(reference)
        if current is None or (expected_id is not None and current != expected_id):
            return False
        try:
            await self._run("remove the image", self._client.api.remove_image, reference, noprune=False)
        except ImageNotFound:
            return False
        except RuntimeFinal:
            return False  # in use by a container: keep it, the reconciler retries later
        return True

    async def platform_image_references(self) -> list[str]:
        images = await self._run("list images", self._client.images.list, name=f"{PLATFORM_NAMESPACE}/*/*")
        prefix = PLATFORM_NAMESPACE + "/"
        return sorted({tag for image in images for tag in image.tags if tag.startswith(prefix)})

    async def ensure_network(self, name: str) -> str:
        """Create the customer bridge network ``name`` unless it exists; returns its id.

        Customer containers get a user-defined bridge of their own (never Docker's default ``bridge`` or
        ``host``), not ``internal`` so they can reach the internet, with inter-container traffic on the bridge
        enabled so one customer's containers can talk to each other. The platform stays out of reach because
        its services (PostgreSQL, Redis, the gateway's upstreams...) listen on 127.0.0.1 only: a container's
        127.0.0.1 is its own network namespace, and what it can reach of the host (the bridge's gateway IP,
        the host's other addresses) arrives on the bridge interface, where nothing of the platform listens and
        the kernel refuses to route to loopback (route_localnet is off). Anything bound on 0.0.0.0 on the host
        IS reachable from here, so keep platform listeners on 127.0.0.1 (or firewall the bridges).
        """

        def ensure() -> str:
            for network in self._client.api.networks(names=[name]):
                if network.get("Name") == name:  # the names filter also matches substrings
                    return str(network["Id"])
            created = self._client.api.create_network(
                name,
                driver="bridge",
                internal=False,
                check_duplicate=True,
                options={"com.docker.network.bridge.enable_icc": "true"},
                labels={"berth.network": "customer"},
            )
            return str(created["Id"])

        result: str = await self._run("create the network", ensure)
        return result

    async def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a hardened container from ``spec``; returns its id."""
        api = self._client.api
        memory_bytes = spec.memory_mb * 1024 * 1024
        host_config = api.create_host_config(
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            privileged=False,
            pids_limit=spec.pids_limit,
            mem_limit=memory_bytes,
            memswap_limit=memory_bytes,  # equal to the memory limit: no swap
            nano_cpus=int(spec.cpu * 1_000_000_000),
            read_only=False,
            port_bindings={
                f"{port}/{protocol}": (spec.host_bind, spec.host_ports.get(port))  # None: Docker picks one
                for port, protocol in spec.container_ports
            },
            # The platform's reconciler decides about restarts (and counts them), not Docker.
            restart_policy={"Name": "no"},
            log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "10m", "max-file": "3"}),
            init=True,  # reaps zombies and forwards signals for images whose process does not
            network_mode=spec.network,
            dns=list(spec.dns) or None,
        )
        try:
            created = await self._run(
                "create the container",
                api.create_container,
                spec.image,
                command=spec.command,
                name=spec.name,
                environment=dict(spec.env),
                ports=[(port, protocol) for port, protocol in spec.container_ports],
                labels=dict(spec.labels),
                host_config=host_config,
                use_config_proxy=False,  # never hand the platform's own proxy settings to a customer
            )
        except ImageNotFound as exc:
            raise RuntimeFinal(f"Docker cannot create {spec.name}: image {spec.image!r} is not on this host") from exc
        return str(created["Id"])

    async def start_container(self, container_id: str) -> None:
        """Start a created or stopped container."""
        await self._run("start the container", self._client.api.start, container_id)

    async def stop_container(self, container_id: str, timeout_seconds: int = 10) -> int | None:
        """Send SIGTERM, then SIGKILL after ``timeout_seconds``; the container's CPU counter (ns) at its end,
        read from its cgroup every few milliseconds while it stops (metering's last figure: the counter goes
        with the container, and what it burns while Docker delivers the signal and it shuts down is its
        use too), or None when this process cannot see the host's cgroup files."""

        def stop() -> int | None:
            full_id = container_id
            if len(full_id) != 64:
                full_id = str(self._client.api.inspect_container(container_id)["Id"])
            files = _cpu_counter_files(full_id)
            last = _read_cpu_counter(files)
            done = threading.Event()

            def watch() -> None:
                nonlocal last
                while last is not None and not done.wait(CPU_WATCH_INTERVAL_SECONDS):
                    value = _read_cpu_counter(files)
                    if value is None:
                        return  # the cgroup went with the container: ``last`` is its end
                    last = max(last, value)

            watcher = threading.Thread(target=watch, name="docker-stop-cpu", daemon=True)
            watcher.start()
            try:
                self._client.api.stop(container_id, timeout=timeout_seconds)
            finally:
                done.set()
                watcher.join()
            return last

        ended: int | None = await self._run_within(self._timeout + timeout_seconds, "stop the container", stop)
        return ended

    async def remove_container(self, container_id: str) -> bool:
        """Force-remove a container; False when it was already gone."""

        def remove() -> bool:
            try:
                # v=True: an image's VOLUME lines create anonymous volumes; they go with the container.
                self._client.api.remove_container(container_id, force=True, v=True)
            except NotFound:
                return False
            return True

        removed: bool = await self._run("remove the container", remove)
        return removed

    async def container_state(self, container_id: str) -> dict[str, Any] | None:
        """Status, exit code, start/finish times, OOM kill, health and IP address per network; None when there
        is no such container."""

        def inspect() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self._client.api.inspect_container(container_id)
            except NotFound:
                return None
            return found

        details = await self._run("inspect the container", inspect)
        if details is None:
            return None
        state = details.get("State") or {}
        health = state.get("Health") or {}
        return {
            "status": state.get("Status"),
            "exit_code": state.get("ExitCode"),
            "started_at": _docker_time(state.get("StartedAt")),
            "finished_at": _docker_time(state.get("FinishedAt")),
            "oom_killed": bool(state.get("OOMKilled")),
            "health": health.get("Status"),
            # Empty while the container is not running (Docker gives it no address then).
            "ip_addresses": {
                name: network["IPAddress"]
                for name, network in ((details.get("NetworkSettings") or {}).get("Networks") or {}).items()
                if network and network.get("IPAddress")
            },
        }

    async def read_logs(
        self,
        container_id: str,
        stream: LogStream,
        consume: Callable[[Iterable[bytes]], None],
        *,
        since: float | None = None,
        tail: int | None = None,
    ) -> bool:
        """Feed ``consume`` (in a thread) one stream's log entries, raw and each led by Docker's RFC 3339 time,
        oldest first (the last ``tail``, after epoch second ``since``), stopping the read when it returns;
        False when there is no such container."""

        def read() -> bool:
            try:
                entries = self._client.api.logs(
                    container_id,
                    stdout=stream == "stdout",
                    stderr=stream == "stderr",
                    timestamps=True,
                    stream=True,
                    follow=False,
                    tail="all" if tail is None else tail,
                    since=since,
                )
                try:
                    consume(entries)  # one frame per log entry (a long line's 16 KiB pieces each count)
                finally:
                    entries.close()  # a consumer that stopped early leaves the rest of the log unread
            except NotFound:
                return False
            return True

        found: bool = await self._run("read the container's logs", read)
        return found

    async def container_stats(self, container_id: str) -> dict[str, float]:
        """One sample of CPU, memory, network and block I/O use, by ``StatField``."""
        # stream=False (not one_shot) lets Docker take two readings, so the CPU delta has something to compare.
        raw = await self._run_within(
            self._timeout,
            "read the container's stats",
            self._client.api.stats,
            container_id,
            stream=False,
            pool=self._stats,
        )
        return _stats_summary(raw)

    async def container_sizes(self, container_ids: Sequence[str]) -> dict[str, int]:
        """Bytes each container wrote to its own filesystem layer (Docker's SizeRw), by full container id;
        containers Docker does not know or did not size are missing."""
        if not container_ids:
            return {}
        # One listing with size=True sizes them all (the same SizeRw as inspecting each with size=True).
        found = await self._run_within(
            self._timeout,
            "size the containers",
            self._client.api.containers,
            size=True,
            filters={"id": list(container_ids)},
            pool=self._stats,
        )
        # The listing omits a zero SizeRw; SizeRootFs shows the container was sized.
        return {item["Id"]: int(item.get("SizeRw") or 0) for item in found if "SizeRw" in item or "SizeRootFs" in item}

    async def list_labelled_containers(self, label_key: str, value: str | None = None) -> list[dict[str, Any]]:
        """Every container (running or not) carrying ``label_key`` (set to ``value``, when given): id, name,
        labels, status."""
        label = label_key if value is None else f"{label_key}={value}"
        found = await self._run("list containers", self._client.api.containers, all=True, filters={"label": label})
        return [
            {
                "id": item["Id"],
                "name": (item.get("Names") or ["/"])[0].lstrip("/"),
                "labels": item.get("Labels") or {},
                "status": item.get("State"),
            }
            for item in found
        ]


def _docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 times carry nanoseconds (Python keeps microseconds); year 1 means never."""
    if not value or value.startswith("0001-01-01"):
        return None
    whole, rest = value[:19], value[19:]
    fraction = ""
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789")) - 1
        fraction, rest = "." + rest[1 : 1 + digits][:6].ljust(6, "0"), rest[1 + digits :]
    zone = "+00:00" if rest in ("", "Z") else rest
    return datetime.fromisoformat(whole + fraction + zone).astimezone(UTC)


def _stats_summary(raw: dict[str, Any]) -> dict[str, float]:
    cpu, precpu = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (precpu.get("cpu_usage") or {}).get(
        "total_usage", 0
    )
    system_delta = cpu.get("system_cpu_usage", 0) - precpu.get("system_cpu_usage", 0)
    online_cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_percent = cpu_delta / system_delta * online_cpus * 100.0 if cpu_delta > 0 and system_delta > 0 else 0.0

    memory = raw.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    usage = memory.get("usage", 0)
    # Page cache the kernel can drop is not the container's own memory: as `docker stats` does, subtract the
    # inactive file cache (cgroup v1: total_inactive_file, v2: inactive_file), else the whole cache.
    cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
    memory_bytes = usage - cache if 0 <= cache < usage else usage

    networks = (raw.get("networks") or {}).values()
    blkio = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return {
        StatField.CPU_PERCENT: round(cpu_percent, 3),
        StatField.CPU_USAGE_NS: (cpu.get("cpu_usage") or {}).get("total_usage", 0),
        StatField.MEMORY_BYTES: memory_bytes,
        StatField.MEMORY_LIMIT_BYTES: memory.get("limit", 0),
        StatField.NET_RX_BYTES: sum(network.get("rx_bytes", 0) for network in networks),
        StatField.NET_TX_BYTES: sum(network.get("tx_bytes", 0) for network in networks),
        StatField.BLOCK_READ_BYTES: sum(
            entry.get("value", 0) for entry in blkio if entry.get("op", "").lower() == "read"
        ),
        StatField.BLOCK_WRITE_BYTES: sum(
            entry.get("value", 0) for entry in blkio if entry.get("op", "").lower() == "write"
        ),
    }
