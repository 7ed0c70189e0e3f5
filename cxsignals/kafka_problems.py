"""One sentence on why a Kafka command failed, for the commands built on kafka-python (which,
like aiokafka, only says it could not bootstrap when the broker refused the password or the TLS
handshake failed)."""

from __future__ import annotations

from streams.kafka_security import KafkaSecurity


def explain(bootstrap_servers: str, security: KafkaSecurity, exc: BaseException) -> str:
    """The cause found by connecting once more (wrong password, plaintext on a TLS port,
    untrusted certificate), else the client's own error. Never holds the password."""
    from streams.faust_internals import connection_problem_now

    problem = connection_problem_now(bootstrap_servers, security)
    if problem is not None:
        return problem
    return f"{type(exc).__name__}: {exc}"


def unreadable_topic(topic: str, security: KafkaSecurity) -> str:
    """Kafka answers "not authorized" for a topic a principal may not describe, whether or not
    it exists, so that names do not leak: say both."""
    if security.uses_sasl:
        return (f"topic {topic!r} is not readable as {security.describe()}: the Kafka ACLs do not "
                "allow this principal to read it, or it does not exist (docs/security.md)")
    return f"topic {topic!r} does not exist (create it with `cxsignals topics create`)"
