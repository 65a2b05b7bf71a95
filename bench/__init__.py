"""Benchmarks of temporal-loom (never part of the test run): ``python -m bench``."""
