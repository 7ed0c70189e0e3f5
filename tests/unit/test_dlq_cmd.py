"""``cxsignals dlq``: argument parsing, rendering, and the unreachable-broker error."""

from __future__ import annotations

import argparse
import socket
from datetime import datetime, timezone

import pytest

from cxsignals import dlq_cmd
from cxsignals.settings import Settings
from streams.core.deadletter import dead_letter_headers, parse_dead_letter_headers
from streams.core.validation import ErrorCode, Invalid


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    dlq_cmd.add_parser(parser.add_subparsers())
    return parser.parse_args(["dlq", *argv])


def letter(value: bytes, key: bytes | None = b"c-1") -> dlq_cmd.DeadLetter:
    headers = tuple(
        dead_letter_headers(
            Invalid(ErrorCode.invalid_utf8, "value: invalid UTF-8 byte 0xff at offset 0"),
            topic="cx.touchpoints",
            partition=2,
            offset=4411,
            received_at=datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc),
        )
    )
    return dlq_cmd.DeadLetter(
        partition=1,
        offset=17,
        timestamp_ms=0,
        key=key,
        value=value,
        headers=headers,
        info=parse_dead_letter_headers(headers),
    )


def test_defaults_and_options() -> None:
    show = parse("show")
    assert (show.limit, show.from_beginning, show.code, show.timeout_s) == (20, False, None, 30.0)
    assert show.func is dlq_cmd.run_show
    replay = parse("replay", "--code", "too_large", "--limit", "5", "--dry-run")
    assert (replay.code, replay.limit, replay.dry_run) == ("too_large", 5, True)
    assert replay.func is dlq_cmd.run_replay


@pytest.mark.parametrize("argv", [["show", "--limit", "0"], ["replay", "--code", "nonsense"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_render_shows_reason_source_and_escaped_preview() -> None:
    text = dlq_cmd.render_dead_letter(letter(b"\xff\n{}"), topic="cx.touchpoints.dlq")
    assert text.splitlines() == [
        "cx.touchpoints.dlq/1@17  received 2026-11-23T10:15:00.000Z  from cx.touchpoints/2@4411",
        "  invalid_utf8: value: invalid UTF-8 byte 0xff at offset 0",
        "  key c-1  value (4 bytes) \\xff\\x0a{}",
    ]


def test_render_cuts_long_values_and_handles_missing_headers() -> None:
    bare = dlq_cmd.DeadLetter(
        partition=0,
        offset=1,
        timestamp_ms=0,
        key=None,
        value=b"x" * 1000,
        headers=(),
        info=parse_dead_letter_headers(()),
    )
    lines = dlq_cmd.render_dead_letter(bare, topic="t").splitlines()
    assert lines[0] == "t/0@1  received ?  from ?/?@?"
    assert lines[1] == "  ?: (no message)"
    assert lines[2].startswith("  key -  value (1000 bytes) xxx")
    assert lines[2].endswith(" ...")
    assert len(lines[2]) < 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("action", ["show", "replay"])
def test_unreachable_broker_exits_2_with_one_line(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    settings = Settings().model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    args = parse(action, "--timeout-s", "1")
    assert args.func(args, settings) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach Kafka at 127.0.0.1:{port}")
    assert "Traceback" not in err and err.count("\n") == 1
