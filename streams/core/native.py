"""The scoring core compiled with mypyc: which modules, how to build them, and a stale-build guard.

``make native`` (part of ``make install``) runs ``python streams/core/native.py build`` (a
script, so that a stale build cannot stop its own rebuild: importing ``streams.core`` runs the
check below): mypyc
compiles :data:`NATIVE_MODULES` and the worker's per-event glue (:data:`WORKER_MODULES`, in
streams/) into extension modules next to their sources (``streams/core/*.so``,
``streams/*.so``, git-ignored) and records the SHA-256 of each source in
``streams/core/native-build.json``. Python imports an extension module in preference to the
``.py`` of the same name, so the worker, the tests and the bench run the compiled core; in the
engine bench it is about 1.45x faster (docs/performance.md). The sources stay the reference:
without a build (no C compiler, a plain wheel), the same modules run as Python.

Not compiled: ``state_wire.py`` (the state's msgspec decoders, whose types msgspec reads at run
time), the pydantic-based configuration modules and the ones off the hot path. The customer
state itself (``state.py``) is a plain class, compiled: its fields are C slots.

Compiled classes differ from Python ones in two ways that matter here: their methods cannot be
replaced on an instance (tests substitute whole objects instead), and a value of the wrong type
crossing a function boundary raises TypeError where Python would carry on. A profiler that reads
Python frames (py-spy) does not see inside compiled functions: ``make clean-native`` first.

Failure behaviour: a compiled module whose sources changed after the build would run the old
code. :func:`check`, run when ``streams.core`` is imported (a compiled worker module loads the
shared library in streams/core first, which imports it), compares the SHA-256 of every
``.py`` of streams/core and of each worker module with the manifest and raises
:class:`StaleNativeBuild` naming what changed and the fix. A failed build leaves no compiled
module behind (it cleans first and writes the manifest last). The ``.so`` files are
git-ignored, so they survive a checkout: before checking out a commit older than this module
(which had no check), run ``make clean-native``.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from pathlib import Path

NATIVE_MODULES = (
    "alert_ids", "alerting", "churn", "churn_model", "engine", "explanation", "identity",
    "idle_risk", "kept_signals", "outcome", "packed_arrays", "policy", "product_views",
    "rounding", "rule_evaluators", "rule_plan", "scoring", "seen_ids", "sentiment", "signals",
    "state", "windows",
)
# The worker's per-event glue around the core (streams/*.py), compiled with it: Faust-free.
# The Makefile lists their sources too (tests/unit/test_native_build.py checks both agree).
WORKER_MODULES = (
    "batch_observer", "deadlines", "expiry", "partitioner", "pipeline", "processing",
)
GROUP = "_native"  # the shared library of the compiled modules: streams/core/_native__mypyc*.so
# Plain C extension modules built with them: module name -> source (streams/huge_arenas.c:
# the worker's object arenas on huge pages, loaded by streams/huge_pages.py).
C_EXTENSIONS = {"streams._huge_arenas": "streams/huge_arenas.c"}
CORE_DIR = Path(__file__).resolve().parent
STREAMS_DIR = CORE_DIR.parent
MANIFEST = CORE_DIR / "native-build.json"


class StaleNativeBuild(ImportError):
    """A compiled module of streams/core is older than the sources it was built from."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources() -> dict[str, str]:
    """SHA-256 of every ``.py`` of streams/core (the compiled modules and what mypyc compiled
    them against: the state, the configuration), of the compiled worker modules and of the C
    extensions' sources."""
    sources = {p.name: _digest(p) for p in sorted(CORE_DIR.glob("*.py"))}
    for module in WORKER_MODULES:
        path = STREAMS_DIR / f"{module}.py"
        sources[f"streams/{module}.py"] = _digest(path) if path.exists() else ""
    for source in C_EXTENSIONS.values():
        path = STREAMS_DIR.parent / source
        sources[source] = _digest(path) if path.exists() else ""
    return sources


def _extension_files() -> list[Path]:
    """Every extension module in streams/core and streams (also of a module no longer
    listed)."""
    return sorted({p for suffix in importlib.machinery.EXTENSION_SUFFIXES
                   for folder in (CORE_DIR, STREAMS_DIR) for p in folder.glob(f"*{suffix}")})


