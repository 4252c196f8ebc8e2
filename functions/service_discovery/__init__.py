"""The service-discovery function: namespaces, services and their instances with health (/api/service-discovery)."""
