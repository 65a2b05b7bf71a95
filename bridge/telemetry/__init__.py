"""Tracing, the tracer provider and log lines."""
