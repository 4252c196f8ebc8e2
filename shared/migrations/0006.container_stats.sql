-- depends: 0005.containers
-- Resource-use samples the host worker takes of its running containers; kept for a retention window
-- (BERTH_STATS_RETENTION_HOURS), pruned by sample time. A container's samples go with the container.
CREATE TABLE container_stats (
    container_id       uuid NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    ts                 timestamptz NOT NULL,
    cpu_percent        double precision NOT NULL,
    memory_bytes       bigint NOT NULL,
    memory_limit_bytes bigint NOT NULL,
    net_rx_bytes       bigint NOT NULL,
    net_tx_bytes       bigint NOT NULL,
    block_read_bytes   bigint NOT NULL,
    block_write_bytes  bigint NOT NULL,
    fs_bytes           bigint,
    PRIMARY KEY (container_id, ts)
);
CREATE INDEX container_stats_ts_idx ON container_stats (ts);
