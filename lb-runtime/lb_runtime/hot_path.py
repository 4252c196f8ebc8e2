"""Which build of the per-request code serves: compiled (Cython) or pure Python.

The per-request code is ``backends`` (balancing, per-instance counters), ``stats`` (per-listener figures),
``http_head`` (whole simple messages read in one call) and ``http_proxy`` (HTTP mode's Protocols). Those .py files
are the one source; ``lb-runtime/build_hot_path.py`` compiles them with their .pxd declarations into
``lb_runtime._NAME_compiled`` extensions stamped with the digest of the sources. ``auto`` (the default) takes the
compiled build when it imports and its stamp matches the sources beside it (a stale build never shadows an edit),
else pure Python. ``python`` forces the fallback (the tests run both builds); ``compiled`` refuses to start without
it.

A build is chosen per runtime and used whole: its Backend, Balancer and ListenerStats only ever meet its own
Protocols.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lb_runtime import backends, http_proxy, stats

HotPath = Literal["auto", "compiled", "python"]
MODULES = ("stats", "backends", "http_head", "http_proxy")  # as in build_hot_path.py
_PACKAGE_DIR = Path(__file__).resolve().parent


class HotPathUnavailable(RuntimeError):
    """``compiled`` was asked for and the extensions are missing or stale."""


@dataclass(frozen=True)
class HotPathBuild:
    """The classes one runtime uses for its listeners."""

    name: str  # "compiled" or "python"
    backend: Any  # type[Backend]
    balancer: Any  # type[Balancer]
    listener_stats: Any  # type[ListenerStats]
    http_client_connection: Any  # type[HttpClientConnection]


PYTHON_BUILD = HotPathBuild(
    "python", backends.Backend, backends.Balancer, stats.ListenerStats, http_proxy.HttpClientConnection
)


def _sources_digest() -> str | None:
    try:
        data = b"".join(
            (_PACKAGE_DIR / f"{module}.{suffix}").read_bytes() for module in MODULES for suffix in ("py", "pxd")
        )
    except OSError:
        return None  # an install that ships only the compiled modules: nothing to compare with
    return hashlib.sha256(data).hexdigest()


def compiled_build() -> HotPathBuild | None:
    """The compiled build when it is present and made from the sources beside it, else None."""
    try:
        modules = {name: importlib.import_module(f"lb_runtime._{name}_compiled") for name in MODULES}
    except ImportError:
        return None
    digest = _sources_digest()
    if digest is not None and any(getattr(m, "COMPILED_FROM_SHA256", None) != digest for m in modules.values()):
        return None
    return HotPathBuild(
        "compiled",
        modules["backends"].Backend,
        modules["backends"].Balancer,
        modules["stats"].ListenerStats,
        modules["http_proxy"].HttpClientConnection,
    )


def select_build(choice: HotPath = "auto") -> HotPathBuild:
    """The build a runtime configured with ``choice`` uses."""
    if choice == "python":
        return PYTHON_BUILD
    build = compiled_build()
    if build is not None:
        return build
    if choice == "compiled":
        raise HotPathUnavailable(
            "the compiled hot path is not built or is stale: run `.venv/bin/python lb-runtime/build_hot_path.py`"
        )
    return PYTHON_BUILD
