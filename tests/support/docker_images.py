"""Small test images built here, with no registry: Debian's static busybox in a FROM scratch build.

``web`` serves HTTP on 8080 (busybox httpd) and answers ``/cgi-bin/whoami`` with the container's
hostname, so traffic tests can tell replicas apart. ``findings`` is a multi-layer image with a file that
a later layer overwrites, one that a later layer deletes, a setuid binary, a planted fake private key, a
secret-looking environment variable and a root user, for the scanner and the optimisation report.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")

_WEB = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /srv/www
RUN chmod 755 /srv/www/cgi-bin/whoami
EXPOSE 8080
CMD ["httpd", "-f", "-vv", "-p", "8080", "-h", "/srv/www"]
"""

_FINDINGS = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /srv/www
RUN dd if=/dev/zero of=/srv/cache.bin bs=1024 count=256 2>/dev/null
RUN dd if=/dev/zero of=/srv/cache.bin bs=1024 count=16 2>/dev/null && rm -f /srv/scratch.tmp
RUN dd if=/dev/zero of=/srv/scratch.tmp bs=1024 count=128 2>/dev/null
RUN rm /srv/scratch.tmp
COPY fake_id_rsa /root/.ssh/id_rsa
RUN cp /bin/busybox /bin/suid-helper && chmod 4755 /bin/suid-helper
ENV API_TOKEN=not-a-real-token-but-looks-like-one DEMO_MODE=1
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/srv/www"]
"""

# Overwritten: 256 KiB of /srv/cache.bin; deleted: 128 KiB of /srv/scratch.tmp.
FINDINGS_WASTED_BYTES = 256 * 1024 + 128 * 1024

FAKE_PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n"
    "-----END RSA PRIVATE KEY-----\n"
)

_WHOAMI = """#!/bin/sh
echo "Content-Type: text/plain"
echo ""
hostname
"""

DOCKERFILES = {"web": _WEB, "findings": _FINDINGS}


def build_test_image(client: Any, variant: str, tag: str) -> Any:
    """Build the ``variant`` test image as ``tag`` with the docker SDK ``client``; returns the image."""
    with tempfile.TemporaryDirectory(prefix="berth-image-") as scratch:
        context = Path(scratch)
        shutil.copy(BUSYBOX, context / "busybox")
        www = context / "www"
        (www / "cgi-bin").mkdir(parents=True)
        (www / "index.html").write_text("<h1>Berth test image</h1>\n")
        (www / "cgi-bin" / "whoami").write_text(_WHOAMI)
        (context / "fake_id_rsa").write_text(FAKE_PRIVATE_KEY)
        (context / "Dockerfile").write_text(DOCKERFILES[variant])
        # nocache: the test processes build the same images at once, and a cached build ends on an
        # image another process may be removing with its own tag ("No such image" mid-build); without
        # the cache every build makes an image of its own
        image, _ = client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, pull=False, nocache=True)
        return image


@contextmanager
def built_test_image(client: Any, variant: str, tag: str) -> Iterator[Any]:
    """The ``variant`` test image built as ``tag`` for the duration of the block, then removed."""
    image = build_test_image(client, variant, tag)
    try:
        yield image
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)


def save_image(client: Any, reference: str, destination: Path) -> Path:
    """Write ``docker save`` of ``reference`` to ``destination``."""
    with destination.open("wb") as out:
        for chunk in client.images.get(reference).save(named=True):
            out.write(chunk)
    return destination


if __name__ == "__main__":
    # python -m tests.support.docker_images web /tmp/web.tar : build a test image and save it as an archive
    import sys

    import docker

    variant, destination = sys.argv[1], Path(sys.argv[2])
    client = docker.from_env()
    build_test_image(client, variant, f"berth-test/{variant}:latest")
    print(save_image(client, f"berth-test/{variant}:latest", destination))
