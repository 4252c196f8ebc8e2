"""The images function's request and response bodies (the public contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Docker's own grammar for repository path components and tags, lower-case names only.
NAME_PATTERN = r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


class CreateImage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=NAME_PATTERN,
        description="lower-case letters, digits and separators (. _ -), like a Docker name",
    )
    tag: str = Field(default="latest", pattern=TAG_PATTERN)


class Upload(BaseModel):
    url: str
    fields: dict[str, str]
    max_bytes: int
    expires_in: int


class Progress(BaseModel):
    stage: str
    percent: int


class Finding(BaseModel):
    kind: str
    severity: str
    path: str
    detail: str


class ScanReport(BaseModel):
    findings: list[Finding]


class Optimization(BaseModel):
    wasted_bytes: int
    efficiency: float
    largest_files: list[dict[str, Any]]
    layers: list[dict[str, Any]] = []


class Image(BaseModel):
    id: str
    name: str
    tag: str
    status: str
    reason: str | None = None
    progress: Progress | None = None
    upload_bytes: int | None = None
    size_bytes: int | None = None
    layers: list[dict[str, Any]] | None = None
    architecture: str | None = None
    os: str | None = None
    exposed_ports: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    env_names: list[str] | None = None
    scan: ScanReport | None = None
    optimization: Optimization | None = None
    created_at: datetime
    updated_at: datetime


class CreatedImage(Image):
    upload: Upload


class ImagePage(BaseModel):
    items: list[Image]
    next_cursor: str | None


class Accepted(BaseModel):
    id: str
    status: str
