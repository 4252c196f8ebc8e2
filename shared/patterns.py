"""Patterns of free-text fields, shared by the functions' models and their OpenAPI declarations.

Explicit character ranges only: the document's patterns are read by ECMA regex engines (clients, fuzzers),
the models' by Python's and Rust's, and the three disagree on classes such as ``\\s``."""

# A name or reason shown to people and stored as text: no control characters (PostgreSQL refuses NUL in text).
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
