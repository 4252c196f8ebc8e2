"""The container runtime port (what a host worker asks of Docker) and its Docker Engine adapter.

Every Docker call has a timeout, and every failure is classified: ``RuntimeRetryable`` (the daemon is
busy, down or timed out: try the job again later) or ``RuntimeFinal`` (Docker refused this input:
trying again will not help).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Protocol

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound

# Tenants' images live on hosts as <namespace>/<owner id>/<name>:<tag>, so no two tenants can collide.
PLATFORM_NAMESPACE = "berth"


def image_repository(owner_id: str, name: str) -> str:
    return f"{PLATFORM_NAMESPACE}/{owner_id}/{name}"


class RuntimeRetryable(Exception):
    """Docker failed in a way that may pass: the job should be retried."""


class RuntimeFinal(Exception):
    """Docker refused the request: retrying the same job cannot succeed."""


class ContainerRuntime(Protocol):
    async def load_image(self, chunks: Iterator[bytes]) -> str:
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


def _classify(exc: Exception, action: str) -> Exception:
    if (
        isinstance(exc, APIError)
        and exc.status_code is not None
        and 400 <= exc.status_code < 500
        and exc.status_code not in (408, 409, 429)
    ):
        return RuntimeFinal(f"Docker refused to {action}: {exc.explanation or exc}")
    return RuntimeRetryable(f"Docker could not {action} right now: {exc}")


class DockerRuntime:
    """ContainerRuntime over the Docker Engine API (docker SDK), blocking calls run in threads."""

    def __init__(self, base_url: str | None = None, timeout: float = 120.0) -> None:
        self._timeout = timeout
        self._client = (
            docker.DockerClient(base_url=base_url, timeout=int(timeout))
            if base_url
            else docker.from_env(timeout=int(timeout))
        )

    async def _run(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(call, *args, **kwargs), self._timeout + 5)
        except TimeoutError as exc:
            raise RuntimeRetryable(f"Docker did not {action} within {self._timeout:.0f}s") from exc
        except ImageNotFound:
            raise
        except (DockerException, requests.RequestException) as exc:
            raise _classify(exc, action) from exc

    async def load_image(self, chunks: Iterator[bytes]) -> str:
        def load() -> str:
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
