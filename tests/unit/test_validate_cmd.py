"""``cxsignals validate``: per-line verdicts, summary on stderr, exit codes."""

from __future__ import annotations

import argparse
import io
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cxsignals import validate_cmd
from cxsignals.settings import Settings
from streams.core.validation import ErrorCode, Invalid

GOOD = {
    "event_id": "e-1",
    "event_type": "page_view",
    "schema_version": 1,
    "occurred_at": "2026-11-23T10:15:00Z",
    "anonymous_id": "a-1",
    "channel": "web",
    "properties": {"url": "https://shop.example.com/"},
}


def line(**overrides: Any) -> bytes:
    return json.dumps({**GOOD, **overrides}).encode()


def run(argv: list[str], settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser()
    validate_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["validate", *argv])
    return int(args.func(args, settings or Settings()))


def write(tmp_path: Path, *lines: bytes, terminator: bytes = b"\n") -> str:
    path = tmp_path / "events.jsonl"
    path.write_bytes(terminator.join(lines) + terminator)
    return str(path)


def test_all_valid_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, line(), line(event_id="e-2"))
    assert run([path]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["1: ok", "2: ok"]
    assert out.err.strip() == "2 events: 2 ok, 0 invalid"


def test_invalid_lines_print_code_and_message_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        line(),
        b"",
        line(properties={"url": ""}),
        b"   ",
        b"[1]",
        line(anonymous_id=None),
    )
    assert run([path]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "1: ok",
        "3: schema_violation: properties.url: String should have at least 1 character",
        "5: not_an_object: value: expected a JSON object, got an array",
        "6: missing_identity: customer_id, anonymous_id: at least one of them is required",
    ]
    assert out.err.strip() == (
        "4 events: 1 ok, 3 invalid (missing_identity 1, not_an_object 1, schema_violation 1)"
    )


def test_quiet_prints_only_invalid_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, line(), b"{", line())
    assert run(["--quiet", path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("2: invalid_json: value: ")


def test_crlf_lines_and_invalid_utf8_are_handled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, line(), b'{"event_id": "\xff"}', terminator=b"\r\n")
    assert run([path]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "1: ok",
        "2: invalid_utf8: value: invalid UTF-8 byte 0xff at offset 14",
    ]


def test_settings_limits_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tomorrow = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    path = write(tmp_path, line(occurred_at=tomorrow), line(properties={"url": "x" * 500}))
    settings = Settings().model_copy(update={"max_event_bytes": 400, "max_future_skew_s": 60})
    assert run([path], settings) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1: future_timestamp: occurred_at: ")
    assert out[1].startswith("2: too_large: value: ")


def test_stdin_dash(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(line() + b"\n" + b"nope\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert run(["-"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1: ok" and out[1].startswith("2: invalid_json: ")


def test_empty_input_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    assert run([str(path)]) == 0
    assert capsys.readouterr().err.strip() == "0 events: 0 ok, 0 invalid"


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(tmp_path / "absent.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read ")


def test_validate_lines_numbers_skip_blank_lines() -> None:
    verdicts = list(
        validate_cmd.validate_lines(
            [b"\n", line() + b"\n", b"{}\r\n"],
            now=datetime.now(timezone.utc),
            max_bytes=1 << 20,
            max_future_skew_s=86400,
        )
    )
    assert [v.line for v in verdicts] == [2, 3]
    assert verdicts[1].result == Invalid(ErrorCode.schema_violation, "event_type: Field required")
