"""The alert_outcomes view (migration 0010) on modern ClickHouse (chDB): the success rule and
window of each rule kind, control alerts alike, and open windows. The same view runs on the
18.16 server in tests/integration/test_outcomes.py."""

from __future__ import annotations

from tests.unit.test_migrations_chdb import _in_chdb


def test_outcomes_follow_each_rules_success_and_window() -> None:
    out = _in_chdb(
        """
        execute("CREATE DATABASE cx")
        apply_migrations(execute, server_version=VERSION, database="cx")
        t = "toDateTime('2026-11-01 10:30:00', 'UTC')"
        execute(
            "INSERT INTO cx.alerts (alert_id, rule, kind, customer_id, event_time, emitted_at, "
            "evidence, control) VALUES "
            f"('a1', 'cart_recovery', 'marketing', 'c1', {t}, now(), ['e1'], 0), "
            f"('a2', 'cart_recovery', 'marketing', 'c2', {t}, now(), ['e2'], 1), "
            f"('a3', 'repeat_contact', 'support', 'c3', {t}, now(), ['e3'], 0), "
            f"('a4', 'detractor_follow_up', 'support', 'c4', {t}, now(), ['e4'], 0), "
            f"('a6', 'repeat_contact', 'support', 'c6', {t}, now(), ['e6'], 1), "
            "('a5', 'cart_recovery', 'marketing', 'c5', now() - 3600, now(), ['e5'], 0)")
        def at(text):
            return f"toDateTime('{text}', 'UTC')"
        execute(
            "INSERT INTO cx.touchpoint_events (event_id, event_type, occurred_at, customer_id, "
            "channel, segment, survey, score) VALUES "
            f"('e1', 'cart_abandon', {at('2026-11-01 10:00:00')}, 'c1', 'web', 'vip', '', 0), "
            f"('p1', 'purchase', {at('2026-11-01 20:00:00')}, 'c1', 'web', 'vip', '', 0), "
            f"('p2', 'purchase', {at('2026-11-02 20:00:00')}, 'c2', 'web', '', '', 0), "
            f"('e3', 'support_contact', {at('2026-11-01 10:00:00')}, 'c3', 'chat', '', '', 0), "
            f"('x3', 'support_contact', {at('2026-11-05 10:00:00')}, 'c3', 'chat', '', '', 0), "
            f"('e4', 'survey_answer', {at('2026-11-01 10:00:00')}, 'c4', 'email', '', 'nps', 3), "
            f"('n4', 'survey_answer', {at('2026-11-01 12:00:00')}, 'c4', 'email', '', 'nps', 7), "
            f"('x6', 'support_contact', {at('2026-11-09 10:00:00')}, 'c6', 'chat', '', '', 0)")
        rows = execute("SELECT alert_id, control, channel, segment, window_s, window_closed, "
                       "success FROM cx.alert_outcomes ORDER BY alert_id")
        print(json.dumps(rows))
        """
    )
    assert [tuple(r) for r in out] == [
        ("a1", 0, "web", "vip", 86400, 1, 1),  # purchase 9.5 h later
        ("a2", 1, "", "", 86400, 1, 0),  # control (trigger not stored); purchase after 24 h
        ("a3", 0, "chat", "", 604800, 1, 0),  # another contact within 7 d
        ("a4", 0, "email", "", 2592000, 1, 1),  # NPS 7 after 3
        ("a5", 0, "", "", 86400, 0, 0),  # window still open
        ("a6", 1, "", "", 604800, 1, 1),  # next contact after 7 d
    ]
