"""Importing this package registers every agent, table and timer on ``streams.app.app``."""

from streams.agents import health, ingest, store  # noqa: F401
