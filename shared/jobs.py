"""The job queue port (functions -> host workers) with its SQS adapter.

Delivery is at least once: a worker deletes a message only when the job succeeded or failed for good;
anything else comes back after the visibility timeout, and after ``maxReceiveCount`` deliveries SQS moves
it to the dead-letter queue. Every job carries an id and its handler is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from shared.config import FunctionSettings
from shared.errors import DependencyError
from shared.storage import aws_client


@dataclass(frozen=True)
class Job:
    kind: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def encode(self) -> str:
        return json.dumps({"id": self.id, "kind": self.kind, "payload": self.payload})

    @classmethod
    def decode(cls, body: str) -> Job:
        """The job in a message body; ValueError when the body is not one."""
        data = json.loads(body)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("kind"), str)
            or not isinstance(data.get("payload"), dict)
        ):
            raise ValueError("message is not a Berth job")
        return cls(kind=data["kind"], payload=data["payload"], id=str(data.get("id") or uuid.uuid4().hex))


@dataclass(frozen=True)
class ReceivedJob:
    job: Job | None  # None when the body could not be decoded (a poisoned message)
    receipt: str
    receive_count: int
    raw_body: str


class JobQueue(Protocol):
    async def send(self, job: Job) -> None:
        """Enqueue ``job``."""
        ...

    async def receive(self, max_jobs: int, wait_seconds: int) -> list[ReceivedJob]:
        """Long-poll for up to ``max_jobs`` jobs."""
        ...

    async def delete(self, received: ReceivedJob) -> None:
        """Acknowledge ``received``: it will not be delivered again."""
        ...

    async def extend(self, received: ReceivedJob, seconds: int) -> None:
        """Keep ``received`` invisible to other workers for ``seconds`` more."""
        ...


class SqsJobQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._sqs, method), QueueUrl=self._url, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyError("The job queue is unavailable; try again shortly.") from exc

    async def send(self, job: Job) -> None:
        await self._call("send_message", MessageBody=job.encode())

    async def receive(self, max_jobs: int, wait_seconds: int) -> list[ReceivedJob]:
        answer = await self._call(
            "receive_message",
            MaxNumberOfMessages=max(1, min(max_jobs, 10)),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        received = []
        for message in answer.get("Messages", []):
            body = message.get("Body", "")
            try:
                job: Job | None = Job.decode(body)
            except ValueError:
                job = None
            count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            received.append(ReceivedJob(job, message["ReceiptHandle"], count, body))
        return received

    async def delete(self, received: ReceivedJob) -> None:
        await self._call("delete_message", ReceiptHandle=received.receipt)

    async def extend(self, received: ReceivedJob, seconds: int) -> None:
        await self._call("change_message_visibility", ReceiptHandle=received.receipt, VisibilityTimeout=seconds)


@lru_cache
def _queue_url(endpoint: str | None, region: str, name: str, settings: FunctionSettings) -> str:
    answer = aws_client("sqs", settings).get_queue_url(QueueName=name)
    return str(answer["QueueUrl"])


def get_job_queue(settings: FunctionSettings, name: str | None = None) -> SqsJobQueue:
    queue = name or settings.jobs_queue
    try:
        url = _queue_url(settings.aws_endpoint, settings.aws_region, queue, settings)
    except (ClientError, BotoCoreError) as exc:
        raise DependencyError(f"The job queue '{queue}' is unavailable; try again shortly.") from exc
    return SqsJobQueue(aws_client("sqs", settings), url)
