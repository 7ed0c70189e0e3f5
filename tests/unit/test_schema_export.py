"""The published JSON Schemas are fresh, valid, and agree with the models and the docs."""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cxsignals import schema_cmd
from cxsignals.settings import Settings
from schemas.event_records import Event
from schemas.events import EVENT_TYPES
from schemas.export import (
    ENVELOPE_FILE,
    SCHEMA_DIR,
    TOUCHPOINT_FILE,
    export_json_schemas,
    schema_id,
)
from streams.core.deadletter import DEAD_LETTER_HEADERS
from streams.core.validation import ErrorCode, validate_event

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "events.md"
JSON_BLOCK = re.compile(r"^```json\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return schema


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name))


def doc_examples() -> list[dict[str, Any]]:
    return [json.loads(block) for block in JSON_BLOCK.findall(DOCS.read_text(encoding="utf-8"))]


def survey(score: int, survey: str = "csat", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "event_type": "survey_answer",
        "schema_version": 1,
        "occurred_at": "2026-11-23T10:15:00Z",
        "customer_id": "c-1",
        "channel": "web",
        "properties": {"survey": survey, "score": score},
    }
    event.update(overrides)
    return event


def test_committed_schemas_match_a_fresh_export(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path)
    fresh = {path.name: path.read_text(encoding="utf-8") for path in written}
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    hint = "schemas/json is stale: run `cxsignals schema export schemas/json` and commit"
    assert sorted(committed) == sorted(fresh), hint
    for name, text in fresh.items():
        assert committed[name] == text, f"{name}: {hint}"


def test_export_is_deterministic_and_complete(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "b")}
    assert first == second
    expected = {f"{t}.schema.json" for t in EVENT_TYPES} | {ENVELOPE_FILE, TOUCHPOINT_FILE}
    assert set(first) == expected
    for name, raw in first.items():
        assert raw.endswith(b"}\n"), name
        parsed = json.loads(raw)
        assert list(parsed) == sorted(parsed), f"{name}: keys not sorted"


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMA_DIR.glob("*.json")))
def test_each_schema_is_a_valid_2020_12_schema_with_metadata(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == schema_id(name.removesuffix(".schema.json"))
    assert schema["title"] and schema["description"]


def test_every_event_type_has_a_docs_example() -> None:
    documented = [example["event_type"] for example in doc_examples()]
    assert sorted(set(documented)) == sorted(EVENT_TYPES)


@pytest.mark.parametrize("example", doc_examples(), ids=lambda e: str(e.get("event_type")))
def test_docs_example_is_valid_for_the_pipeline_and_the_schemas(example: dict[str, Any]) -> None:
    value = json.dumps(example).encode()
    result = validate_event(value, now=datetime.now(timezone.utc))
    assert isinstance(result, Event), result
    for name in (f"{example['event_type']}.schema.json", ENVELOPE_FILE, TOUCHPOINT_FILE):
        errors = [error.message for error in validator(name).iter_errors(example)]
        assert errors == [], f"{name}: {errors}"


@pytest.mark.parametrize(
    ("survey_name", "score", "valid"),
    [
        ("nps", 0, True),
        ("nps", 10, True),
        ("nps", 11, False),
        ("csat", 0, False),
        ("csat", 5, True),
        ("csat", 6, False),
        ("ces", 7, True),
        ("ces", 8, False),
    ],
)
def test_survey_scales_are_in_the_schemas(survey_name: str, score: int, valid: bool) -> None:
    event = survey(score, survey_name)
    for name in ("survey_answer.schema.json", TOUCHPOINT_FILE):
        assert validator(name).is_valid(event) is valid, name
    pipeline = validate_event(json.dumps(event).encode(), now=datetime.now(timezone.utc))
    assert isinstance(pipeline, Event) is valid


@pytest.mark.parametrize("name", ["survey_answer.schema.json", ENVELOPE_FILE, TOUCHPOINT_FILE])
def test_identity_rule_is_in_the_schemas(name: str) -> None:
    check = validator(name)
    assert check.is_valid(survey(3, customer_id=None, anonymous_id="a-1"))
    assert not check.is_valid(survey(3, customer_id=None))
    assert not check.is_valid(survey(3, customer_id=None, anonymous_id=None))


def test_envelope_rejects_unknown_event_type_and_accepts_extra_fields() -> None:
    check = validator(ENVELOPE_FILE)
    assert not check.is_valid(survey(3, event_type="signup"))
    assert check.is_valid(survey(3, added_later={"any": "thing"}))


def test_schema_export_command_writes_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    schema_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["schema", "export", str(tmp_path / "out")])
    assert args.func(args, Settings()) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    out = capsys.readouterr()
    assert out.out.splitlines() == [str(tmp_path / "out" / name) for name in written]
    assert f"wrote {len(written)} schemas" in out.err


def test_schema_export_command_reports_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    parser = argparse.ArgumentParser()
    schema_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["schema", "export", str(blocker / "schemas")])
    assert args.func(args, Settings()) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write schemas to {blocker}")


def test_docs_list_every_error_code_and_header() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [code.value for code in ErrorCode if f"| `{code.value}` |" not in text]
    missing += [name for name in DEAD_LETTER_HEADERS if f"| `{name}` |" not in text]
    assert missing == []
