"""Validate, inspect, scan and profile an uploaded ``docker save`` archive before Docker ever sees it.

Everything is read in one streaming pass per layer with bounded memory: layer tars are never unpacked
to disk, and only small files (``ArchiveLimits.secret_scan_max_file_bytes``) are read into memory to look
for secrets. Both archive layouts that ``docker save`` writes are understood: the legacy one
(``<id>/layer.tar``) and the OCI one (``blobs/sha256/<digest>``); both carry ``manifest.json``.

An archive is rejected (``ArchiveRejected`` with a reason a user can act on) when it is not a tar, lacks
or has a malformed ``manifest.json``, has absolute or ``..`` paths, links that escape, device files,
too many entries or bytes, or layers that decompress far beyond their size (decompression bombs).
"""

from __future__ import annotations

import copy
import gzip
import heapq
import io
import json
import os
import posixpath
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
LARGEST_FILES = 10


class ArchiveRejected(Exception):
    """The archive is unsafe or malformed; ``reason`` says why in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ArchiveLimits:
    max_archive_bytes: int = 2 * 1024**3
    max_entries: int = 200_000
    max_unpacked_bytes: int = 8 * 1024**3
    # A compressed layer may grow at most this many times when decompressed.
    max_compression_ratio: int = 200
    max_metadata_bytes: int = 4 * 1024**2
    secret_scan_max_file_bytes: int = 1024**2


@dataclass
class Finding:
    kind: str
    severity: str
    path: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "severity": self.severity, "path": self.path, "detail": self.detail}


@dataclass
class LayerSummary:
    digest: str
    size_bytes: int
    files: int


@dataclass
class ImageAnalysis:
    config_name: str
    repo_tags: list[str]
    architecture: str
    os: str
    size_bytes: int
    layers: list[LayerSummary]
    exposed_ports: list[str]
    entrypoint: list[str] | None
    cmd: list[str] | None
    working_dir: str
    user: str
    env_names: list[str]
    findings: list[Finding] = field(default_factory=list)
    wasted_bytes: int = 0
    efficiency: float = 1.0
    largest_files: list[dict[str, Any]] = field(default_factory=list)

    def inspection(self) -> dict[str, Any]:
        """The fields an image record shows (never environment values)."""
        return {
            "size_bytes": self.size_bytes,
            "layers": [
                {"digest": layer.digest, "size_bytes": layer.size_bytes, "files": layer.files} for layer in self.layers
            ],
            "architecture": self.architecture,
            "os": self.os,
            "exposed_ports": self.exposed_ports,
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
            "working_dir": self.working_dir,
            "user": self.user,
            "env_names": self.env_names,
        }

    def scan_report(self) -> dict[str, Any]:
        return {"findings": [finding.as_dict() for finding in self.findings]}

    def optimization_report(self) -> dict[str, Any]:
        return {
            "wasted_bytes": self.wasted_bytes,
            "efficiency": self.efficiency,
            "largest_files": self.largest_files,
            "layers": [{"digest": layer.digest, "size_bytes": layer.size_bytes} for layer in self.layers],
        }


# --- secrets -------------------------------------------------------------------------------------------

_CONTENT_SECRETS: list[tuple[str, str, re.Pattern[bytes]]] = [
    ("private_key", "critical", re.compile(rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----")),
    ("cloud_key", "critical", re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("cloud_key", "critical", re.compile(rb"aws_secret_access_key\s*[=:]\s*\S{20,}", re.IGNORECASE)),
    ("token", "high", re.compile(rb"\b(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}\b")),
    ("token", "high", re.compile(rb"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
]
_CONTENT_PREFILTER = re.compile(
    rb"PRIVATE KEY-----|AKIA|ASIA|aws_secret_access_key|ghp_|gho_|ghs_|github_pat_|xox", re.IGNORECASE
)
_SECRET_FILE_NAMES = re.compile(
    r"(^|/)(\.env(\.[\w.-]+)?|\.aws/credentials|\.netrc|\.pgpass|\.git-credentials|id_(rsa|dsa|ecdsa|ed25519)"
    r"|\.npmrc|\.pypirc|\.docker/config\.json)$"
)
_SECRET_ENV_NAME = re.compile(r"SECRET|PASSW(OR)?D|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL", re.IGNORECASE)
_ENV_LINE = re.compile(rb"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=\s*\S", re.MULTILINE)


def _env_findings(env: list[str]) -> list[Finding]:
    findings = []
    for entry in env:
        name, _, value = entry.partition("=")
        encoded = value.encode()
        if value and (_SECRET_ENV_NAME.search(name) or any(p.search(encoded) for _, _, p in _CONTENT_SECRETS)):
            findings.append(
                Finding(
                    "secret_env",
                    "high",
                    f"env:{name}",
                    f"environment variable {name} holds what looks like a secret; "
                    "pass it at run time as a secret instead of baking it into the image",
                )
            )
    return findings


def _content_findings(path: str, data: bytes) -> list[Finding]:
    findings: list[Finding] = []
    if _CONTENT_PREFILTER.search(data):
        for kind, severity, pattern in _CONTENT_SECRETS:
            if pattern.search(data) and not any(f.kind == kind for f in findings):
                what = kind.replace("_", " ")
                findings.append(Finding(kind, severity, path, f"file contains what looks like a {what}"))
    if _SECRET_FILE_NAMES.search(path):
        is_env_file = posixpath.basename(path).startswith(".env")
        if not is_env_file or _ENV_LINE.search(data):
            findings.append(
                Finding(
                    "secret_file",
                    "high",
                    path,
                    "credentials file shipped in the image; remove it and mount secrets at run time",
                )
            )
    return findings


# --- tar safety ----------------------------------------------------------------------------------------


def _clean_member_path(name: str, *, where: str) -> str:
    """The normalised relative path of a tar member, or a rejection for absolute or ``..`` paths."""
    if name.startswith("/"):
        raise ArchiveRejected(f"{where}: entry '{name}' has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveRejected(f"{where}: entry '{name}' climbs out of the archive with '..'")
    return "/".join(parts)


def _check_link(member: tarfile.TarInfo, path: str, *, where: str, allow_absolute_symlinks: bool) -> None:
    target = member.linkname
    if member.issym():
        if target.startswith("/"):
            if allow_absolute_symlinks:
                return  # inside an image, absolute symlinks resolve within the container's root
            raise ArchiveRejected(f"{where}: symlink '{path}' points outside the archive ('{target}')")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    else:  # hard link: its target is a path within the same archive
        resolved = posixpath.normpath(target.lstrip("/") if allow_absolute_symlinks else target)
        if target.startswith("/") and not allow_absolute_symlinks:
            raise ArchiveRejected(f"{where}: hard link '{path}' points outside the archive ('{target}')")
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise ArchiveRejected(f"{where}: link '{path}' escapes to '{target}'")


def _check_type(member: tarfile.TarInfo, path: str, *, where: str) -> None:
    if member.ischr() or member.isblk():
        raise ArchiveRejected(f"{where}: entry '{path}' is a device file, which images may not carry")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk() or member.isfifo()):
        raise ArchiveRejected(f"{where}: entry '{path}' has an unsupported type")


class _CountingReader(io.RawIOBase):
    """Counts the compressed bytes read, so the decompressed/compressed ratio can be bounded."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


