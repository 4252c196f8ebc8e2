"""How the CLI shows things: tables and colour on stdout, progress on stderr, ``--json`` for scripts.

Data (tables, ids, JSON) goes to stdout and everything transient (progress bars, spinners, hints) to
stderr, so ``berth images ls --json | jq`` and ``ID=$(berth images push app.tar --quiet)`` just work.
Colour follows rich's rules (off when not a terminal, ``NO_COLOR``, ``FORCE_COLOR``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, highlight=False)

SEVERITY_STYLES = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}
STATUS_STYLES = {
    "running": "green",
    "ready": "green",
    "healthy": "green",
    "passing": "green",
    "stopped": "dim",
    "deleted": "dim",
    "failed": "red",
    "rejected": "red",
    "lost": "red",
    "unhealthy": "yellow",
}


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def styled(value: Any, style: str | None) -> str:
    text = "" if value is None else str(value)
    return f"[{style}]{_escape(text)}[/]" if style else _escape(text)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def status(value: str | None) -> str:
    return styled(value, STATUS_STYLES.get(value or ""))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing yet") -> None:
    """A table on stdout (plain columns when not a terminal)."""
    materialised = list(rows)
    if not materialised:
        err.print(f"[dim]{empty}[/]")
        return
    grid = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in materialised:
        grid.add_row(*[cell if isinstance(cell, str) else _escape("" if cell is None else str(cell)) for cell in row])
    out.print(grid)


def upload_progress() -> Progress:
    """A byte progress bar (on stderr) for an upload."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def wait_progress() -> Progress:
    """A progress bar (on stderr) for a wait measured in steps (replicas running, processing percent)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
