"""`cxsignals topics create`: how an existing topic's config is compared with its spec."""

from __future__ import annotations

from cxsignals.topics_cmd import ConfigDrift, TopicSpec, TopicState, config_drift

SPEC = TopicSpec("cx.touchpoints", 6, {"message.timestamp.type": "LogAppendTime",
                                        "retention.ms": "259200000"})


def test_only_the_keys_of_the_spec_that_differ_are_drift() -> None:
    current = {"message.timestamp.type": "CreateTime", "retention.ms": "259200000",
               "segment.ms": "3600000"}  # an operator's own key is never drift
    assert config_drift(SPEC, current) == (
        ConfigDrift("message.timestamp.type", "CreateTime", "LogAppendTime"),)
    assert config_drift(SPEC, {**current, "message.timestamp.type": "LogAppendTime"}) == ()


def test_a_key_the_broker_did_not_report_is_drift() -> None:
    (drift,) = config_drift(SPEC, {"message.timestamp.type": "LogAppendTime"})
    assert drift == ConfigDrift("retention.ms", None, "259200000")
    assert drift.describe() == "retention.ms=? (want 259200000)"


def test_cleanup_policy_is_compared_as_a_set() -> None:
    spec = TopicSpec("cx.scores", 6, {"cleanup.policy": "compact,delete"})
    assert config_drift(spec, {"cleanup.policy": "delete, compact"}) == ()
    assert config_drift(spec, {"cleanup.policy": "compact"}) == (
        ConfigDrift("cleanup.policy", "compact", "compact,delete"),)


def test_the_status_says_what_was_found_and_done() -> None:
    drift = config_drift(SPEC, {"message.timestamp.type": "CreateTime",
                                "retention.ms": "259200000"})
    assert TopicState(SPEC, created=True, partitions=6).status == "created"
    assert TopicState(SPEC, created=False, partitions=6).status == "exists"
    assert TopicState(SPEC, created=False, partitions=6, drift=drift).status == \
        "differs: message.timestamp.type=CreateTime (want LogAppendTime)"
    assert TopicState(SPEC, created=False, partitions=6, drift=drift, altered=True).status == \
        "altered: message.timestamp.type=CreateTime (want LogAppendTime)"
    assert TopicState(SPEC, created=False, partitions=6,
                      unchecked="TopicAuthorizationFailedError").status == \
        "exists (config not compared: TopicAuthorizationFailedError)"
