"""Placeholder function: answers 501 on every route whose real function is not built yet."""