def expected_modules() -> list[str]:
    """What a complete build compiles: the core, the worker modules, the C extensions."""
    return sorted({*NATIVE_MODULES, *WORKER_MODULES,
                   *(name.rsplit(".", 1)[1] for name in C_EXTENSIONS)})


def missing_modules() -> list[str]:
    """The modules of a complete build that have no extension module."""
    return sorted(set(expected_modules()) - set(compiled_modules()))


def compiled_modules() -> list[str]:
    """The modules of streams/core that have an extension module (a compiled build)."""
    stems = {p.name.split(".", 1)[0] for p in _extension_files()}
    return sorted(stems - {f"{GROUP}__mypyc"})


def stale_modules() -> list[str]:
    """Compiled modules that would not run the current sources: all of them when a source of
    streams/core changed since the build, or when the build is incomplete (no manifest)."""
    compiled = compiled_modules()
    if not compiled or _built_from() == _sources():
        return []
    return compiled


def _built_from() -> dict[str, str] | None:
    try:
        sources = json.loads(MANIFEST.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sources if isinstance(sources, dict) else None


def check() -> None:
    """Raise :class:`StaleNativeBuild` when a compiled module is older than its sources."""
    stale = stale_modules()
    if not stale:
        return
    built = _built_from()
    if built is None:
        why = "the build is incomplete (no streams/core/native-build.json)"
    else:
        current = _sources()
        changed = sorted(n for n in built.keys() | current.keys()
                         if built.get(n) != current.get(n))
        why = f"{', '.join(changed)} changed since the build"
    raise StaleNativeBuild(
        f"streams/core: {len(stale)} modules run compiled but {why}; run `make native` to "
        "rebuild (or `make clean-native` to run the Python sources)")


def clean() -> list[Path]:
    """Remove every compiled module of streams/core and the manifest; return what was removed."""
    removed = _extension_files()
    if MANIFEST.exists():
        removed.append(MANIFEST)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def build() -> None:
    """Compile :data:`NATIVE_MODULES` in place (setuptools ``build_ext --inplace``, run from
    the repository root, temporary files in ``build/native``), then write the manifest."""
    from mypyc.build import mypycify  # mypy is a development dependency
    from setuptools import Extension, setup

    root = CORE_DIR.parent.parent
    clean()
    sources = _sources()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        setup(
            name="cxsignals-native", py_modules=[],
            ext_modules=mypycify([f"streams/core/{m}.py" for m in NATIVE_MODULES]
                                 + [f"streams/{m}.py" for m in WORKER_MODULES],
                                 group_name=f"streams.core.{GROUP}", opt_level="3")
            + [Extension(name, [source], extra_compile_args=["-O2"])
               for name, source in C_EXTENSIONS.items()],
            script_args=["-q", "build_ext", "--inplace", "--build-temp", "build/native"],
        )
    finally:
        os.chdir(cwd)
    missing = missing_modules()
    if missing:
        raise RuntimeError(f"mypyc built no extension for {', '.join(missing)}")
    MANIFEST.write_text(json.dumps({"sources": sources}, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "build":
        build()
        print(f"compiled {len(NATIVE_MODULES)} modules of streams/core and "
              f"{len(WORKER_MODULES)} of streams with mypyc, {len(C_EXTENSIONS)} C extension")
    elif command == "clean":
        removed = clean()
        print(f"removed {len(removed)} files: streams/core runs as Python")
    elif command == "status":
        compiled, stale = compiled_modules(), stale_modules()
        state = "stale: " + ", ".join(stale) if stale else "up to date"
        print(f"{len(compiled)} of {len(expected_modules())} modules compiled"
              + (f" ({state})" if compiled else ""))
        return 1 if stale else 0
    elif command == "verify":
        missing, stale = missing_modules(), stale_modules()
        if missing or stale:
            print("not compiled: " + ", ".join(missing) if missing
                  else "stale: " + ", ".join(stale), file=sys.stderr)
            return 1
        print(f"all {len(expected_modules())} modules compiled and up to date")
    else:
        print("usage: python streams/core/native.py [build|clean|status|verify]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run as a script: its own directory is first on sys.path, where modules such as
    # ``policy`` or ``signals`` would shadow any of that name the build tools import.
    if sys.path and Path(sys.path[0] or ".").resolve() == CORE_DIR:
        sys.path.pop(0)
    sys.exit(main(sys.argv[1:]))
