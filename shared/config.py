"""Settings for every Berth process, read from the environment and validated at start.

Each process composes the pieces it needs into one model (``FunctionSettings`` here; the gateway's,
the worker's and lb-runtime's beside them) so a misconfiguration fails at cold start, not on the first request.
Every variable is documented in the README's configuration table.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEVELOPMENT_SECRET = "berth-development-secret-change-me"  # noqa: S105 - refused outside development


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BERTH_", extra="ignore", frozen=True)


class CoreSettings(_Base):
    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    database_url: str = "postgresql://berth:berth@127.0.0.1:5432/berth"
    database_pool_max: int = Field(default=10, ge=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key starts with this, so tests and several stacks can share one server.
    redis_prefix: str = "berth:"


class AwsSettings(_Base):
    """Where the S3 and SQS APIs live: moto locally, LocalStack or AWS by changing the endpoint."""

    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "BERTH_AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(default="us-east-1", validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION"))
    # Where `berth local` runs moto, and so the endpoint outside production when none is set.
    local_aws_host: str = "127.0.0.1"
    local_aws_port: int = Field(default=4566, ge=1, le=65535)
    images_bucket: str = "berth-images"
    jobs_queue: str = "berth-jobs"
    jobs_dead_letter_queue: str = "berth-jobs-dlq"

    @property
    def local_aws_url(self) -> str:
        return f"http://{self.local_aws_host}:{self.local_aws_port}"


class ImageSettings(_Base):
    # Storage refuses bigger uploads (presigned POST condition); `complete` re-checks on every backend.
    image_max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    image_upload_expires_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    image_max_entries: int = Field(default=200_000, ge=10)
    image_max_unpacked_bytes: int = Field(default=8 * 1024**3, ge=1024)
    image_max_compression_ratio: int = Field(default=200, ge=2)


class HostSettings(_Base):
    """What the scheduler (a function) and the host workers agree on: host ports and host liveness."""

    host_port_range_start: int = Field(default=30000, ge=1, le=65535)
    host_port_range_end: int = Field(default=32767, ge=1, le=65535)
    # A host silent for longer is marked down by any worker (and never scheduled on); several heartbeats long.
    host_down_after_seconds: float = Field(default=30.0, gt=0)

    @property
    def host_port_range(self) -> range:
        """The host ports containers may be given, both ends included in the settings."""
        return range(self.host_port_range_start, self.host_port_range_end + 1)


class LoadBalancerSettings(_Base):
    """Where customer traffic enters: listener ports (one range for the whole lb-runtime fleet), the address
    lb-runtime binds them on (127.0.0.1 in development), and its admin API (metrics and per-listener stats)."""

    lb_port_range_start: int = Field(default=20000, ge=1, le=65535)
    lb_port_range_end: int = Field(default=29999, ge=1, le=65535)
    lb_bind_address: str = "127.0.0.1"
    lb_admin_url: str = "http://127.0.0.1:9180"
    # The DNS resolver asked for host names' TXT proofs of ownership: "host", "host:port" or "[v6 address]:port"
    # (port 53 unless given); unset: the first nameserver of /etc/resolv.conf. The tests run a resolver of their own.
    hostname_proof_resolver: str | None = Field(
        default=None, pattern=r"^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+)(:[0-9]{1,5})?$"
    )

    @property
    def lb_port_range(self) -> range:
        return range(self.lb_port_range_start, self.lb_port_range_end + 1)

    @property
    def hostname_proof_resolver_address(self) -> tuple[str, int] | None:
        """``hostname_proof_resolver`` as (host, port); None when unset (the system's resolver)."""
        if self.hostname_proof_resolver is None:
            return None
        return _host_and_port(self.hostname_proof_resolver, 53)

    @field_validator("hostname_proof_resolver")
    @classmethod
    def _resolver_port_in_range(cls, value: str | None) -> str | None:
        if value is not None and not 0 < _host_and_port(value, 53)[1] <= 65535:
            raise ValueError("BERTH_HOSTNAME_PROOF_RESOLVER: the port must be 1-65535")
        return value


def _host_and_port(text: str, default_port: int) -> tuple[str, int]:
    """("host", port) of "host", "host:port", "[v6]" or "[v6]:port" (already matched by the field's pattern)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    return host, int(port) if port else default_port


class AuthSettings(_Base):
    jwt_issuer: str = "http://127.0.0.1:8080/api/auth"
    jwt_audience: str = "berth-api"
    # Where functions served on their own (not behind the gateway) fetch the auth function's keys.
    jwks_url: str = "http://127.0.0.1:8080/api/auth/.well-known/jwks.json"
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=300)
    # Encrypts signing keys at rest; a real deployment must set its own.
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    password_min_length: int = Field(default=10, ge=8)
    signin_max_failures: int = Field(default=5, ge=1)
    signin_failure_window_seconds: int = Field(default=900, ge=1)
    # How long a function trusts its cached copy of the signing keys before re-reading them.
    key_cache_seconds: int = Field(default=30, ge=0)
    # How long after a rotation the new key starts signing (it is published at once). Longer than the
    # gateway's JWKS cache TTL (300 s), so every verifier has the key before any token names it.
    key_activation_delay_seconds: int = Field(default=330, ge=0)


class RateLimitSettings(_Base):
    """The functions' own enforcement of the document's ``x-berth-throttling`` (per IP, per user), for a
    deployment where nothing in front counts them (API Gateway). A request the local gateway already
    counted is not counted again (``shared.throttling``)."""

    rate_limits_enabled: bool = True
    # Override every route's values when set, as the gateway's BERTH_GATEWAY_RATE_LIMIT_* do.
    rate_limit_per_ip: int | None = Field(default=None, ge=1)
    rate_limit_per_user: int | None = Field(default=None, ge=1)
    rate_limit_window_seconds: int | None = Field(default=None, ge=1)
    # The API document the limits come from (packaged beside shared/ in a Lambda build).
    api_document: Path = PROJECT_ROOT / "gateway-config" / "openapi.yaml"


class AccountSettings(_Base):
    # How long a change-of-email confirmation token stays valid.
    email_change_ttl_seconds: int = Field(default=24 * 3600, ge=60)


class AlertSettings(_Base):
    """Alert webhooks (shared.webhooks): the alerts function checks a URL on create, the worker before sending."""

    # Off in production: webhook URLs resolving to loopback, link-local or private addresses are refused.
    # The local stack and the tests turn it on (their receivers listen on 127.0.0.1).
    alerts_allow_private_webhooks: bool = False


class FunctionSettings(
    CoreSettings,
    AwsSettings,
    AuthSettings,
    ImageSettings,
    HostSettings,
    LoadBalancerSettings,
    RateLimitSettings,
    AccountSettings,
    AlertSettings,
):
    """What every function needs at cold start."""

    @property
    def aws_endpoint(self) -> str | None:
        """The S3/SQS endpoint: an explicit one (LocalStack, AWS), else AWS's own in production, else the
        local moto that `berth local` runs."""
        if self.aws_endpoint_url:
            return self.aws_endpoint_url
        if self.environment is Environment.PRODUCTION:
            return None
        return self.local_aws_url

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> FunctionSettings:
        if self.environment is Environment.PRODUCTION and (self.secret_key.get_secret_value() == DEVELOPMENT_SECRET):
            raise ValueError("BERTH_SECRET_KEY must be set to a real secret outside development")
        return self


@lru_cache
def get_function_settings() -> FunctionSettings:
    return FunctionSettings()
