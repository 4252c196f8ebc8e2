"""The host worker's settings: the functions' settings plus how it polls, works and reaches Docker."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

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
    worker_work_dir: Path = PROJECT_ROOT / ".berth" / "worker"
    docker_host: str | None = Field(default=None, validation_alias="DOCKER_HOST")
    docker_timeout_seconds: float = Field(default=120.0, gt=0)


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
