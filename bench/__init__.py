"""Benchmarks a user can run: `python -m bench.<name>`; each prints a table."""
