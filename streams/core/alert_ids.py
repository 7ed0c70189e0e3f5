"""Alert ids: deterministic, so that a replay yields the same ids and consumers deduplicate."""

from __future__ import annotations

import hashlib
import uuid

ALERT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/cx-signals/alerts")
_NAMESPACE_BYTES = ALERT_NAMESPACE.bytes
# RFC 4122 variant bits (10xx) applied to the hex digit that carries them.
_VARIANT_DIGIT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def alert_id(rule: str, customer_id: str, evidence: list[str]) -> str:
    """Deterministic alert id: UUIDv5 of rule, customer and the triggering event ids.

    Equal to ``str(uuid.uuid5(ALERT_NAMESPACE, "\\x1f".join([rule, customer_id, *evidence])))``
    (RFC 4122 section 4.3: SHA-1 of namespace + name, version digit 5, variant bits 10),
    written on the hex digest because it runs for every candidate alert, including the
    suppressed ones, and going through ``uuid.UUID`` costs three times the SHA-1 itself.
    """
    name = "\x1f".join([rule, customer_id, *evidence]).encode()
    h = hashlib.sha1(_NAMESPACE_BYTES + name).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"
