"""The host worker's settings: the functions' settings plus how it polls, works and reaches Docker."""

from __future__ import annotations

import ipaddress
import os
import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator

from shared.config import PROJECT_ROOT, FunctionSettings


class WorkerSettings(FunctionSettings):
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # Long-poll wait per receive; short in tests (burst mode) so the worker notices an empty queue fast.
    worker_wait_seconds: int = Field(default=10, ge=0, le=20)
    # How long a received job stays invisible to other workers; extended while the job runs.
    worker_visibility_seconds: int = Field(default=60, ge=10, le=43200)
    # After this many deliveries a job that keeps failing with a retryable error fails for good.
    worker_max_tries: int = Field(default=3, ge=1, le=20)
    worker_job_timeout_seconds: int = Field(default=900, ge=10)
    # How often the worker removes its host's copies of deleted images that no delete job reached.
    worker_gc_interval_seconds: float = Field(default=60.0, gt=0)
    # How often the worker samples its host's running containers' resource use, and how long samples are kept.
    worker_stats_interval_seconds: float = Field(default=5.0, gt=0)
    stats_retention_hours: float = Field(default=24.0, gt=0)
    # How often the reconciler compares what tenants want with what Docker runs (restarts, health,
    # orphans, lost jobs), and how long a labelled container nobody owns may live before it is removed.
    worker_reconcile_interval_seconds: float = Field(default=5.0, gt=0)
    worker_orphan_grace_seconds: float = Field(default=60.0, ge=0)
    # Restart backoff of crashed containers: doubles from the base to the cap; a container that ran for
    # the reset time without crashing starts again from the base.
    worker_restart_backoff_base_seconds: float = Field(default=1.0, gt=0)
    worker_restart_backoff_max_seconds: float = Field(default=60.0, gt=0)
    worker_restart_backoff_reset_seconds: float = Field(default=120.0, gt=0)
    # How often the worker ships its containers' new log lines to PostgreSQL, and how long they are kept.
    worker_log_ship_interval_seconds: float = Field(default=1.0, gt=0)
    log_retention_hours: float = Field(default=72.0, gt=0)
    # How long the lines of request trails (shared.request_trail) are kept.
    request_trail_retention_hours: float = Field(default=72.0, gt=0)
    # How often the worker writes its containers' instances and health to the service registry, and how long
    # an instance whose worker stopped reporting stays (critical) before it is removed.
    worker_registry_interval_seconds: float = Field(default=0.5, gt=0)
    worker_registry_deregister_after_seconds: float = Field(default=60.0, ge=1)
    # After a container leaves the registry and before it is stopped: time for lb-runtime to stop routing
    # new requests to it (it watches the registry) while requests in flight finish.
    worker_stop_drain_seconds: float = Field(default=1.5, ge=0)
    # How often the rollout driver steps every service toward its target release and replica count.
    worker_rollout_interval_seconds: float = Field(default=0.5, gt=0)
    # Prometheus metrics of the worker (0: none); also where it is registered in internal-services.
    worker_admin_address: str = "127.0.0.1"
    worker_admin_port: int = Field(default=9181, ge=0, le=65535)
    # Names this installation's containers (a label), so two installations sharing one Docker Engine
    # never take each other's containers for orphans.
    cluster_id: str = Field(default="berth", min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_.-]+$")
    worker_work_dir: Path = PROJECT_ROOT / ".berth" / "worker"
    docker_host: str | None = Field(default=None, validation_alias="DOCKER_HOST")
    docker_timeout_seconds: float = Field(default=120.0, gt=0)
    # The host this worker runs on: a stable id, where its containers' published ports are reachable and
    # how it stays known to be alive (port range and liveness limit: shared.config.HostSettings).
    host_id: str = Field(default_factory=socket.gethostname, min_length=1)
    host_address: str = "127.0.0.1"
    # The region the host belongs to (BERTH_REGION): stored on the host row and in each registered instance's
    # meta, where lb-runtime reads it (lb_runtime.regions); a lost host's containers are re-placed in it first.
    region: str = Field(default="local", pattern=r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
    # Tenant networks (worker.tenant_networks): each tenant's containers on this host get a bridge of their
    # own with a /tenant_subnet_prefix block of this pool; the worker closes the host to them with iptables
    # (worker.firewall) and serves the internal DNS on each network's gateway, port worker_dns_port.
    # worker_dns_upstream: where tenants' other names go: "resolv.conf" (the host's nameservers), "none"
    # (refused) or comma-separated addresses.
    tenant_subnet_pool: str = "10.213.0.0/16"
    tenant_subnet_prefix: int = Field(default=26, ge=16, le=29)
    worker_firewall: bool = True
    worker_dns_port: int = Field(default=53, ge=0, le=65535)
    worker_dns_upstream: str = "resolv.conf"
    host_heartbeat_seconds: float = Field(default=5.0, gt=0)
    # Metering (worker.metering): windows of this many seconds (a divisor of an hour), each metered once this
    # grace has passed since its end (longer than the stats interval, so late samples land in their window),
    # checked every metering_interval_seconds; ended billing periods are finalized every
    # billing_finalize_interval_seconds.
    metering_window_seconds: int = Field(default=60, ge=1, le=3600)
    metering_grace_seconds: float = Field(default=30.0, ge=0)
    metering_interval_seconds: float = Field(default=10.0, gt=0)
    billing_finalize_interval_seconds: float = Field(default=300.0, gt=0)
    # Traffic history (worker.traffic_recorder): how often lb-runtime's figures (BERTH_LB_ADMIN_URL) are read
    # into the listeners' history; off where no lb-runtime runs.
    worker_traffic_recording: bool = True
    worker_traffic_interval_seconds: float = Field(default=10.0, gt=0, le=60)
    # Alerts (worker.alerts): how often rules are evaluated and due webhook deliveries sent; a delivery is
    # retried with doubling backoff from the base to the cap, and dead-lettered after max attempts.
    worker_alert_interval_seconds: float = Field(default=5.0, gt=0)
    worker_alert_delivery_interval_seconds: float = Field(default=1.0, gt=0)
    alert_delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    alert_delivery_backoff_base_seconds: float = Field(default=2.0, gt=0)
    alert_delivery_backoff_max_seconds: float = Field(default=600.0, gt=0)
    alert_delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    host_cpu_capacity: float = Field(default_factory=lambda: float(os.cpu_count() or 1), gt=0)
    host_memory_capacity_mb: int = Field(
        default_factory=lambda: os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024**2, ge=1
    )

    @model_validator(mode="after")
    def _check_host_settings(self) -> WorkerSettings:
        if self.host_port_range_start > self.host_port_range_end:
            raise ValueError("BERTH_HOST_PORT_RANGE_START must not be above BERTH_HOST_PORT_RANGE_END")
        try:
            pool = ipaddress.IPv4Network(self.tenant_subnet_pool)
        except ValueError as exc:
            raise ValueError(f"BERTH_TENANT_SUBNET_POOL is not an IPv4 network: {exc}") from exc
        if self.tenant_subnet_prefix < pool.prefixlen:
            raise ValueError("BERTH_TENANT_SUBNET_PREFIX must not be shorter than BERTH_TENANT_SUBNET_POOL's")
        if 3600 % self.metering_window_seconds:
            raise ValueError("BERTH_METERING_WINDOW_SECONDS must divide an hour (3600) evenly")
        if self.host_down_after_seconds <= self.host_heartbeat_seconds:
            raise ValueError("BERTH_HOST_DOWN_AFTER_SECONDS must be longer than BERTH_HOST_HEARTBEAT_SECONDS")
        return self


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
