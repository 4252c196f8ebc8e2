"""The container stats contract: what one sample of a container holds, named once for the host worker's
sampler (which reads Docker), its store (which writes ``container_stats``) and the containers function
(which reads the samples back). Each field is a column of ``container_stats``, in the table's order.
"""

from __future__ import annotations

from enum import StrEnum


class StatField(StrEnum):
    CPU_PERCENT = "cpu_percent"
    MEMORY_BYTES = "memory_bytes"
    MEMORY_LIMIT_BYTES = "memory_limit_bytes"
    NET_RX_BYTES = "net_rx_bytes"
    NET_TX_BYTES = "net_tx_bytes"
    BLOCK_READ_BYTES = "block_read_bytes"
    BLOCK_WRITE_BYTES = "block_write_bytes"
    # Not in Docker's stats: the container's writable layer, sized by a listing of its own (may be unknown).
    FS_BYTES = "fs_bytes"
    # The cgroup's cumulative CPU time in nanoseconds (since the container started): metered into CPU-seconds.
    CPU_USAGE_NS = "cpu_usage_ns"


STAT_FIELDS: tuple[StatField, ...] = tuple(StatField)
# The whole-number counts one reading of Docker's stats gives (besides the CPU percentage).
DOCKER_BYTE_FIELDS: tuple[StatField, ...] = (
    StatField.CPU_USAGE_NS,
    StatField.MEMORY_BYTES,
    StatField.MEMORY_LIMIT_BYTES,
    StatField.NET_RX_BYTES,
    StatField.NET_TX_BYTES,
    StatField.BLOCK_READ_BYTES,
    StatField.BLOCK_WRITE_BYTES,
)
