"""Workflow modules that the sandbox tests load inside Temporal's workflow sandbox."""
