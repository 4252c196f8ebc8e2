"""The load-balancer function: listeners that put an external port in front of a service (/api/load-balancer)."""
