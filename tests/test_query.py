"""pipeline/query.py: the views over a run's metrics, for a local folder and for S3 (moto), and its CLI."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from test_metrics import T0, make_row, three_clips
from test_runs import T0 as RUN_T0
from test_runs import make_record

from pipeline import query
from pipeline.metrics import compact_run, write_clip_metrics
from pipeline.runs import write_run_record
from pipeline.storage import OutputTarget
from pipeline.storage.local import LocalTarget


def out_of(target: OutputTarget) -> str:
    return str(target.root) if isinstance(target, LocalTarget) else target.uri


def settings_of(target: OutputTarget, request: pytest.FixtureRequest) -> query.S3Settings:
    if isinstance(target, LocalTarget):
        return query.S3Settings()
    return request.getfixturevalue("s3_moto").settings()


def a_failure_then_its_retry(target: OutputTarget) -> None:
    """Run 1: clip-a ok, clip-b failed, clip-c ok; run 2 (the rerun) retries clip-b, which is then ok."""
    three_clips(target, run_id="run-1")
    retry = make_row("clip-b", run_id="run-2", finished_at=T0 + dt.timedelta(hours=1))
    write_clip_metrics(target, retry)


def test_metrics_has_a_row_per_clip_and_run_and_clips_the_latest_row_of_each_clip(
    target: OutputTarget, request: pytest.FixtureRequest
) -> None:
    a_failure_then_its_retry(target)
    compact_run(target, "run-1")
    write_clip_metrics(target, make_row("clip-c", run_id="run-1"))  # a part beside the compacted file

    db = query.connect(out_of(target), settings_of(target, request))

    by_run = db.sql("SELECT run_id, clip_id, status FROM metrics ORDER BY ALL").fetchall()
    assert by_run == [
        ("run-1", "clip-a", "ok"),
        ("run-1", "clip-b", "failed"),
        ("run-1", "clip-c", "ok"),
        ("run-2", "clip-b", "ok"),
    ]
    latest = db.sql("SELECT clip_id, run_id, status FROM clips ORDER BY clip_id").fetchall()
    assert latest == [("clip-a", "run-1", "ok"), ("clip-b", "run-2", "ok"), ("clip-c", "run-1", "ok")]
    assert db.sql("SELECT status, count(*) FROM clips GROUP BY 1").fetchall() == [("ok", 3)]


def test_a_numeric_run_id_stays_a_string(tmp_path: Path) -> None:
    three_clips(LocalTarget(tmp_path), run_id="20261121")
    db = query.connect(str(tmp_path))
    assert db.sql("SELECT DISTINCT run_id FROM metrics").fetchall() == [("20261121",)]


def test_the_command_line_prints_a_table_csv_or_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_failure_then_its_retry(LocalTarget(tmp_path))
    sql = "SELECT clip_id, status FROM clips ORDER BY clip_id"

    assert query.main([sql, "--out", str(tmp_path)]) == query.EXIT_OK
    table = capsys.readouterr().out
    assert "clip_id" in table and "clip-b" in table and "failed" not in table

    assert query.main([sql, "--out", str(tmp_path), "--format", "csv"]) == query.EXIT_OK
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows == [["clip_id", "status"], ["clip-a", "ok"], ["clip-b", "ok"], ["clip-c", "ok"]]

    assert (
        query.main(
            [
                "SELECT clip_id, finished_at FROM metrics WHERE run_id = 'run-2'",
                "--out",
                str(tmp_path),
                "--format",
                "json",
            ]
        )
        == query.EXIT_OK
    )
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {"clip_id": "clip-b", "finished_at": "2026-11-21T13:00:00+00:00"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["SELECT 1", "--out", "{tmp}/nowhere"],
            "--out {tmp}/nowhere: no such folder; pass the --out of a render",
        ),
        (
            ["SELECT 1", "--out", "{tmp}"],
            "{tmp} has no metrics files under metrics/; pass the --out a render",
        ),
    ],
)
def test_an_out_without_metrics_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, argv: list[str], message: str
) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert query.main(argv) == query.EXIT_FAILED
    assert caplog.messages[0].startswith(message.format(tmp=tmp_path))
    assert not (tmp_path / "nowhere").exists()  # a query never creates folders


def test_bad_sql_names_the_views(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    three_clips(LocalTarget(tmp_path))
    assert query.main(["SELECT nope FROM clips", "--out", str(tmp_path)]) == query.EXIT_FAILED
    assert 'Referenced column "nope" not found' in caplog.messages[0]
    assert caplog.messages[0].endswith(
        "the views are metrics, clips and runs; DESCRIBE clips lists the columns"
    )


def test_runs_has_a_row_per_run_record_and_its_columns_even_with_none(
    target: OutputTarget, request: pytest.FixtureRequest
) -> None:
    three_clips(target, run_id="run-1")  # a run from before records: no record
    described = "SELECT column_name, column_type FROM (DESCRIBE runs)"
    columns = query.connect(out_of(target), settings_of(target, request)).sql(described).fetchall()
    assert ("skipped", "BIGINT") in columns and ("started_at", "TIMESTAMP WITH TIME ZONE") in columns
    write_run_record(target, make_record("run-1"))
    write_run_record(target, make_record("run-2", skipped=10, exit_code=0))

    db = query.connect(out_of(target), settings_of(target, request))

    assert db.sql(described).fetchall() == columns
    sql = "SELECT run_id, skipped, exit_code, wall_s, epoch(started_at) FROM runs ORDER BY run_id"
    assert db.sql(sql).fetchall() == [
        ("run-1", 4, 1, 1200.5, RUN_T0.timestamp()),
        ("run-2", 10, 0, 1200.5, RUN_T0.timestamp()),
    ]
    joined = "SELECT r.run_id, r.skipped, count(*) FROM runs r JOIN metrics m USING (run_id) GROUP BY ALL"
    assert db.sql(joined).fetchall() == [("run-1", 4, 3)]
