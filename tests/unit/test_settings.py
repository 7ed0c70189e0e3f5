"""The CLI reads settings once and hands each part what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxsignals.settings import Settings
from sinks.config import ClickHouseParams, SinkConfig
from streams.app import build_engine
from streams.config import STALL_DUMP_S, WorkerConfig
from streams.pipeline import PipelineLimits


def test_the_worker_config_carries_the_scoring_settings_into_the_engine() -> None:
    settings = Settings(grace_s=120, half_life_days=7.0, score_publish_step=5.0,
                        topic_touchpoints="t.in", app_id="a1", touchpoint_partitions=6,
                        checkpoint_interval_ms=250, state_dir=Path("/tmp/x"))
    config = settings.worker_config()
    engine = build_engine(config)
    assert (engine.config.grace_s, engine.config.half_life_days,
            engine.config.score_publish_step) == (120, 7.0, 5.0)
    assert engine.config.half_life_s == 7 * 86_400
    assert config.topics.touchpoints == "t.in" and config.keyed_topic == "a1.touchpoints.keyed"
    assert config.touchpoint_partitions == 6 and config.checkpoint_interval_ms == 250
    assert config.kafka_broker_url == "kafka://127.0.0.1:9092"


def test_the_checkpoint_interval_has_one_default_everywhere() -> None:
    """CX_CHECKPOINT_INTERVAL_MS unset: the worker, a WorkerConfig built directly (tests, the
    bench) and a PipelineLimits built directly checkpoint equally often."""
    limits = PipelineLimits(partitions=4, max_event_bytes=1 << 20, max_future_skew_s=300)
    default_ms = Settings.model_fields["checkpoint_interval_ms"].default  # the environment aside
    assert default_ms == WorkerConfig().checkpoint_interval_ms == limits.checkpoint_s * 1000
    default_events = Settings.model_fields["checkpoint_events"].default
    assert default_events == WorkerConfig().checkpoint_events == limits.checkpoint_events


def test_the_checkpoint_event_count_is_handed_to_the_worker() -> None:
    """CX_CHECKPOINT_EVENTS reaches the worker's config (streams/app.py hands it to the
    pipeline's limits); a count below one is refused."""
    assert Settings(checkpoint_events=120_000).worker_config().checkpoint_events == 120_000
    with pytest.raises(ValueError, match="checkpoint_events"):
        Settings(checkpoint_events=0)


def test_the_fetch_limits_have_one_default_everywhere() -> None:
    """CX_FETCH_MIN_BYTES / CX_FETCH_MAX_WAIT_MS unset: the worker's settings and a WorkerConfig
    built directly (tests, the bench) coalesce fetches alike, and the settings hand theirs on."""
    fields = Settings.model_fields  # the defaults, the environment aside
    defaults = (fields["fetch_min_bytes"].default, fields["fetch_max_wait_ms"].default)
    assert defaults == (WorkerConfig().fetch_min_bytes, WorkerConfig().fetch_max_wait_ms)
    assert defaults == (1024 * 1024, 80)
    config = Settings(fetch_min_bytes=4096, fetch_max_wait_ms=7).worker_config()
    assert (config.fetch_min_bytes, config.fetch_max_wait_ms) == (4096, 7)


def test_the_sink_config_has_its_own_group_and_the_clickhouse_target() -> None:
    settings = Settings(app_id="a2", clickhouse_url="clickhouse://u:p%40ss@ch:9001/db1",
                        topic_scores="s.out", sink_batch_ms=100)
    config = settings.sink_config()
    assert config.group_id == "a2-store" and config.batch_ms == 100
    assert config.clickhouse == ClickHouseParams("ch", 9001, "u", "p@ss", "db1")
    assert "p@ss" not in repr(config)
    assert "s.out" in config.topics.outputs()


def test_a_malformed_clickhouse_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as raised:
        ClickHouseParams.from_url("http://user:s3cret@host:8123/db")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(ValueError) as raised:
        ClickHouseParams.from_url("clickhouse://user:s3cret@host:notaport/db")
    assert "s3cret" not in str(raised.value)


def test_the_sink_dead_letter_topic_is_a_setting_namespaced_and_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cxsignals.settings import namespaced_env
    from cxsignals.topics_cmd import TOPIC_MAX_MESSAGE_BYTES, topic_specs

    assert Settings().sink_config().topics.sink_dead_letters == "cx.sink.dlq"
    monkeypatch.setenv("CX_TOPIC_SINK_DLQ", "ops.sink.rejects")
    settings = Settings()
    assert settings.sink_config().topics.sink_dead_letters == "ops.sink.rejects"
    (spec,) = [s for s in topic_specs(settings) if s.name == "ops.sink.rejects"]
    assert spec.config["max.message.bytes"] == TOPIC_MAX_MESSAGE_BYTES  # holds any record
    env = namespaced_env("p1", kafka_bootstrap="k:1", clickhouse_url="clickhouse://h:1/cx",
                         database="d", state_dir=Path("/tmp/s"))
    assert env["CX_TOPIC_SINK_DLQ"] == "p1.sink.dlq"


def test_the_worker_loads_the_churn_params_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from streams.core.churn_model import PUBLISHED, ChurnParamsError

    fitted = replace(PUBLISHED, risk=replace(PUBLISHED.risk, intercept=0.5, horizon_days=60.0))
    path = tmp_path / "params.json"
    fitted.save(path)
    monkeypatch.setenv("CX_CHURN_PARAMS_PATH", str(path))
    monkeypatch.setenv("CX_CHURN_HORIZON_DAYS", "60")
    engine = build_engine(Settings().worker_config())
    assert engine.config.churn_model == fitted and engine.config.churn_horizon_days == 60.0
    assert engine._churn_risk.model == fitted
    # a params file fitted for another horizon, or a broken one, stops the start
    monkeypatch.setenv("CX_CHURN_HORIZON_DAYS", "90")
    with pytest.raises(ValueError, match="refit"):
        build_engine(Settings().worker_config())
    path.write_text("{")
    with pytest.raises(ChurnParamsError, match="not valid JSON"):
        build_engine(Settings().worker_config())
    monkeypatch.delenv("CX_CHURN_PARAMS_PATH")
    assert build_engine(Settings().worker_config()).config.churn_model is PUBLISHED


def test_readme_documents_every_setting() -> None:
    """Each setting's environment name appears in README's configuration table."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if alias is not None else f"CX_{name.upper()}"  # type: ignore[union-attr]
        if f"`{env}`" not in table:
            missing.append(env)
    assert not missing, f"settings missing from README's table: {missing}"


def test_the_stall_dump_threshold_has_one_default_and_reaches_worker_and_sink() -> None:
    assert Settings().stall_dump_s == WorkerConfig().stall_dump_s == SinkConfig().stall_dump_s
    assert Settings().stall_dump_s == STALL_DUMP_S > 0
    settings = Settings(stall_dump_s=0.5)
    assert settings.worker_config().stall_dump_s == settings.sink_config().stall_dump_s == 0.5


def test_the_worker_pipeline_checkpoints_by_the_configured_interval_and_count(
        tmp_path: Path) -> None:
    import asyncio

    from streams.app import create_worker

    async def build() -> PipelineLimits:
        worker = create_worker(WorkerConfig(state_dir=tmp_path, checkpoint_interval_ms=1234,
                                            checkpoint_events=4321))
        return worker.pipeline.limits

    limits = asyncio.run(build())
    assert (limits.checkpoint_s, limits.checkpoint_events) == (1.234, 4321)
