"""Builds ``docker save`` archives in pure Python, well-formed or deliberately malicious, for tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    """One member of a layer (or of the outer archive)."""

    name: str
    data: bytes | None = None
    mode: int = 0o644
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None  # a declared size that differs from len(data): for lying headers

    @classmethod
    def dir(cls, name: str, mode: int = 0o755) -> Entry:
        return cls(name, None, mode, tarfile.DIRTYPE)

    @classmethod
    def symlink(cls, name: str, target: str) -> Entry:
        return cls(name, None, 0o777, tarfile.SYMTYPE, target)

    @classmethod
    def hardlink(cls, name: str, target: str) -> Entry:
        return cls(name, None, 0o644, tarfile.LNKTYPE, target)

    @classmethod
    def device(cls, name: str) -> Entry:
        return cls(name, None, 0o600, tarfile.CHRTYPE)


def tar_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type, info.mode, info.linkname, info.mtime = entry.type, entry.mode, entry.linkname, 1
            if entry.type == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            data = entry.data or b""
            info.size = len(data) if entry.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if entry.type == tarfile.REGTYPE else None)
    return buffer.getvalue()


def image_config(
    *,
    env: list[str] | None = None,
    user: str = "",
    ports: list[str] | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    diff_ids: list[str] | None = None,
) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": env or ["PATH=/bin"],
            "User": user,
            "WorkingDir": "/srv",
            "ExposedPorts": {p: {} for p in (ports or [])},
            "Entrypoint": entrypoint,
            "Cmd": cmd or ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids or []},
    }


def build_archive(
    path: Path,
    layers: list[list[Entry]],
    *,
    config: dict | None = None,
    repo_tags: list[str] | None = None,
    compress_layers: bool = False,
    extra: list[Entry] | None = None,
    manifest: object = None,
) -> Path:
    """Write a legacy-layout ``docker save`` archive with ``layers`` to ``path``."""
    layer_blobs = [tar_bytes(layer) for layer in layers]
    diff_ids = ["sha256:" + hashlib.sha256(blob).hexdigest() for blob in layer_blobs]
    if compress_layers:
        layer_blobs = [gzip.compress(blob, compresslevel=9) for blob in layer_blobs]
    config_doc = config or image_config()
    config_doc.setdefault("rootfs", {})["diff_ids"] = diff_ids
    config_bytes = json.dumps(config_doc).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    members: list[Entry] = []
    layer_paths = []
    for blob in layer_blobs:
        layer_id = hashlib.sha256(blob).hexdigest()
        members += [Entry.dir(layer_id), Entry(f"{layer_id}/layer.tar", blob), Entry(f"{layer_id}/VERSION", b"1.0")]
        layer_paths.append(f"{layer_id}/layer.tar")
    members.append(Entry(config_name, config_bytes))
    if manifest is None:
        manifest = [
            {
                "Config": config_name,
                "RepoTags": repo_tags if repo_tags is not None else ["demo:1"],
                "Layers": layer_paths,
            }
        ]
    if manifest is not False:
        members.append(Entry("manifest.json", json.dumps(manifest).encode()))
    members += extra or []
    path.write_bytes(tar_bytes(members))
    return path
