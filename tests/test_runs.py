"""pipeline/runs.py: a run record written and read back on a local folder and on S3 (moto), and the
records it refuses to read."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any

import pytest

from pipeline.runs import (
    RUN_RECORD_VERSION,
    RunRecord,
    read_run_record,
    recorded_run_ids,
    run_record_key,
    write_run_record,
)
from pipeline.storage import OutputTarget

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def make_record(run_id: str = "run-1", **overrides: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "prompts": "s3://bucket/prompts.jsonl",
        "prompt_lines": 12,
        "clips": 10,
        "skipped": 4,
        "resumed": 1,
        "to_render": 5,
        "ok": 3,
        "failed": 1,
        "held": 0,
        "lost": 1,
        "started_at": T0,
        "finished_at": T0 + dt.timedelta(minutes=20),
        "wall_s": 1200.5,
        "exit_code": 1,
        "model": "tiny",
        "cache_policy": "deep-forcing",
        "workers": 2,
        "gpus_per_worker": 1.0,
    }
    return RunRecord(**(values | overrides))


def test_a_record_round_trips_under_runs_on_both_targets(target: OutputTarget) -> None:
    record = make_record()

    uri = write_run_record(target, record)

    assert uri == target.url_for("runs/run-1.json")
    assert target.list_keys("runs/") == ["runs/run-1.json"]
    assert read_run_record(target, "run-1") == record
    assert read_run_record(target, "run-2") is None
    stored = json.loads(target.read_bytes("runs/run-1.json"))
    assert stored["version"] == RUN_RECORD_VERSION and stored["started_at"] == "2026-12-01T09:00:00+00:00"
    write_run_record(target, make_record(exit_code=0))  # a rerun of the run id replaces its record
    assert read_run_record(target, "run-1") == make_record(exit_code=0)
    write_run_record(target, make_record("run-2"))
    assert recorded_run_ids(target) == ["run-1", "run-2"]


def test_a_record_lacking_a_field_added_later_takes_its_default() -> None:
    stored = json.loads(make_record().to_json())
    del stored["version"]  # the one field with a default today

    assert RunRecord.from_json(json.dumps(stored).encode(), "r.json") == make_record()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.pop("skipped"), "run record r.json lacks the field 'skipped'"),
        (lambda v: v.update(ok="3"), "run record r.json field 'ok' must be a JSON int, got '3'"),
        (lambda v: v.update(ok=True), "run record r.json field 'ok' must be a JSON int, got True"),
        (
            lambda v: v.update(started_at="2026-12-01 09:00"),
            "run record r.json field 'started_at' must be an ISO 8601 time with its UTC offset, got "
            "'2026-12-01 09:00'",
        ),
    ],
)
def test_a_damaged_record_is_refused_naming_the_field(change: Any, message: str) -> None:
    stored = json.loads(make_record().to_json())
    change(stored)
    with pytest.raises(ValueError) as refused:
        RunRecord.from_json(json.dumps(stored).encode(), "r.json")
    assert str(refused.value) == message


def test_an_unreadable_record_reads_as_none_with_a_warning(
    target: OutputTarget, caplog: pytest.LogCaptureFixture
) -> None:
    target.put_bytes(b'{"run_id": "run-1", ', "runs/run-1.json", "application/json")

    with caplog.at_level(logging.WARNING):
        assert read_run_record(target, "run-1") is None

    assert f"run record {target.url_for('runs/run-1.json')} is not JSON" in caplog.text
    assert "run run-1 is reported as a run without a record" in caplog.text


def test_record_keys_are_checked_run_ids() -> None:
    assert run_record_key("20261201T090000Z-ab12") == "runs/20261201T090000Z-ab12.json"
    with pytest.raises(ValueError, match=r"run_id='\.\./x' must be 1-128 letters"):
        run_record_key("../x")
    assert dataclasses.is_dataclass(RunRecord) and RunRecord.__dataclass_params__.frozen  # type: ignore[attr-defined]
