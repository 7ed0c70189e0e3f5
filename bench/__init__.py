"""Benchmarks of CX Signals: ``python -m bench.run`` (``make bench``) runs them all in one go."""
