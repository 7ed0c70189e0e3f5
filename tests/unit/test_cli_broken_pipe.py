"""A reader that closes the pipe early (``cxsignals ... | head``) ends the command quietly.

Each case runs the real CLI in a subprocess whose stdout is a pipe; the test reads one line,
closes its end, and checks the exit code and that stderr holds no traceback or error.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cxsignals.cli import EXIT_BROKEN_PIPE

REPO = Path(__file__).resolve().parents[2]


def _read_one_line_then_close(command: list[str]) -> tuple[bytes, int, str]:
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `head -1`: the command still has far more than a pipe buffer
    stderr = proc.stderr.read().decode("utf-8", "replace")
    return first, proc.wait(timeout=120), stderr


def _assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "BrokenPipeError" not in stderr and "Broken pipe" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def test_validate_into_a_closed_pipe_exits_141_without_an_error(tmp_path: Path) -> None:
    # 50,000 invalid lines, one verdict each (~2.4 MB): far more than a pipe holds.
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n" * 50_000)
    first, code, stderr = _read_one_line_then_close(
        [sys.executable, "-m", "cxsignals.cli", "validate", str(events)]
    )
    assert first.startswith(b"1: schema_violation")
    assert code == EXIT_BROKEN_PIPE == 141
    _assert_quiet(stderr)  # before the fix: "error: cannot read ...: Broken pipe", exit 2


def test_any_command_that_prints_into_a_closed_pipe_exits_141_without_a_traceback() -> None:
    """The handler sits in cli.main, around every command (acls list, tail, dlq show, state
    show, report, ...): here a command registered like them that prints a million lines."""
    body = textwrap.dedent(
        """
        import sys, types
        from cxsignals import cli

        def flood(args, settings):
            for n in range(1_000_000):
                print(f"line {n}")
            return 0

        module = types.ModuleType("flood_cmd")
        module.add_parser = lambda sub: sub.add_parser("flood").set_defaults(func=flood)
        sys.modules["flood_cmd"] = module
        cli.COMMAND_MODULES += ("flood_cmd",)
        sys.exit(cli.main(["flood"]))
        """
    )
    first, code, stderr = _read_one_line_then_close([sys.executable, "-c", body])
    assert first == b"line 0\n"
    assert code == EXIT_BROKEN_PIPE
    _assert_quiet(stderr)

