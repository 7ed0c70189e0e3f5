"""Size limits shared by the contract, the topics, the worker and the sink (defined once here).

``MAX_EVENT_BYTES`` is the contract's limit for one touchpoint (larger ones are dead-lettered as
``too_large``). Kafka must still carry such a record to the worker so that it can say so: the
topics accept ``TOPIC_MAX_MESSAGE_BYTES`` and every client fetches and produces up to
``MAX_MESSAGE_BYTES`` (the topic limit plus the record batch overhead).
"""

from __future__ import annotations

MAX_EVENT_BYTES = 1024 * 1024
TOPIC_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_MESSAGE_BYTES = TOPIC_MAX_MESSAGE_BYTES + 4096
