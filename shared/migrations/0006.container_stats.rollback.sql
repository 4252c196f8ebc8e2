DROP TABLE container_stats;
