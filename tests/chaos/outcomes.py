"""What each chaos phase recorded, and the one table they are printed as."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    """One component killed (or paused) and brought back, under customer traffic and API calls."""

    component: str
    failed_requests: int = 0
    requests: int = 0
    api_errors: int = 0
    api_calls: int = 0
    hangs: int = 0
    unclear_errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    recovery_seconds: float = 0.0
    settle_seconds: float = 0.0
    failure_samples: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)


RESULTS: list[Outcome] = []
# The test's user property that carries the rendered table to the end of the run (from a pytest-xdist
# process too, whose reports the run's controller receives): tests/conftest.py prints it.
CHAOS_TABLE = "chaos_table"

COLUMNS = ("component", "failed requests", "API errors", "items lost", "items duplicated", "recovery s")


def render_table(results: list[Outcome]) -> str:
    rows = [COLUMNS] + [
        (
            o.component,
            f"{o.failed_requests}/{o.requests}",
            f"{o.api_errors}/{o.api_calls}" + (f" ({o.hangs} hung)" if o.hangs else ""),
            str(len(o.lost)),
            str(len(o.duplicated)),
            f"{o.recovery_seconds:.1f}",
        )
        for o in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    details = []
    for o in results:
        for label, items in (
            ("lost", o.lost),
            ("duplicated", o.duplicated),
            ("unclear API errors", o.unclear_errors),
            ("API errors (first)", o.error_samples),
            ("failed requests (first)", o.failure_samples),
        ):
            if items:
                details.append(f"{o.component} {label}: {'; '.join(items[:5])}")
    return "\n".join(lines + (["", *details] if details else []))
