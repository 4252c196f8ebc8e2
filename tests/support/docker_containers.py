"""Docker containers the tests look at or clean up, found by one of the worker's labels.

Docker lists a container and then inspects it; one removed in between (the worker and a test both remove
containers) would fail the list, so every list here skips it (``ignore_removed``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import docker


def labelled(client: docker.DockerClient, label: str, value: object, **options: Any) -> list[Any]:
    """Every container (stopped ones too) whose ``label`` is ``value``; ``options`` go to Docker's list."""
    return list(client.containers.list(ignore_removed=True, all=True, filters={"label": f"{label}={value}"}, **options))


def remove_labelled(client: docker.DockerClient, label: str, value: object, *, volumes: bool = False) -> None:
    """Remove, by force, every container whose ``label`` is ``value``: a test's clean-up, whatever it left."""
    for container in labelled(client, label, value):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=volumes)
