"""`berth push`: upload a `docker save` archive through the public API and follow it until it is ready.

A client of the API like any other (it needs nothing but the gateway's URL and an access token), showing
the steps a user would otherwise do by hand: create the image, POST the archive to the presigned upload,
complete, then poll while the platform reports its progress.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"ready", "rejected", "failed"}


def _fail(answer: httpx.Response) -> int:
    try:
        error = answer.json()["error"]
        print(f"berth push: {error['message']} ({error['code']}, request {error['request_id']})", file=sys.stderr)
    except (ValueError, KeyError, TypeError):
        print(f"berth push: HTTP {answer.status_code}: {answer.text[:300]}", file=sys.stderr)
    return 1


def push(
    api: str, token: str, archive: Path, name: str, tag: str, timeout: float = 900.0, *, quiet: bool = False
) -> int:
    """Upload, complete and follow an image to ready. ``quiet``: progress and reports go to stderr and
    stdout gets the image id alone (for scripts: ``IMAGE=$(berth push ... --quiet)``)."""
    say = functools.partial(print, file=sys.stderr if quiet else sys.stdout, flush=True)
    if not archive.is_file():
        print(f"berth push: {archive} is not a file; make one with `docker save IMAGE > FILE`", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api.rstrip("/"), headers=headers, timeout=60) as client:
        created = client.post("/api/images", json={"name": name, "tag": tag})
        if created.status_code != 201:
            return _fail(created)
        image: dict[str, Any] = created.json()
        size = archive.stat().st_size
        say(f"image {image['id']} ({name}:{tag}): uploading {size / 1e6:.1f} MB")
        with archive.open("rb") as data:
            stored = httpx.post(
                image["upload"]["url"],
                data=image["upload"]["fields"],
                files={"file": (archive.name, data, "application/x-tar")},
                timeout=httpx.Timeout(60, write=None),  # a large upload may take long; a stall may not
            )
        if stored.status_code >= 300:
            print(
                f"berth push: storage refused the upload (HTTP {stored.status_code}); the limit is "
                f"{image['upload']['max_bytes']} bytes",
                file=sys.stderr,
            )
            return 1
        completed = client.post(f"/api/images/{image['id']}/complete")
        if completed.status_code != 202:
            return _fail(completed)
        last = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = client.get(f"/api/images/{image['id']}")
            if answer.status_code != 200:
                return _fail(answer)
            current = answer.json()
            progress = current.get("progress") or {}
            line = f"{current['status']}" + (f": {progress['stage']} ({progress['percent']}%)" if progress else "")
            if line != last:
                say(line)
                last = line
            if current["status"] in TERMINAL:
                outcome = _report(current, say)
                if quiet and outcome == 0:
                    print(image["id"])
                return outcome
            time.sleep(0.5)
    print(
        f"berth push: still not ready after {timeout:.0f}s; check `GET /api/images/{image['id']}` later",
        file=sys.stderr,
    )
    return 1


def _report(image: dict[str, Any], say: Callable[..., None]) -> int:
    if image["status"] != "ready":
        print(f"{image['status']}: {image.get('reason') or 'no reason given'}", file=sys.stderr)
        return 1
    optimization = image.get("optimization") or {}
    findings = (image.get("scan") or {}).get("findings") or []
    say(
        f"size {image['size_bytes'] / 1e6:.1f} MB in {len(image['layers'])} layers; "
        f"ports {', '.join(image['exposed_ports']) or 'none'}; user {image['user'] or 'root'}"
    )
    say(
        f"efficiency {optimization.get('efficiency', 1):.1%}, "
        f"{optimization.get('wasted_bytes', 0) / 1e6:.2f} MB wasted by overwritten or deleted files"
    )
    for finding in findings:
        say(f"  [{finding['severity']}] {finding['kind']} {finding['path']}: {finding['detail']}")
    return 0