class _Budget:
    """Entries and bytes left for the whole archive."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.entries = 0
        self.unpacked = 0

    def spend(self, member: tarfile.TarInfo, where: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveRejected(f"{where}: more than {self.limits.max_entries} entries")
        self.unpacked += max(member.size, 0)
        if self.unpacked > self.limits.max_unpacked_bytes:
            raise ArchiveRejected(f"{where}: more than {self.limits.max_unpacked_bytes} bytes when unpacked")


# --- the archive ---------------------------------------------------------------------------------------


class _OuterArchive:
    """The ``docker save`` tar itself: validated member index, links resolved within the archive."""

    def __init__(self, tar: tarfile.TarFile, limits: ArchiveLimits, budget: _Budget) -> None:
        self.tar = tar
        self.limits = limits
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar:
            path = _clean_member_path(member.name, where="archive")
            _check_type(member, path, where="archive")
            if member.issparse():
                raise ArchiveRejected(f"archive: entry '{path}' is a sparse file, which 'docker save' never writes")
            if member.issym() or member.islnk():
                _check_link(member, path, where="archive", allow_absolute_symlinks=False)
            budget.spend(member, "archive")
            self.members[path] = member
        if not self.members:
            raise ArchiveRejected("the archive is empty; upload the output of 'docker save'")

    def resolve(self, path: str, depth: int = 0) -> tarfile.TarInfo:
        if depth > 8:
            raise ArchiveRejected(f"archive: '{path}' is a chain of links")
        member = self.members.get(_clean_member_path(path, where="manifest.json"))
        if member is None:
            raise ArchiveRejected(f"manifest.json names '{path}', which the archive does not contain")
        if member.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
            return self.resolve(target, depth + 1)
        if member.islnk():
            return self.resolve(member.linkname, depth + 1)
        if not member.isfile():
            raise ArchiveRejected(f"archive: '{path}' is not a regular file")
        return member

    def open(self, path: str) -> IO[bytes]:
        extracted = self.tar.extractfile(self.resolve(path))
        if extracted is None:
            raise ArchiveRejected(f"archive: '{path}' cannot be read")
        return extracted

    def read_json(self, path: str) -> Any:
        member = self.resolve(path)
        if member.size > self.limits.max_metadata_bytes:
            raise ArchiveRejected(f"'{path}' is larger than {self.limits.max_metadata_bytes} bytes")
        try:
            return json.loads(self.open(path).read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveRejected(f"'{path}' is not valid JSON") from exc


def _parse_manifest(archive: _OuterArchive) -> dict[str, Any]:
    if "manifest.json" not in archive.members:
        raise ArchiveRejected("the archive has no manifest.json; upload the output of 'docker save'")
    manifest = archive.read_json("manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise ArchiveRejected("manifest.json must describe exactly one image; save one image per archive")
    entry = manifest[0]
    if not isinstance(entry, dict):
        raise ArchiveRejected("manifest.json is malformed: its entry is not an object")
    config, layers, tags = entry.get("Config"), entry.get("Layers"), entry.get("RepoTags") or []
    if not isinstance(config, str) or not config:
        raise ArchiveRejected("manifest.json is malformed: 'Config' must name the image config file")
    if not isinstance(layers, list) or not all(isinstance(layer, str) and layer for layer in layers):
        raise ArchiveRejected("manifest.json is malformed: 'Layers' must be a list of layer paths")
    if not layers:
        raise ArchiveRejected("manifest.json lists no layers")
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ArchiveRejected("manifest.json is malformed: 'RepoTags' must be a list of names")
    return {"Config": config, "Layers": layers, "RepoTags": tags}


def _layer_stream(raw: IO[bytes], where: str) -> tuple[IO[bytes], _CountingReader]:
    counter = _CountingReader(raw)
    buffered = io.BufferedReader(counter, buffer_size=1024 * 1024)
    magic = buffered.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb"), counter  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        raise ArchiveRejected(f"{where}: zstd-compressed layers are not supported; save with gzip or none")
    return buffered, counter


class _FileSystemView:
    """The union filesystem as layers stack up: what is visible, and the bytes hidden below it."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, int]] = {}  # path -> (size, layer index)
        self.wasted = 0

    def _hide_tree(self, directory: str, below_layer: int) -> None:
        prefix = directory + "/" if directory else ""
        for path in [p for p in self.files if p.startswith(prefix) or p == directory]:
            size, layer = self.files[path]
            if layer < below_layer:
                self.wasted += size
                del self.files[path]

    def apply(self, path: str, member: tarfile.TarInfo, layer: int) -> bool:
        """Stack one layer entry on the view; False when it is a whiteout marker, not a file."""
        directory, name = posixpath.split(path)
        if name == OPAQUE_WHITEOUT:
            self._hide_tree(directory, layer)
            return False
        if name.startswith(WHITEOUT_PREFIX):
            self._hide_tree(posixpath.join(directory, name[len(WHITEOUT_PREFIX) :]), layer)
            return False
        previous = self.files.pop(path, None)
        if previous is not None:
            self.wasted += previous[0]
        if member.isfile():
            self.files[path] = (member.size, layer)
        return True


