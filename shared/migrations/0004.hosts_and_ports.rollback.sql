DROP TABLE port_allocations;
DROP TABLE hosts;
