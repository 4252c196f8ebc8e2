"""The local AWS: S3 and SQS clients for the stack, the resources the platform expects, and moto to serve them.

``ensure_aws_resources`` is idempotent against any endpoint (moto, LocalStack, AWS): it creates the images
bucket with the CORS rule browsers upload through, the jobs dead-letter queue, and the jobs queue with its
redrive policy, and brings an existing jobs queue's policy in line rather than failing. Without any AWS
credentials the dummy pair ``test``/``test`` is used, which moto and LocalStack accept. ``serve_local_aws``
runs moto in the foreground; ``berth local up`` runs it as a managed process (``berth local aws``).
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

from cli.local_stack.settings import LocalStackSettings
from shared.errors import DependencyError
from shared.jobs import JOBS_MAX_RECEIVE_COUNT

DUMMY_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def aws_client(settings: LocalStackSettings, service: str, endpoint: str | None, *, attempts: int = 3) -> Any:
    """A boto3 client for ``service`` at ``endpoint`` (None: AWS's own), with short timeouts and path-style S3."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=settings.aws_region)
    credentials: dict[str, str] = {}
    if session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    config = Config(
        connect_timeout=3,
        read_timeout=10,
        retries={"max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return session.client(service, endpoint_url=endpoint, config=config, **credentials)


def no_aws_credentials() -> bool:
    """True when boto3 finds no credentials anywhere (environment, profile, instance role)."""
    import boto3

    return boto3.session.Session().get_credentials() is None


def _client_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def ensure_aws_resources(settings: LocalStackSettings, endpoint: str | None) -> dict[str, str]:
    """Create the images bucket, the jobs dead-letter queue and the jobs queue (idempotent)."""
    from botocore.exceptions import ClientError

    s3 = aws_client(settings, "s3", endpoint)
    bucket_args: dict[str, Any] = {"Bucket": settings.images_bucket}
    if settings.aws_region != "us-east-1":
        bucket_args["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws_region}
    try:
        s3.create_bucket(**bucket_args)
    except ClientError as exc:
        if _client_error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
    # Browsers (the UI) upload archives straight to the bucket, as template.yaml allows on AWS.
    port = settings.gateway_port
    s3.put_bucket_cors(
        Bucket=settings.images_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedMethods": ["POST", "PUT"],
                    "AllowedOrigins": sorted(
                        {settings.gateway_url, f"http://localhost:{port}", f"https://localhost:{port}"}
                    ),
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 600,
                }
            ]
        },
    )

    sqs = aws_client(settings, "sqs", endpoint)
    dead_letter_url = sqs.create_queue(QueueName=settings.jobs_dead_letter_queue)["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": JOBS_MAX_RECEIVE_COUNT})
    }
    try:
        jobs_url = sqs.create_queue(QueueName=settings.jobs_queue, Attributes=redrive)["QueueUrl"]
    except ClientError as exc:
        # The queue exists with other attributes (an older policy): bring it in line.
        if "QueueNameExists" not in _client_error_code(exc) and "QueueAlreadyExists" not in _client_error_code(exc):
            raise
        jobs_url = sqs.get_queue_url(QueueName=settings.jobs_queue)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=jobs_url, Attributes=redrive)
    return {"bucket": settings.images_bucket, "jobs_queue": jobs_url, "dead_letter_queue": dead_letter_url}


def serve_local_aws(host: str, port: int) -> None:
    """Serve S3 and SQS (moto) on ``host:port`` in the foreground until SIGTERM or Ctrl-C."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise DependencyError("moto is not installed; run: pip install -e '.[local]'") from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    print(f"local AWS (moto: S3, SQS) on http://{host}:{port}; SIGTERM or Ctrl-C stops it", flush=True)
    while not stop.wait(1):
        pass
    server.stop()
