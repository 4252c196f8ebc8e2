"""The immutable route table: built by a pure function from a full snapshot, swapped whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from lb_runtime.snapshot import Listener, Snapshot


class RouteTableError(ValueError):
    """The snapshot cannot become a route table; the message says why."""


@dataclass(frozen=True)
class RouteTable:
    """Listeners by id. Never mutated: a change builds a new table."""

    listeners: Mapping[str, Listener] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 0

    def __len__(self) -> int:
        return len(self.listeners)


@dataclass(frozen=True)
class TableDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    rebound: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.rebound or self.changed)

    def summary(self) -> dict[str, list[str]]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "rebound": list(self.rebound),
            "changed": list(self.changed),
        }


def build_route_table(snapshot: Mapping[str, Any], version: int = 0) -> RouteTable:
    """A route table from a full snapshot, or RouteTableError naming what is wrong."""
    try:
        parsed = Snapshot.model_validate(snapshot)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'snapshot'}: {error['msg']}" for error in exc.errors()
        )
        raise RouteTableError(problems) from exc
    return RouteTable(MappingProxyType({listener.id: listener for listener in parsed.listeners}), version)


def diff_tables(old: RouteTable, new: RouteTable) -> TableDiff:
    """What changes between two tables: listeners added, removed, re-bound (port or protocol) or edited."""
    added = tuple(sorted(set(new.listeners) - set(old.listeners)))
    removed = tuple(sorted(set(old.listeners) - set(new.listeners)))
    rebound: list[str] = []
    changed: list[str] = []
    for listener_id in sorted(set(old.listeners) & set(new.listeners)):
        before, after = old.listeners[listener_id], new.listeners[listener_id]
        if (before.port, before.protocol) != (after.port, after.protocol):
            rebound.append(listener_id)
        elif before != after:
            changed.append(listener_id)
    return TableDiff(added, removed, tuple(rebound), tuple(changed))
