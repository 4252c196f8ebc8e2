"""The archive validator, scanner and optimisation report, on archives built byte by byte."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.support.archives import Entry, build_archive, image_config, tar_bytes
from worker.image_analysis import ArchiveLimits, ArchiveRejected, LoadStream, analyse_archive

FAKE_KEY = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEfakefakefake\n-----END RSA PRIVATE KEY-----\n"
BUSYBOX = Entry("bin/busybox", b"\x7fELF" + b"b" * 1000, 0o755)


def test_multi_layer_image_reports_inspection_findings_and_waste(tmp_path: Path) -> None:
    # GIVEN an image whose later layers overwrite and delete files of earlier ones
    layers = [
        [Entry.dir("bin"), BUSYBOX, Entry("srv/data.bin", b"x" * 5000), Entry("srv/old.log", b"l" * 700)],
        [
            Entry("srv/data.bin", b"y" * 2000),
            Entry("srv/.wh.old.log", b""),
            Entry("usr/bin/su", b"su", 0o4755),
            Entry("root/.ssh/id_rsa", FAKE_KEY, 0o600),
            Entry.dir("var/drop", 0o777),
            Entry.dir("tmp", 0o1777),
        ],
        [Entry("app/.env", b"DATABASE_PASSWORD=hunter2\n"), Entry("app/notes.txt", b"aws AKIAABCDEFGHIJKLMNOP")],
    ]
    config = image_config(
        env=["PATH=/bin", "API_TOKEN=abc123", "MODE=prod"],
        ports=["8080/tcp"],
        entrypoint=["/bin/busybox"],
        cmd=["httpd", "-f"],
    )
    archive = build_archive(tmp_path / "image.tar", layers, config=config)

    # WHEN it is analysed
    report = analyse_archive(archive)

    # THEN inspection reflects the config, never environment values
    assert report.exposed_ports == ["8080/tcp"]
    assert report.entrypoint == ["/bin/busybox"] and report.cmd == ["httpd", "-f"]
    assert report.env_names == ["PATH", "API_TOKEN", "MODE"]
    assert "abc123" not in json.dumps(report.inspection()) + json.dumps(report.scan_report())
    assert [layer.files for layer in report.layers] == [3, 3, 2]
    assert report.size_bytes == sum(layer.size_bytes for layer in report.layers)
    # AND the overwritten 5000 bytes and the deleted 700 bytes count as wasted
    assert report.wasted_bytes == 5700
    assert report.efficiency == round(1 - 5700 / report.size_bytes, 4)
    assert report.largest_files[0] == {"path": "/srv/data.bin", "size_bytes": 2000, "layer": 2}
    # AND every planted problem is found, with its path
    found = {(f.kind, f.path) for f in report.findings}
    assert ("root_user", "config:User") in found
    assert ("secret_env", "env:API_TOKEN") in found
    assert ("setuid", "/usr/bin/su") in found
    assert ("private_key", "/root/.ssh/id_rsa") in found
    assert ("secret_file", "/app/.env") in found
    assert ("cloud_key", "/app/notes.txt") in found
    assert ("world_writable", "/var/drop") in found
    assert ("world_writable", "/tmp") not in found  # sticky bit: the usual /tmp
    assert all(f.severity in {"low", "medium", "high", "critical"} for f in report.findings)


def test_unprivileged_clean_image_has_no_findings(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "clean.tar", [[BUSYBOX]], config=image_config(user="1000:1000"))
    assert analyse_archive(archive).findings == []


def test_gzip_layers_are_read(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "gz.tar", [[BUSYBOX, Entry("etc/setgid", b"g", 0o2755)]], compress_layers=True)
    report = analyse_archive(archive)
    assert report.layers[0].files == 2
    assert any(f.kind == "setgid" for f in report.findings)


def _outer(tmp_path: Path, entries: list[Entry]) -> Path:
    path = tmp_path / "outer.tar"
    path.write_bytes(tar_bytes(entries))
    return path


MALICIOUS = {
    "not a tar": lambda tmp: (tmp / "x.tar").write_bytes(b"hello, not a tar at all" * 100) and tmp / "x.tar",
    "no manifest": lambda tmp: build_archive(tmp / "a.tar", [[BUSYBOX]], manifest=False),
    "manifest not json": lambda tmp: _outer(tmp, [Entry("manifest.json", b"{nope")]),
    "manifest wrong shape": lambda tmp: build_archive(tmp / "a.tar", [[BUSYBOX]], manifest={"Config": 1}),
    "manifest names missing layer": lambda tmp: build_archive(
        tmp / "a.tar",
        [[BUSYBOX]],
        manifest=[{"Config": "c.json", "Layers": ["nope/layer.tar"]}],
        extra=[Entry("c.json", b"{}")],
    ),
    "traversal in archive": lambda tmp: build_archive(
        tmp / "a.tar", [[BUSYBOX]], extra=[Entry("../../etc/cron.d/evil", b"x")]
    ),
    "absolute path in archive": lambda tmp: build_archive(
        tmp / "a.tar", [[BUSYBOX]], extra=[Entry("/etc/passwd", b"x")]
    ),
    "symlink escaping archive": lambda tmp: build_archive(
        tmp / "a.tar", [[BUSYBOX]], extra=[Entry.symlink("evil", "../../../etc/shadow")]
    ),
    "traversal in layer": lambda tmp: build_archive(tmp / "a.tar", [[Entry("../../../root/x", b"x")]]),
    "hardlink escaping layer": lambda tmp: build_archive(tmp / "a.tar", [[Entry.hardlink("x", "../../etc/shadow")]]),
    "relative symlink escaping layer": lambda tmp: build_archive(
        tmp / "a.tar", [[Entry.symlink("etc/evil", "../../../../host")]]
    ),
    "device file in layer": lambda tmp: build_archive(tmp / "a.tar", [[Entry.device("dev/mem")]]),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_rejected_with_a_reason(tmp_path: Path, case: str) -> None:
    archive = MALICIOUS[case](tmp_path)
    with pytest.raises(ArchiveRejected) as rejected:
        analyse_archive(archive)
    assert rejected.value.reason


def test_too_many_entries_is_rejected(tmp_path: Path) -> None:
    layer = [Entry(f"f{i}", b"x") for i in range(50)]
    archive = build_archive(tmp_path / "many.tar", [layer])
    with pytest.raises(ArchiveRejected, match="more than 40 entries"):
        analyse_archive(archive, ArchiveLimits(max_entries=40))


def test_too_many_bytes_is_rejected(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "big.tar", [[Entry("big", b"x" * 100_000)]])
    with pytest.raises(ArchiveRejected, match="bytes when unpacked"):
        analyse_archive(archive, ArchiveLimits(max_unpacked_bytes=50_000))


def test_decompression_bomb_layer_is_rejected(tmp_path: Path) -> None:
    # A 64 MiB file of zeros gzips to about 64 KiB: a ratio near 1000.
    archive = build_archive(tmp_path / "bomb.tar", [[Entry("zeros", bytes(64 * 1024 * 1024))]], compress_layers=True)
    assert os.path.getsize(archive) < 1024 * 1024
    with pytest.raises(ArchiveRejected, match="decompression bomb"):
        analyse_archive(archive)


def test_load_stream_strips_repository_tags(tmp_path: Path) -> None:
    archive = build_archive(
        tmp_path / "tagged.tar",
        [[BUSYBOX]],
        repo_tags=["berth/other-user/web:1"],
        extra=[Entry("repositories", b'{"berth/other-user/web": {"1": "abc"}}')],
    )
    rewritten = b"".join(LoadStream(archive))
    with tarfile.open(fileobj=io.BytesIO(rewritten)) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "repositories" not in names
    assert manifest[0]["RepoTags"] is None
    assert manifest[0]["Layers"] and all(name in names for name in manifest[0]["Layers"])


def _rewritten_by_tarfile(archive: Path) -> bytes:
    """What re-writing the archive member by member with tarfile gives: the reference for LoadStream."""
    out = io.BytesIO()
    with tarfile.open(archive) as source, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            if member.name == "repositories":
                continue
            if member.name == "manifest.json":
                manifest = json.loads(source.extractfile(member).read())  # type: ignore[union-attr]
                for entry in manifest:
                    entry["RepoTags"] = None
                data = json.dumps(manifest).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size, info.mtime, info.mode = len(data), member.mtime, member.mode
                sink.addfile(info, io.BytesIO(data))
            else:
                sink.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def test_load_stream_is_the_archive_rewritten_with_fresh_headers_and_its_declared_length(tmp_path: Path) -> None:
    # GIVEN an archive with long names (PAX headers), links, a directory, odd-sized files and tags
    archive = build_archive(
        tmp_path / "varied.tar",
        [[BUSYBOX], [Entry("srv/" + "d" * 150 + ".bin", os.urandom(3 * 1024 * 1024 + 7))]],
        repo_tags=["berth/other-user/web:1", "platform/base:latest"],
        extra=[
            Entry("repositories", b'{"berth/other-user/web": {"1": "abc"}}'),
            Entry.dir("notes"),
            Entry("notes/" + "n" * 120, b"odd" * 171),
            Entry.symlink("notes/latest", "n" * 120),
        ],
    )
    # WHEN it is streamed for docker load, in chunks smaller than its files
    stream = LoadStream(archive, chunk_size=64 * 1024)
    chunks = list(stream)
    # THEN the bytes are exactly what tarfile writes when it re-writes every member (so Docker parses the
    # headers tarfile parsed, not the upload's), the length is declared up front, and no chunk is too big
    assert b"".join(chunks) == _rewritten_by_tarfile(archive)
    assert len(stream) == sum(len(chunk) for chunk in chunks)
    assert max(len(chunk) for chunk in chunks) <= 64 * 1024
    # AND it can be streamed again (a retried request sends the same bytes)
    assert b"".join(stream) == b"".join(chunks)


def test_load_stream_refuses_an_archive_cut_short_after_it_was_read(tmp_path: Path) -> None:
    # GIVEN a stream prepared from an archive, whose file then loses its tail
    archive = build_archive(tmp_path / "cut.tar", [[BUSYBOX], [Entry("srv/data.bin", os.urandom(200_000))]])
    stream = LoadStream(archive)
    with archive.open("r+b") as handle:
        handle.truncate(archive.stat().st_size // 2)
    # WHEN it is streamed THEN it fails instead of sending a short or endless body
    with pytest.raises(ArchiveRejected, match="ends in the middle"):
        b"".join(stream)
    # AND preparing a stream from the cut archive fails up front
    with pytest.raises(ArchiveRejected, match="not a valid tar"):
        LoadStream(archive)


def test_sparse_entries_in_the_archive_are_rejected(tmp_path: Path) -> None:
    # GIVEN an archive with a GNU sparse entry, which docker save never writes
    archive = build_archive(
        tmp_path / "sparse.tar", [[BUSYBOX]], extra=[Entry("holes.bin", None, 0o644, tarfile.GNUTYPE_SPARSE)]
    )
    # WHEN it is validated or prepared for loading THEN it is refused with the reason
    with pytest.raises(ArchiveRejected, match="sparse"):
        analyse_archive(archive)
    with pytest.raises(ArchiveRejected, match="sparse"):
        LoadStream(archive)


async def test_progress_is_written_while_a_stage_runs_and_is_over_when_it_ends() -> None:
    from worker.image_jobs import _while_reporting

    events: list[str] = []

    async def report(fail: bool = False) -> None:
        events.append("report started")
        await asyncio.sleep(0.05)
        events.append("report written")
        if fail:
            raise ConnectionError("database gone")

    async def stage(fail: bool = False) -> str:
        events.append("stage started")
        await asyncio.sleep(0.01)
        events.append("stage ended")
        if fail:
            raise ArchiveRejected("bad layer")
        return "loaded"

    # GIVEN a stage that takes less time than its progress update
    # WHEN it runs while reporting THEN the update ran alongside it, and is written when the result returns
    assert await _while_reporting(report(), stage()) == "loaded"
    assert events == ["stage started", "report started", "stage ended", "report written"]
    # WHEN the stage fails THEN its own error is raised, after the update is written
    events.clear()
    with pytest.raises(ArchiveRejected, match="bad layer"):
        await _while_reporting(report(fail=True), stage(fail=True))
    assert events[-1] == "report written"
    # WHEN only the update fails THEN the stage's result is not returned as if all went well
    with pytest.raises(ConnectionError):
        await _while_reporting(report(fail=True), stage())
