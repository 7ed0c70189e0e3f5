"""The worker's object arenas on huge pages (streams/huge_pages.py, streams/huge_arenas.c)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streams.huge_pages import thp_mode, use_huge_pages

REPO = Path(__file__).resolve().parents[2]


def _compiled() -> bool:
    try:
        importlib.import_module("streams._huge_arenas")
    except ImportError:
        return False
    return True


def test_the_mode_is_the_bracketed_word(tmp_path: Path) -> None:
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n")
    assert thp_mode(enabled) == "madvise"
    enabled.write_text("always madvise [never]\n")
    assert thp_mode(enabled) == "never"
    assert use_huge_pages(enabled) == (
        f"huge pages: off (transparent huge pages are 'never' in {enabled})")
    enabled.write_text("garbled\n")
    assert thp_mode(enabled) is None
    assert thp_mode(tmp_path / "missing") is None
    assert use_huge_pages(tmp_path / "missing").startswith("huge pages: off (no ")


@pytest.mark.skipif(not _compiled() and os.environ.get("CI") != "true",
                    reason="make native builds streams._huge_arenas (CI does)")
def test_arenas_come_from_madvised_chunks_and_are_reused(tmp_path: Path) -> None:
    """In a fresh interpreter: after install, pymalloc's arenas come from our chunks (marked
    for huge pages in /proc/self/smaps), freed arenas are reused rather than mapped again (the
    resident ones first), and the objects on them behave (a dict/str-heavy workload, built,
    freed and built again)."""
    enabled = tmp_path / "enabled"
    enabled.write_text("always [madvise] never\n")  # whatever the host's mode: install
    script = textwrap.dedent(f"""
        import importlib, json
        from pathlib import Path
        from streams.huge_pages import use_huge_pages
        line = use_huge_pages(Path({str(enabled)!r}))
        arenas = importlib.import_module("streams._huge_arenas")
        def build():
            return [{{"k" + str(i): str(i) * 3, "n": i}} for i in range(300_000)]
        first = build()
        total = sum(d["n"] for d in first)
        after_first = arenas.stats()
        del first
        freed = arenas.stats()
        small = [{{"k" + str(i): str(i) * 3, "n": i}} for i in range(30_000)]
        after_small = arenas.stats()
        del small
        second = build()
        assert sum(d["n"] for d in second) == total
        after_second = arenas.stats()
        start = after_second["last_chunk_start"]
        flags = None
        lines = Path("/proc/self/smaps").read_text().splitlines()
        for i, row in enumerate(lines):
            fields = row.split()
            if "-" in fields[0] and len(fields) >= 5:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= start < hi:
                    flags = next(r for r in lines[i + 1:] if r.startswith("VmFlags:"))
                    break
        print(json.dumps({{"line": line, "first": after_first, "freed": freed,
                          "small": after_small, "second": after_second, "flags": flags}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["line"].startswith("huge pages: on")
    first, freed, second = report["first"], report["freed"], report["second"]
    assert first["installed"] and first["arenas_served"] >= 20  # ~100 MiB of small objects
    assert freed["free_arenas"] >= 80  # the workload's arenas came back for reuse
    # beyond the 64 kept resident, the older frees gave their pages back
    assert freed["pages_given_back"] >= freed["free_arenas"] - 64 >= 16
    # a small build is served the resident arenas, not the given-back ones
    small = report["small"]
    assert small["reused_resident"] - freed["reused_resident"] >= 5
    assert small["reused_given_back"] == freed["reused_given_back"]
    assert small["chunks_mapped"] == freed["chunks_mapped"]
    # the second build reused them: few or no new chunks, most arenas from the free list
    assert second["chunks_mapped"] <= first["chunks_mapped"] + 1
    assert second["arenas_served"] - first["arenas_served"] >= 20
    assert " hg" in report["flags"]  # MADV_HUGEPAGE on the chunk (VmFlags "hg")


def test_an_allocator_that_serves_no_arena_is_reported_off(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Python whose arenas are not 1 MiB the allocator passes every request through: the
    log line must not claim huge pages."""
    enabled = tmp_path / "enabled"
    enabled.write_text("[always] madvise never\n")
    installs: list[bool] = []

    class PassThrough:
        @staticmethod
        def install() -> bool:
            installs.append(True)
            return True

        @staticmethod
        def stats() -> dict[str, int]:
            return {"arenas_served": 0}

    monkeypatch.setitem(sys.modules, "streams._huge_arenas", PassThrough)
    line = use_huge_pages(enabled)
    assert installs == [True]
    assert line.startswith("huge pages: off (installed, but pymalloc asked for no arena")
