"""The mypyc build of the scoring core: a compiled module older than its source is refused."""

from __future__ import annotations

import importlib.machinery
import json
import os
from pathlib import Path

import pytest

from streams.core import native


@pytest.fixture()
def core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake streams/core with two of the native modules and a fake streams with one worker
    module, all 'compiled'."""
    streams = tmp_path
    core = tmp_path / "core"
    core.mkdir()
    monkeypatch.setattr(native, "CORE_DIR", core)
    monkeypatch.setattr(native, "STREAMS_DIR", streams)
    monkeypatch.setattr(native, "MANIFEST", core / "native-build.json")
    monkeypatch.setattr(native, "NATIVE_MODULES", ("engine", "policy"))
    monkeypatch.setattr(native, "WORKER_MODULES", ("processing",))
    monkeypatch.setattr(native, "C_EXTENSIONS", {})
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in ("engine", "policy", "state"):  # state_wire.py: compiled against, not compiled
        (core / f"{module}.py").write_text(f"X = '{module}'\n")
    (streams / "processing.py").write_text("X = 'processing'\n")
    (streams / "app.py").write_text("X = 'not compiled'\n")
    for module in ("engine", "policy", "_native__mypyc"):
        (core / f"{module}{suffix}").write_bytes(b"\x7fELF")
    (streams / f"processing{suffix}").write_bytes(b"\x7fELF")
    (core / "native-build.json").write_text(json.dumps({"sources": native._sources()}))
    return core


def test_a_build_that_matches_its_sources_passes(core: Path) -> None:
    assert native.compiled_modules() == ["engine", "policy", "processing"]
    assert native.stale_modules() == []
    native.check()
    (core.parent / "app.py").write_text("X = 'edited, not compiled'\n")
    assert native.stale_modules() == []  # only the compiled worker modules are guarded


@pytest.mark.parametrize("edited", ["policy.py", "state.py", "../processing.py"])
def test_a_source_changed_after_the_build_is_refused_with_the_fix(core: Path, edited: str
                                                                   ) -> None:
    (core / edited).write_text("X = 'edited'\n")
    assert native.stale_modules() == ["engine", "policy", "processing"]
    edited = edited.replace("../", "streams/")
    with pytest.raises(native.StaleNativeBuild, match=rf"{edited} changed .*make native"):
        native.check()


def test_a_build_without_its_manifest_is_incomplete(core: Path) -> None:
    (core / "native-build.json").unlink()
    assert native.stale_modules() == ["engine", "policy", "processing"]
    with pytest.raises(native.StaleNativeBuild, match="incomplete"):
        native.check()


def test_clean_removes_every_extension_and_the_manifest(core: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (core / f"dropped{suffix}").write_bytes(b"\x7fELF")  # a module no longer compiled
    removed = native.clean()
    assert {p.name for p in removed} == {f"engine{suffix}", f"policy{suffix}",
                                         f"_native__mypyc{suffix}", f"dropped{suffix}",
                                         f"processing{suffix}", "native-build.json"}
    assert native.compiled_modules() == [] and native.stale_modules() == []
    assert (core / "engine.py").exists() and (core.parent / "processing.py").exists()


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI builds the core (make install)")
def test_ci_runs_the_compiled_core() -> None:
    import streams.core.engine as engine

    assert Path(engine.__file__ or "").suffix == ".so"
    c_modules = tuple(name.rsplit(".", 1)[1] for name in native.C_EXTENSIONS)
    assert native.compiled_modules() == sorted(native.NATIVE_MODULES + native.WORKER_MODULES
                                               + c_modules)


def test_the_makefile_rebuilds_when_a_compiled_worker_module_changes() -> None:
    """The Makefile's native stamp lists the compiled worker sources; one missing there would
    leave the guard asking for a `make native` that rebuilds nothing."""
    makefile = (Path(native.__file__).resolve().parents[2] / "Makefile").read_text()
    rule = makefile.replace("\\\n", " ").split("$(NATIVE_STAMP):", 1)[1].split("\n", 1)[0]
    listed = {part[len("streams/"):-len(".py")] for part in rule.split()
              if part.startswith("streams/") and part.endswith(".py") and "*" not in part}
    assert listed == set(native.WORKER_MODULES)
    c_sources = {part for part in rule.split() if part.endswith(".c")}
    assert c_sources == set(native.C_EXTENSIONS.values())


def _repo() -> Path:
    return Path(native.__file__).resolve().parents[2]


@pytest.mark.skipif(not native.compiled_modules() and os.environ.get("CI") != "true",
                    reason="make native compiles the core (CI does)")
def test_a_wheel_packed_after_the_build_installs_the_compiled_core(tmp_path: Path) -> None:
    """What deploy/Dockerfile does: the sources as its build stage copies them, compiled, packed
    with `pip wheel`; installed elsewhere without the sources, the package runs compiled and
    the stale-build guard agrees with it."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo, src = _repo(), tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    for package in ("cxsignals", "streams", "schemas", "sinks"):
        shutil.copytree(repo / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    packed = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                             "--wheel-dir", str(wheels), str(src)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert packed.returncode == 0, packed.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "streams/huge_arenas.c" in names and "streams/core/native-build.json" in names
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in native.NATIVE_MODULES:
        assert f"streams/core/{module}.py" in names and f"streams/core/{module}{suffix}" in names
    for module in native.WORKER_MODULES:
        assert f"streams/{module}{suffix}" in names
    assert f"streams/_huge_arenas{suffix}" in names

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    script = ("import streams.core.engine as e, streams.pipeline as p\n"
              "from streams.core import native\n"
              "print(e.__file__); print(p.__file__); raise SystemExit(native.main(['verify']))")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    engine_file, pipeline_file, verdict = done.stdout.strip().splitlines()
    assert engine_file.startswith(str(site)) and engine_file.endswith(suffix)
    assert pipeline_file.startswith(str(site)) and pipeline_file.endswith(suffix)
    assert verdict.startswith(f"all {len(native.expected_modules())} modules compiled")


def test_verify_names_what_is_missing(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert native.main(["verify"]) == 0
    assert "all 3 modules compiled and up to date" in capsys.readouterr().out
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (core / f"policy{suffix}").unlink()
    assert native.main(["verify"]) == 1
    assert "not compiled: policy" in capsys.readouterr().err
