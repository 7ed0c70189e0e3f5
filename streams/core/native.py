"""The scoring core compiled with mypyc: which modules, how to build them, and a stale-build guard.

``make native`` (part of ``make install``) runs ``python streams/core/native.py build`` (a
script, so that a stale build cannot stop its own rebuild: importing ``streams.core`` runs the
check below): mypyc
compiles :data:`NATIVE_MODULES` into extension modules next to their sources
(``streams/core/*.so``, git-ignored) and records the SHA-256 of each source in
``streams/core/native-build.json``. Python imports an extension module in preference to the
``.py`` of the same name, so the worker, the tests and the bench run the compiled core; in the
engine bench it is about 1.45x faster (docs/performance.md). The sources stay the reference:
without a build (no C compiler, a plain wheel), the same modules run as Python.

Not compiled: ``state.py`` (a msgspec Struct, whose field types msgspec reads from the class at
run time), the pydantic-based configuration modules and the ones off the hot path.

Compiled classes differ from Python ones in two ways that matter here: their methods cannot be
replaced on an instance (tests substitute whole objects instead), and a value of the wrong type
crossing a function boundary raises TypeError where Python would carry on. A profiler that reads
Python frames (py-spy) does not see inside compiled functions: ``make clean-native`` first.

Failure behaviour: a compiled module whose source changed after the build would run the old
code; :func:`check`, run when ``streams.core`` is imported, raises :class:`StaleNativeBuild`
naming the modules and the fix instead.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from pathlib import Path

NATIVE_MODULES = (
    "alert_ids", "alerting", "churn", "churn_model", "engine", "explanation", "idle_risk",
    "outcome", "policy", "rule_evaluators", "rule_plan", "scoring", "signals", "windows",
)
GROUP = "_native"  # the shared library of the compiled modules: streams/core/_native__mypyc*.so
CORE_DIR = Path(__file__).resolve().parent
MANIFEST = CORE_DIR / "native-build.json"


class StaleNativeBuild(ImportError):
    """A compiled module of streams/core is older than its source."""


def _digest(module: str) -> str:
    return hashlib.sha256((CORE_DIR / f"{module}.py").read_bytes()).hexdigest()


def _extensions(stem: str) -> list[Path]:
    return [p for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (p := CORE_DIR / f"{stem}{suffix}").exists()]


def compiled_modules() -> list[str]:
    """The modules of :data:`NATIVE_MODULES` that have an extension module next to them."""
    return [m for m in NATIVE_MODULES if _extensions(m)]


def stale_modules() -> list[str]:
    """Compiled modules whose source is not the one they were built from."""
    compiled = compiled_modules()
    if not compiled:
        return []
    try:
        built = json.loads(MANIFEST.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return compiled
    return [m for m in compiled if built.get(m) != _digest(m)]


def check() -> None:
    """Raise :class:`StaleNativeBuild` when a compiled module is older than its source."""
    stale = stale_modules()
    if stale:
        raise StaleNativeBuild(
            f"streams/core: the compiled {', '.join(stale)} no longer match their sources; "
            "run `make native` to rebuild (or `make clean-native` to run the Python sources)")


def clean() -> list[Path]:
    """Remove the compiled modules, their shared library and the manifest; return them."""
    removed = [p for m in (*NATIVE_MODULES, f"{GROUP}__mypyc") for p in _extensions(m)]
    if MANIFEST.exists():
        removed.append(MANIFEST)
    for path in removed:
        path.unlink()
    return removed


def build() -> None:
    """Compile :data:`NATIVE_MODULES` in place (setuptools ``build_ext --inplace``, run from
    the repository root, temporary files in ``build/native``), then write the manifest."""
    from mypyc.build import mypycify  # mypy is a development dependency
    from setuptools import setup

    root = CORE_DIR.parent.parent
    clean()
    sources = {m: _digest(m) for m in NATIVE_MODULES}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        setup(
            name="cxsignals-native", py_modules=[],
            ext_modules=mypycify([f"streams/core/{m}.py" for m in NATIVE_MODULES],
                                 group_name=f"streams.core.{GROUP}", opt_level="3"),
            script_args=["-q", "build_ext", "--inplace", "--build-temp", "build/native"],
        )
    finally:
        os.chdir(cwd)
    missing = [m for m in NATIVE_MODULES if not _extensions(m)]
    if missing:
        raise RuntimeError(f"mypyc built no extension for {', '.join(missing)}")
    MANIFEST.write_text(json.dumps({"sources": sources}, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "build":
        build()
        print(f"compiled {len(NATIVE_MODULES)} modules of streams/core with mypyc")
    elif command == "clean":
        removed = clean()
        print(f"removed {len(removed)} files: streams/core runs as Python")
    elif command == "status":
        compiled, stale = compiled_modules(), stale_modules()
        state = "stale: " + ", ".join(stale) if stale else "up to date"
        print(f"{len(compiled)} of {len(NATIVE_MODULES)} modules compiled"
              + (f" ({state})" if compiled else ""))
        return 1 if stale else 0
    else:
        print("usage: python streams/core/native.py [build|clean|status]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run as a script: its own directory is first on sys.path, where modules such as
    # ``policy`` or ``signals`` would shadow any of that name the build tools import.
    if sys.path and Path(sys.path[0] or ".").resolve() == CORE_DIR:
        sys.path.pop(0)
    sys.exit(main(sys.argv[1:]))
