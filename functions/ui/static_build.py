"""One build of the dashboard: every file under the static folder, read once, addressed by a content hash.

``load_static_build`` reads the folder at cold start and never touches the disk again: requests look
files up in an in-memory table keyed by their relative path, so no request path, however it is encoded,
can reach a file outside the folder. The build id is a hash over every file's path and content, so an
asset URL (``/ui/assets/<build>/app.js``) names exactly one version of a file and may be cached forever.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType

INDEX_FILE = "index.html"
ASSETS_PLACEHOLDER = "{{ASSETS}}"
BUILD_ID_LENGTH = 12
# Compressing tiny files saves nothing once the headers are counted.
GZIP_MIN_BYTES = 256

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
}
_COMPRESSIBLE = ("text/", "image/svg+xml", "application/json", "application/manifest+json")


class StaticBuildError(RuntimeError):
    """The static folder cannot make a build (missing, or without its index page)."""


@dataclass(frozen=True)
class Asset:
    """One file of the build: its bytes, and the same gzip-compressed when that is smaller."""

    path: str
    content_type: str
    body: bytes
    gzip_body: bytes | None
    etag: str


@dataclass(frozen=True)
class StaticBuild:
    build_id: str
    assets: Mapping[str, Asset]
    index: Asset

    @property
    def assets_url(self) -> str:
        """Where this build's assets are served (what ``{{ASSETS}}`` becomes in the index page)."""
        return f"/ui/assets/{self.build_id}"

    def asset(self, build_id: str, path: str) -> Asset | None:
        """The asset at ``path`` of build ``build_id``; None for any other build or an unknown path."""
        if build_id != self.build_id:
            return None
        return self.assets.get(path)


def content_type_for(path: str) -> str:
    return _CONTENT_TYPES.get(PurePosixPath(path).suffix.lower(), "application/octet-stream")


def _is_compressible(content_type: str) -> bool:
    return content_type.startswith(_COMPRESSIBLE)


def _make_asset(path: str, body: bytes) -> Asset:
    content_type = content_type_for(path)
    gzip_body: bytes | None = None
    if _is_compressible(content_type) and len(body) >= GZIP_MIN_BYTES:
        # mtime=0: the same file compresses to the same bytes in every cold start.
        compressed = gzip.compress(body, compresslevel=9, mtime=0)
        gzip_body = compressed if len(compressed) < len(body) else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(path, content_type, body, gzip_body, etag)


def _read_files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its relative POSIX path, skipping dot files and anything that
    resolves outside ``root`` (a symlink pointing elsewhere is not part of the build)."""
    resolved_root = root.resolve()
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if not path.is_file() or not path.resolve().is_relative_to(resolved_root):
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


def compute_build_id(files: Mapping[str, bytes]) -> str:
    """The first 12 hex digits of a SHA-256 over every path and content, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        encoded = path.encode("utf-8")
        content = files[path]
        # Lengths first, so no two different sets of files hash the same bytes.
        digest.update(len(encoded).to_bytes(8, "big") + encoded + len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.hexdigest()[:BUILD_ID_LENGTH]


def load_static_build(root: Path) -> StaticBuild:
    """Read ``root`` into a build: its assets by path, and the index page with its placeholder filled in."""
    if not root.is_dir():
        raise StaticBuildError(f"The UI's static folder {root} does not exist (BERTH_UI_STATIC_DIR).")
    files = _read_files(root)
    if INDEX_FILE not in files:
        raise StaticBuildError(f"The UI's static folder {root} has no {INDEX_FILE}.")
    build_id = compute_build_id(files)
    assets = {path: _make_asset(path, body) for path, body in files.items() if path != INDEX_FILE}
    page = files[INDEX_FILE].replace(ASSETS_PLACEHOLDER.encode(), f"/ui/assets/{build_id}".encode())
    return StaticBuild(build_id, MappingProxyType(assets), _make_asset(INDEX_FILE, page))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip`` or ``*``, with a non-zero q)."""
    if not accept_encoding:
        return False
    explicit: bool | None = None
    wildcard = False
    for item in accept_encoding.split(","):
        coding, _, parameters = item.strip().partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            explicit = quality > 0
        elif coding == "*":
            wildcard = quality > 0
    return explicit if explicit is not None else wildcard
