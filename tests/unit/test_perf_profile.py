"""The perf summary of the bench (bench/perf_profile.py) on hand-written ``perf script`` text."""

from __future__ import annotations

from bench.perf_profile import NO_OWNER, libraries, owners, parse

LIB = "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"
NATIVE = "/work/main/streams/core/_native__mypyc.cpython-311-x86_64-linux-gnu.so"
MSGSPEC = "/work/main/.venv/lib/python3.11/site-packages/msgspec/_core.cpython-311-x86_64-linux-gnu.so"  # noqa: E501

# Four samples of the event-loop thread (tid 100) and one of another thread (101):
# 1. a dict look-up called by the engine, inside the pipeline: owned by the engine;
# 2. the engine's own code: owned by it; its Python-callable wrapper is the same function;
# 3. msgspec called by interpreted code called by the pipeline: owned by the pipeline;
# 4. interpreted code with no compiled frame: owned by nobody, charged to libpython.
PERF_SCRIPT = f"""\
  100
\t          1a2b _Py_dict_lookup ({LIB})
\t          3c4d CPyDef_engine___Engine___process ({NATIVE})
\t          5e6f CPyPy_engine___Engine___process ({NATIVE})
\t          7a8b CPyDef_pipeline___ScoringPipeline____one ({NATIVE})

  100
\t          3c4e CPyDef_engine___Engine___process ({NATIVE})
\t          7a8c CPyDef_pipeline___ScoringPipeline____one ({NATIVE})

  100
\t          9999 json_decode (inlined)
\t          9999 json_decode_struct ({MSGSPEC})
\t          1111 _PyEval_EvalFrameDefault ({LIB})
\t          7a8d CPyDef_pipeline___ScoringPipeline____one ({NATIVE})

  100
\t          2222 _PyEval_EvalFrameDefault ({LIB})
\t          3333 [unknown] ([unknown])

  101
\t          4444 epoll_wait (/usr/lib/x86_64-linux-gnu/libc.so.6)
"""


def test_perf_script_text_parses_into_samples_leaf_first() -> None:
    samples = parse(PERF_SCRIPT.splitlines())
    assert [s.tid for s in samples] == [100, 100, 100, 100, 101]
    assert samples[0].frames[0] == ("_Py_dict_lookup", "libpython3.11.so.1.0")
    assert samples[2].frames[0] == ("json_decode", "inlined")
    assert samples[3].frames[-1] == ("[unknown]", "[unknown]")


def test_each_sample_is_owned_by_its_nearest_compiled_function() -> None:
    lines = {line.function: line for line in owners(parse(PERF_SCRIPT.splitlines()), tid=100)}
    engine = lines["[compiled] engine:Engine.process"]
    assert (engine.self_pct, engine.total_pct) == (50.0, 50.0)  # samples 1 and 2, once each
    one = lines["[compiled] pipeline:ScoringPipeline._one"]
    assert (one.self_pct, one.total_pct) == (25.0, 75.0)
    assert lines[f"{NO_OWNER} libpython3.11.so.1.0"].self_pct == 25.0
    assert sum(line.self_pct for line in lines.values()) == 100.0
    # every thread: the other thread's sample counts too
    assert {line.function: line.self_pct for line in owners(
        parse(PERF_SCRIPT.splitlines()))}[f"{NO_OWNER} libc.so.6"] == 20.0


def test_libraries_charge_an_inlined_leaf_to_the_library_it_was_inlined_into() -> None:
    shares = dict(libraries(parse(PERF_SCRIPT.splitlines()), tid=100))
    assert shares == {"libpython3.11.so.1.0": 50.0,
                      "_native__mypyc.cpython-311-x86_64-linux-gnu.so": 25.0,
                      "_core.cpython-311-x86_64-linux-gnu.so": 25.0}
