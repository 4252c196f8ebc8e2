"""`berth images push` (alias `berth push`): upload a `docker save` archive through the public API and
follow it until it is ready.

A client of the API like any other (it needs nothing but the API's URL and a token), showing the steps a
user would otherwise do by hand: create the image, POST the archive to the presigned upload (with a byte
progress bar), complete, then follow the platform's processing (a progress bar of its percent) and print
the inspection, the scan's findings (coloured by severity) and the optimisation report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console

from cli.user import render
from cli.user.session import Api, CliError, ExitCode

TERMINAL = {"ready", "rejected", "failed"}


class _ProgressReader:
    """A file whose reads advance a progress bar (httpx streams the multipart body by reading it)."""

    def __init__(self, stream: IO[bytes], advance: Any) -> None:
        self._stream = stream
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._advance(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def fileno(self) -> int:
        return self._stream.fileno()


def upload_archive(upload: dict[str, Any], archive: Path, *, show: bool) -> None:
    """POST the archive to the presigned upload, with a byte progress bar."""
    size = archive.stat().st_size
    with render.upload_progress() as progress, archive.open("rb") as data:
        task = progress.add_task(f"uploading {archive.name}", total=size, visible=show)
        reader = _ProgressReader(data, lambda n: progress.advance(task, n))
        try:
            stored = httpx.post(
                upload["url"],
                data=upload["fields"],
                files={"file": (archive.name, reader, "application/x-tar")},  # type: ignore[dict-item]
                timeout=httpx.Timeout(60, write=None),  # a large upload may take long; a stall may not
            )
        except httpx.HTTPError as exc:
            raise CliError(f"the upload to storage failed: {exc}", ExitCode.UNAVAILABLE) from exc
    if stored.status_code >= 300:
        raise CliError(
            f"storage refused the upload (HTTP {stored.status_code}); the limit is {upload.get('max_bytes')} bytes",
            ExitCode.INVALID,
        )


def follow_processing(api: Api, image_id: str, timeout: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Poll the image until it is ready, rejected or failed: a progress bar of the platform's percent (on
    stderr) and a line per change of status or stage (``say``)."""
    deadline = time.monotonic() + timeout
    last = ""
    with render.wait_progress() as progress:
        task = progress.add_task("processing", total=100, detail="queued")
        while time.monotonic() < deadline:
            image: dict[str, Any] = api.get(f"/api/images/{image_id}")
            stage = image.get("progress") or {}
            line = f"{image['status']}" + (f": {stage['stage']} ({stage['percent']}%)" if stage else "")
            if line != last:
                say(line)
                last = line
            progress.update(
                task,
                completed=100 if image["status"] in TERMINAL else float(stage.get("percent") or 0),
                detail=line,
            )
            if image["status"] in TERMINAL:
                return image
            time.sleep(0.5)
    raise CliError(
        f"image {image_id} is still not ready after {timeout:.0f}s; see `berth images show {image_id}` later",
        ExitCode.TIMEOUT,
    )


def print_report(image: dict[str, Any], console: Console | None = None) -> None:
    """The inspection, the findings by severity (in colour) and the optimisation report."""
    out = console or render.out
    escape = render._escape
    optimization = image.get("optimization") or {}
    findings = (image.get("scan") or {}).get("findings") or []
    if image["status"] != "ready":
        out.print(f"{render.status(image['status'])}: {escape(image.get('reason') or 'no reason given')}")
        return
    out.print(
        f"size {image['size_bytes'] / 1e6:.1f} MB in {len(image['layers'])} layers; "
        f"ports {', '.join(image['exposed_ports']) or 'none'}; user {escape(image['user'] or 'root')}"
    )
    out.print(
        f"efficiency {optimization.get('efficiency', 1):.1%}, "
        f"{optimization.get('wasted_bytes', 0) / 1e6:.2f} MB wasted by overwritten or deleted files"
    )
    out.print(f"findings: {len(findings) or 'none'}")
    for finding in findings:
        severity = str(finding["severity"])
        out.print(
            f"  {render.styled(f'[{severity}]', render.SEVERITY_STYLES.get(severity))} "
            f"{escape(str(finding['kind']))} {escape(str(finding['path']))}: {escape(str(finding['detail']))}"
        )


def push_image(
    api: Api, archive: Path, name: str, tag: str, *, timeout: float = 900.0, quiet: bool = False
) -> dict[str, Any]:
    """Create, upload, complete and follow an image; the final image (``FAILED`` when not ready). The steps
    and the report go to stdout, or to stderr when ``quiet`` (stdout is then the caller's)."""
    console = render.err if quiet else render.out

    def say(line: str) -> None:
        console.print(render._escape(line))

    if not archive.is_file():
        raise CliError(f"{archive} is not a file; make one with `docker save IMAGE > FILE`", ExitCode.USAGE)
    image = api.post("/api/images", json={"name": name, "tag": tag})
    size = archive.stat().st_size
    say(f"image {image['id']} ({name}:{tag}): uploading {size / 1e6:.1f} MB")
    upload_archive(image["upload"], archive, show=True)
    api.post(f"/api/images/{image['id']}/complete")
    final = follow_processing(api, image["id"], timeout, say)
    print_report(final, console)
    if final["status"] != "ready":
        raise CliError(f"{final['status']}: {final.get('reason') or 'no reason given'}", ExitCode.FAILED)
    return final


def push(
    api: str, token: str, archive: Path, name: str, tag: str, timeout: float = 900.0, *, quiet: bool = False
) -> int:
    """The old entry point (``berth push ARCHIVE --token T``): the exit status. ``quiet`` prints only the
    image id on stdout (for scripts: ``IMAGE=$(berth push ... --quiet)``)."""
    try:
        with Api(api, token) as client:
            image = push_image(client, archive, name, tag, timeout=timeout, quiet=quiet)
    except CliError as exc:
        render.err.print(f"[red]berth push:[/] {render._escape(exc.message)}")
        return exc.exit_code
    if quiet:
        print(image["id"], flush=True)
    return ExitCode.OK