def _scan_layer(
    archive: _OuterArchive, layer_path: str, index: int, budget: _Budget, view: _FileSystemView, findings: list[Finding]
) -> LayerSummary:
    where = f"layer {index + 1} ({layer_path})"
    stream, counter = _layer_stream(archive.open(layer_path), where)
    compressed = isinstance(stream, gzip.GzipFile)
    layer_bytes = 0
    files = 0
    limit = archive.limits.secret_scan_max_file_bytes
    try:
        with tarfile.open(fileobj=stream, mode="r|") as layer:
            for member in layer:
                path = _clean_member_path(member.name, where=where)
                _check_type(member, path, where=where)
                if member.issym() or member.islnk():
                    _check_link(member, path, where=where, allow_absolute_symlinks=True)
                budget.spend(member, where)
                if not view.apply(path, member, index):
                    continue
                if member.isfile():
                    files += 1
                    layer_bytes += member.size
                    if 0 < member.size <= limit:
                        data = layer.extractfile(member)
                        if data is not None:
                            findings.extend(_content_findings("/" + path, data.read(limit)))
                    elif _SECRET_FILE_NAMES.search(path):
                        findings.append(
                            Finding("secret_file", "high", "/" + path, "credentials file shipped in the image")
                        )
                _mode_findings(member, path, findings)
                if (
                    compressed
                    and counter.count
                    and layer_bytes > archive.limits.max_compression_ratio * max(counter.count, 64 * 1024)
                ):
                    raise ArchiveRejected(
                        f"{where} decompresses to more than "
                        f"{archive.limits.max_compression_ratio}x its size (a decompression bomb)"
                    )
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, ArchiveRejected):
            raise
        raise ArchiveRejected(f"{where} is not a valid tar stream ({exc})") from exc
    digest = (
        posixpath.basename(posixpath.dirname(layer_path))
        if layer_path.endswith("/layer.tar")
        else posixpath.basename(layer_path)
    )
    return LayerSummary(digest=digest, size_bytes=layer_bytes, files=files)


