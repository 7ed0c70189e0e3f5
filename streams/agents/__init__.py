"""Importing this package registers every agent, table and timer on ``streams.app.app``."""

from streams.agents import ingest, store  # noqa: F401
