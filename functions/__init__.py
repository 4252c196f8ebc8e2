"""Berth's functions: one FastAPI app per service, each wrapped for AWS Lambda by Mangum."""