def _mode_findings(member: tarfile.TarInfo, path: str, findings: list[Finding]) -> None:
    mode = stat.S_IMODE(member.mode)
    if member.isfile() and mode & stat.S_ISUID:
        findings.append(Finding("setuid", "high", "/" + path, f"setuid binary (mode {mode:o})"))
    elif member.isfile() and mode & stat.S_ISGID:
        findings.append(Finding("setgid", "medium", "/" + path, f"setgid binary (mode {mode:o})"))
    if member.isdir() and mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        findings.append(
            Finding(
                "world_writable",
                "medium",
                "/" + path,
                f"world-writable directory without the sticky bit (mode {mode:o})",
            )
        )


def _list_of_str(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ArchiveRejected("the image config is malformed: Entrypoint/Cmd must be lists of strings")


def _open_outer(path: Path, limits: ArchiveLimits) -> tarfile.TarFile:
    with path.open("rb") as head:
        magic = head.read(4)
    if magic.startswith(GZIP_MAGIC):
        raise ArchiveRejected("the archive is gzip-compressed; decompress it first (upload 'docker save' output)")
    if path.stat().st_size > limits.max_archive_bytes:
        raise ArchiveRejected(f"the archive is larger than {limits.max_archive_bytes} bytes")
    try:
        return tarfile.open(path, mode="r:")
    except tarfile.TarError as exc:
        raise ArchiveRejected("the upload is not a tar archive; upload the output of 'docker save'") from exc


def analyse_archive(path: Path, limits: ArchiveLimits | None = None) -> ImageAnalysis:
    """Validate the ``docker save`` archive at ``path`` and report on it, or raise ``ArchiveRejected``."""
    limits = limits or ArchiveLimits()
    budget = _Budget(limits)
    with _open_outer(path, limits) as tar:
        try:
            archive = _OuterArchive(tar, limits, budget)
        except tarfile.TarError as exc:
            raise ArchiveRejected(f"the archive is not a valid tar ({exc})") from exc
        manifest = _parse_manifest(archive)
        config = archive.read_json(manifest["Config"])
        if not isinstance(config, dict):
            raise ArchiveRejected("the image config is malformed: not a JSON object")
        run_config = config.get("config") or {}
        if not isinstance(run_config, dict):
            raise ArchiveRejected("the image config is malformed: 'config' is not an object")
        env = [e for e in (run_config.get("Env") or []) if isinstance(e, str)]
        user = str(run_config.get("User") or "")

        findings: list[Finding] = []
        if user in ("", "root", "0") or user.startswith(("root:", "0:")):
            findings.append(
                Finding(
                    "root_user",
                    "medium",
                    "config:User",
                    "the image runs as root; add a USER instruction with an unprivileged user",
                )
            )
        findings.extend(_env_findings(env))
        view = _FileSystemView()
        layers = [
            _scan_layer(archive, layer, index, budget, view, findings) for index, layer in enumerate(manifest["Layers"])
        ]

    total = sum(layer.size_bytes for layer in layers)
    largest = heapq.nlargest(LARGEST_FILES, view.files.items(), key=lambda item: item[1][0])
    ports = run_config.get("ExposedPorts") or {}
    return ImageAnalysis(
        config_name=manifest["Config"],
        repo_tags=manifest["RepoTags"],
        architecture=str(config.get("architecture") or ""),
        os=str(config.get("os") or ""),
        size_bytes=total,
        layers=layers,
        exposed_ports=sorted(str(p) for p in ports) if isinstance(ports, dict) else [],
        entrypoint=_list_of_str(run_config.get("Entrypoint")),
        cmd=_list_of_str(run_config.get("Cmd")),
        working_dir=str(run_config.get("WorkingDir") or ""),
        user=user,
        env_names=[e.partition("=")[0] for e in env],
        findings=findings,
        wasted_bytes=view.wasted,
        efficiency=round(1 - view.wasted / total, 4) if total else 1.0,
        largest_files=[{"path": "/" + p, "size_bytes": size, "layer": layer + 1} for p, (size, layer) in largest],
    )


class LoadStream:
    """The validated archive as ``docker load`` should see it: with every repository tag removed.

    Tags inside an upload are the uploader's words; loading them as-is would let one tenant re-point
    another's (or the platform's) image names. The worker tags the loaded image itself, by config digest.

    Every header is written afresh from what ``tarfile`` parsed, so Docker reads exactly the entries that
    were validated, never the upload's own header bytes. File contents are sent straight from their byte
    ranges in the archive, in large reads: nothing is decoded or re-buffered in Python, and the length is
    known up front, so Docker gets a plain body rather than a chunked one. Iterate it to get the bytes.
    """

    def __init__(self, path: Path, chunk_size: int = 4 * 1024 * 1024) -> None:
        self._path = path
        self._chunk_size = chunk_size
        # Bytes to send as they are, or (offset, size) ranges of the archive to send from the file.
        self._parts: list[bytes | tuple[int, int]] = []
        self._length = 0
        try:
            with tarfile.open(path, mode="r:") as source:
                for member in source:
                    self._add_member(source, member)
        except tarfile.TarError as exc:
            raise ArchiveRejected(f"the archive is not a valid tar ({exc})") from exc
        # The end-of-archive blocks, padded to a whole record as tarfile writes them.
        self._add(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._add(_padding(self._length, tarfile.RECORDSIZE))

    def _add_member(self, source: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean_member_path(member.name, where="archive")
        if name == "repositories":
            return
        if name == "manifest.json":
            self._add_manifest(source, member)
        elif member.isfile():
            if member.issparse():
                raise ArchiveRejected(f"archive: entry '{name}' is a sparse file, which 'docker save' never writes")
            self._add(_header(member))
            self._add((member.offset_data, member.size))
            self._add(_padding(member.size))
        else:
            self._add(_header(member))

    def _add_manifest(self, source: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        extracted = source.extractfile(member)
        if extracted is None:
            raise ArchiveRejected("archive: 'manifest.json' is not a regular file")
        try:
            manifest = json.loads(extracted.read())
            for entry in manifest:
                entry["RepoTags"] = None
        except (ValueError, TypeError) as exc:
            raise ArchiveRejected("manifest.json is malformed") from exc
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime, info.mode = len(data), member.mtime, member.mode
        self._add(_header(info))
        self._add(data)
        self._add(_padding(len(data)))

    def _add(self, part: bytes | tuple[int, int]) -> None:
        if isinstance(part, bytes):
            if not part:
                return
            self._length += len(part)
            if self._parts and isinstance(self._parts[-1], bytes):
                self._parts[-1] += part  # headers and padding in a row go out as one write
                return
        else:
            self._length += part[1]
        self._parts.append(part)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        with self._path.open("rb", buffering=0) as archive:
            descriptor = archive.fileno()
            for part in self._parts:
                if isinstance(part, bytes):
                    yield part
                    continue
                offset, size = part
                while size > 0:
                    chunk = os.pread(descriptor, min(size, self._chunk_size), offset)
                    if not chunk:
                        raise ArchiveRejected("the archive ends in the middle of an entry")
                    yield chunk
                    offset, size = offset + len(chunk), size - len(chunk)


def _header(member: tarfile.TarInfo) -> bytes:
    """The header ``tarfile`` writes for ``member`` in a PAX archive (as ``TarFile.addfile`` does)."""
    return copy.copy(member).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _padding(size: int, unit: int = tarfile.BLOCKSIZE) -> bytes:
    return tarfile.NUL * (-size % unit)
