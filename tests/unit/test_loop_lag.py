"""The event-loop lag watcher: lags recorded, and a blocked loop's stacks dumped."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from streams import loop_lag
from streams.loop_lag import watch_loop_lag


def _block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # a synchronous step: nothing else on the loop runs meanwhile


async def _run(stall_s: float, *, stall_dump_s: float, out: Path) -> None:
    with out.open("w") as dump_to:
        watcher = asyncio.ensure_future(
            watch_loop_lag(0.01, stall_dump_s=stall_dump_s, dump_to=dump_to))
        await asyncio.sleep(0.3)  # the watcher has armed the dump
        if stall_s:
            _block_the_loop_for(stall_s)
        await asyncio.sleep(0.05)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        # cancelled: disarmed, so a stall after the watcher ended dumps nothing
        _block_the_loop_for(stall_dump_s + loop_lag.REARM_S + 0.2 if stall_dump_s else 0)


def test_a_blocked_loop_has_its_stacks_dumped_once_and_the_lag_recorded(tmp_path: Path) -> None:
    out = tmp_path / "dump.txt"
    before = loop_lag.max_lag.seconds
    asyncio.run(_run(0.9, stall_dump_s=0.5, out=out))
    text = out.read_text()
    assert text.count("Timeout (") == 1, text
    assert "_block_the_loop_for" in text  # the frame that blocked the loop
    assert loop_lag.max_lag.seconds >= max(before, 0.8)


def test_no_dump_without_a_stall_of_the_threshold_or_when_off(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.txt"
    asyncio.run(_run(0.0, stall_dump_s=0.5, out=quiet))
    assert quiet.read_text() == ""
    shorter = tmp_path / "shorter.txt"
    asyncio.run(_run(0.4, stall_dump_s=0.5, out=shorter))  # a stall under the threshold
    assert shorter.read_text() == ""
    off = tmp_path / "off.txt"
    asyncio.run(_run(0.7, stall_dump_s=0.0, out=off))
    assert off.read_text() == ""


class _NoFile:
    """A stream without a file descriptor (as Faust's stderr proxy)."""

    def write(self, text: str) -> int:
        return len(text)

    def fileno(self) -> int:
        raise NotImplementedError


def test_a_stream_without_a_descriptor_turns_the_dump_off_not_the_watcher(
        caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> float:
        before = loop_lag.max_lag.seconds
        watcher = asyncio.ensure_future(
            watch_loop_lag(0.01, stall_dump_s=0.2, dump_to=_NoFile()))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        _block_the_loop_for(before + 0.3)  # longer than any lag so far: a new maximum
        await asyncio.sleep(0.05)
        assert not watcher.done()  # still watching
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        return before

    with caplog.at_level(logging.WARNING, logger="streams.loop_lag"):
        before = asyncio.run(run())
    assert "stack dumps of event-loop stalls are off" in caplog.text
    assert loop_lag.max_lag.seconds >= before + 0.25
