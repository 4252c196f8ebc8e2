"""The local API gateway: API Gateway HTTP API's behaviour, read from the same OpenAPI document.

Kept import-light on purpose: every function instance process starts with ``gateway.function_host``.
"""
