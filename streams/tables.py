"""Tables of the worker.

``customer_state``: CustomerState bytes per customer id, co-partitioned with cx.touchpoints (same
key, same partition count): the changelog of a customer lands in the partition their events
come from, so a rebalance moves state and events together. RocksDB (rocksdict) by default.

``identities``: anonymous_id -> customer_id links (identity stitching). A GlobalTable: every
worker holds all of it, because an event known only by its anonymous_id arrives on the
anonymous id's partition, not the customer's.
"""

from __future__ import annotations

from cxsignals.settings import get_settings
from streams.app import app

_settings = get_settings()

customer_state = app.Table(
    "customer-state",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=_settings.touchpoint_partitions,
)

identities = app.GlobalTable(
    "identities",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=_settings.touchpoint_partitions,
)
