"""pipeline/metrics.py: schema checks, per-clip files, the readers users rely on, compaction, resume."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import arrow_filesystem

from pipeline.metrics import (
    METRICS_SCHEMA,
    RUN_PARTITIONING,
    SCHEMA_VERSION,
    SECONDS_SCHEMA,
    SECONDS_SCHEMA_VERSION,
    compact_run,
    done_clip_ids,
    metrics_key,
    read_metrics,
    read_seconds,
    rows_to_table,
    seconds_key,
    seconds_to_table,
    thumbnail_key,
    video_key,
    write_clip_metrics,
    write_clip_seconds,
)
from pipeline.query import httpfs_extension_path
from pipeline.storage import OutputTarget
from pipeline.storage.local import LocalTarget

T0 = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def make_row(clip_id: str, status: str = "ok", run_id: str = "run-1", **overrides: Any) -> dict[str, Any]:
    """A complete, realistic row; failed rows carry the error and no video."""
    prompt = f"a red fox running through snow, clip {clip_id}"
    row: dict[str, Any] = {
        "run_id": run_id,
        "clip_id": clip_id,
        "attempt": 1,
        "status": status,
        "prompt": prompt,
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
        "seed": 1234567890123,
        "model": "tiny",
        "model_sha": None,
        "config_hash": "cfg0123456789abc",
        "cache_policy": "deep-forcing",
        "cache_telemetry": {"evictions": 12, "sink_frames": 10},
        "num_latent_frames": 21,
        "num_frames": 81,
        "width": 832,
        "height": 480,
        "fps": 16.0,
        "t_load_s": 3.5,
        "t_generate_s": 40.25,
        "t_decode_s": 5.0,
        "t_total_s": 61.0,
        "gen_fps": 2.0,
        "node": "node-a",
        "gpu": "NVIDIA H100 80GB HBM3",
        "worker_pid": 4242,
        "started_at": T0,
        "finished_at": T0 + dt.timedelta(seconds=61),
    }
    if status == "ok":
        row |= {
            "t_encode_s": 6.0,
            "t_upload_s": 1.5,
            "bytes": 11_000_000,
            "video_uri": f"s3://bucket/run/clips/{clip_id}.mp4",
            "sha256": hashlib.sha256(clip_id.encode()).hexdigest(),
            "checksum": "q1w2e3r4=",
            "peak_gpu_mem_gb": 21.5,
        }
    elif status == "failed":
        row |= {"error_type": "RuntimeError", "error": "CUDA error: an illegal memory access was encountered"}
    return row | overrides


def segment_signals(**values: Any) -> dict[str, Any]:
    """One entry of segment_signals: every field null but `values`."""
    fields = METRICS_SCHEMA.field("segment_signals").type.value_type
    return {field.name: None for field in fields} | values


def three_clips(target: OutputTarget, run_id: str = "run-1") -> list[dict[str, Any]]:
    rows = [make_row("clip-a", run_id=run_id), make_row("clip-b", "failed", run_id=run_id)]
    rows.append(make_row("clip-c", run_id=run_id, finished_at=T0 + dt.timedelta(seconds=90)))
    for row in rows:
        write_clip_metrics(target, row)
    return rows


# ---------------------------------------------------------------------------------------------
# Schema and keys
# ---------------------------------------------------------------------------------------------


def test_metrics_key_is_a_hive_partition_per_run_and_a_file_per_clip() -> None:
    assert metrics_key("run-2026.11_21", "a1b2c3") == "metrics/run_id=run-2026.11_21/part-a1b2c3.parquet"
    assert video_key("a1b2c3") == "clips/a1b2c3.mp4"


@pytest.mark.parametrize(
    ("run_id", "clip_id", "bad"), [("run 1", "a", "run_id='run 1'"), ("r", "../x", "clip_id='../x'")]
)
def test_metrics_key_rejects_ids_that_are_not_safe_in_a_key(run_id: str, clip_id: str, bad: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        metrics_key(run_id, clip_id)
    assert str(excinfo.value) == (
        f'{bad} must be 1-128 letters, digits, "_", "." or "-", not starting with "." (it becomes part of '
        "an object key), e.g. 'run-2026-11-21' or 'a1b2c3d4e5f60718'"
    )
    for hidden in ("..", ".run"):
        with pytest.raises(ValueError, match="not starting with"):
            metrics_key(hidden, "a")


def test_rows_to_table_matches_the_schema_and_fills_missing_nullable_columns() -> None:
    table = rows_to_table([make_row("clip-a"), make_row("clip-b", "failed")])

    assert table.schema == METRICS_SCHEMA
    assert table.schema.metadata == {b"schema_version": str(SCHEMA_VERSION).encode()}
    assert table.column("bytes").to_pylist() == [11_000_000, None]
    assert table.column("cache_telemetry").to_pylist()[0] == '{"evictions": 12, "sink_frames": 10}'
    assert table.column("started_at").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"gpu_temp_c": 71},
            "metrics row 0 (clip_id='clip-a') has unknown column(s) ['gpu_temp_c']; the columns are "
            "METRICS_SCHEMA.names (add a new column there, nullable, and bump SCHEMA_VERSION)",
        ),
        ({"seed": None}, "metrics row 0 (clip_id='clip-a') is missing required column 'seed'"),
        (
            {"width": 832.5},
            "metrics row 0 (clip_id='clip-a'): column 'width' must be an integer in [-32768, 32767], "
            "got 832.5",
        ),
        (
            {"width": 70000},
            "metrics row 0 (clip_id='clip-a'): column 'width' must be an integer in [-32768, 32767], "
            "got 70000",
        ),
        (
            {"started_at": dt.datetime(2026, 11, 21, 12, 0)},
            "metrics row 0 (clip_id='clip-a'): column 'started_at' must be a timezone-aware datetime, "
            "e.g. datetime.now(timezone.utc), got datetime.datetime(2026, 11, 21, 12, 0)",
        ),
        (
            {"status": "done"},
            "metrics row 0 (clip_id='clip-a'): status='done' must be one of ok, failed, skipped",
        ),
        ({"video_uri": None}, "metrics row 0 (clip_id='clip-a') has status='ok' but no video_uri"),
        (
            {"status": "failed"},
            "metrics row 0 (clip_id='clip-a') has status='failed' but no error_type, error",
        ),
        (
            {"segments": [{"prompt": "a fox", "first_frame": 0}]},
            "metrics row 0 (clip_id='clip-a'): column 'segments[]' must be an object with the keys "
            "['prompt', 'first_frame', 'last_frame'], got {'prompt': 'a fox', 'first_frame': 0}",
        ),
        (
            {"segments": [{"prompt": "a fox", "first_frame": 0, "last_frame": 8.5}]},
            "metrics row 0 (clip_id='clip-a'): column 'segments[].last_frame' must be an integer in "
            "[-2147483648, 2147483647], got 8.5",
        ),
        (
            {"segments": "a fox"},
            "metrics row 0 (clip_id='clip-a'): column 'segments' must be a list, got 'a fox'",
        ),
        (
            {"segment_signals": [segment_signals(switch_cut=1)]},
            "metrics row 0 (clip_id='clip-a'): column 'segment_signals[].switch_cut' must be True or "
            "False, got 1",
        ),
        (
            {
                "segments": [
                    {"prompt": "a fox", "first_frame": 0, "last_frame": 40},
                    {"prompt": "a lake", "first_frame": 41, "last_frame": 80},
                ],
                "segment_signals": [segment_signals()],
            },
            "metrics row 0 (clip_id='clip-a'): segment_signals has length 1 but segments has length 2; "
            "entry i holds the quality signals of segments[i], one per segment (pipeline.worker.rows."
            "quality_columns)",
        ),
        (
            {"segment_signals": [segment_signals()]},
            "metrics row 0 (clip_id='clip-a'): segment_signals has length 1 but segments is null; entry "
            "i holds the quality signals of segments[i], one per segment (pipeline.worker.rows."
            "quality_columns)",
        ),
        (
            {"cache_telemetry": "{not json"},
            "metrics row 0 (clip_id='clip-a'): cache_telemetry is not valid JSON (Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1)); pass a dict or a JSON string",
        ),
    ],
)
def test_rows_to_table_rejects_bad_rows_naming_row_column_and_value(
    overrides: dict[str, Any], message: str
) -> None:
    row = make_row("clip-a")
    row.update(overrides)
    with pytest.raises(ValueError) as excinfo:
        rows_to_table([row])
    assert str(excinfo.value) == message


# ---------------------------------------------------------------------------------------------
# Writing and reading back, through every reader users have
# ---------------------------------------------------------------------------------------------


def duckdb_for(target: OutputTarget, request: pytest.FixtureRequest) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A connection that can read the target, and the glob of its metrics files."""
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    if isinstance(target, LocalTarget):
        return con, f"{target.root}/metrics/**/*.parquet"
    s3_moto = request.getfixturevalue("s3_moto")
    env = request.getfixturevalue("aws_test_env")
    con.execute(f"LOAD '{httpfs_extension_path()}'")
    con.execute(
        f"""CREATE SECRET moto (TYPE s3, KEY_ID '{env["AWS_ACCESS_KEY_ID"]}',
        SECRET '{env["AWS_SECRET_ACCESS_KEY"]}', ENDPOINT '{s3_moto.endpoint_hostport}',
        URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"""
    )
    return con, f"{target.uri}/metrics/**/*.parquet"


def test_written_rows_read_back_with_read_metrics(target: OutputTarget) -> None:
    rows = three_clips(target)

    table = read_metrics(target)

    assert table.schema == METRICS_SCHEMA
    assert table.num_rows == 3
    assert table.to_pylist() == rows_to_table(rows).to_pylist()
    assert read_metrics(target, run_id="run-1").num_rows == 3
    assert read_metrics(target, run_id="run-2").num_rows == 0
    assert target.list_keys("metrics/") == [
        "metrics/run_id=run-1/part-clip-a.parquet",
        "metrics/run_id=run-1/part-clip-b.parquet",
        "metrics/run_id=run-1/part-clip-c.parquet",
    ]


def test_each_part_file_is_zstd_parquet_carrying_the_schema_version(target: OutputTarget) -> None:
    uri = write_clip_metrics(target, make_row("clip-a"))

    assert uri == target.url_for("metrics/run_id=run-1/part-clip-a.parquet")
    file = pq.ParquetFile(io.BytesIO(target.read_bytes("metrics/run_id=run-1/part-clip-a.parquet")))
    assert file.schema_arrow.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
    assert file.metadata.row_group(0).column(0).compression == "ZSTD"


def test_duckdb_reads_the_hive_layout(target: OutputTarget, request: pytest.FixtureRequest) -> None:
    three_clips(target)
    three_clips(target, run_id="20261121")  # a numeric-looking run id stays a string with hive_types
    con, glob = duckdb_for(target, request)

    result = con.execute(
        f"""SELECT run_id, status, count(*), max(error) FROM read_parquet('{glob}', hive_partitioning=true,
        union_by_name=true, hive_types={{'run_id': 'VARCHAR'}}) GROUP BY ALL ORDER BY ALL"""
    ).fetchall()

    error = "CUDA error: an illegal memory access was encountered"
    assert result == [
        ("20261121", "failed", 1, error),
        ("20261121", "ok", 2, None),
        ("run-1", "failed", 1, error),
        ("run-1", "ok", 2, None),
    ]


STORY_SEGMENTS = [
    {"prompt": "a fox walks through snow", "first_frame": 0, "last_frame": 320},
    {"prompt": "the fox reaches a frozen lake", "first_frame": 321, "last_frame": 632},
]


def test_a_storyboards_segments_are_a_list_column_that_duckdb_and_polars_unnest(
    target: OutputTarget, request: pytest.FixtureRequest
) -> None:
    rows = three_clips(target)
    write_clip_metrics(target, make_row("story", segments=STORY_SEGMENTS))
    con, glob = duckdb_for(target, request)

    result = con.execute(
        f"""SELECT clip_id, s.prompt, s.first_frame, s.last_frame FROM (SELECT clip_id, unnest(segments) AS s
        FROM read_parquet('{glob}', union_by_name=true) WHERE clip_id = 'story') ORDER BY s.first_frame"""
    ).fetchall()

    assert result == [("story", *segment.values()) for segment in STORY_SEGMENTS]
    assert read_metrics(target).column("segments").to_pylist() == [None] * len(rows) + [STORY_SEGMENTS]
    if isinstance(target, LocalTarget):
        frame = pl.read_parquet(f"{target.root}/metrics/run_id=run-1/part-story.parquet")
        exploded = frame.select("segments").explode("segments").unnest("segments")
        assert exploded.to_dicts() == STORY_SEGMENTS


STORY_SIGNALS = [
    segment_signals(motion_level=30.0, flicker_spikes=0, motion_mean=4.0, motion_max=9.0),
    segment_signals(
        motion_level=0.5,
        flicker_spikes=0,
        motion_mean=0.125,
        motion_max=0.375,
        switch_step=52.0,
        switch_ratio=6.5,
        switch_cut=True,
    ),
]


def test_each_segments_signals_are_a_list_column_beside_segments_that_duckdb_and_polars_unnest(
    target: OutputTarget, request: pytest.FixtureRequest
) -> None:
    three_clips(target)  # rows without the column
    write_clip_metrics(target, make_row("story", segments=STORY_SEGMENTS, segment_signals=STORY_SIGNALS))
    con, glob = duckdb_for(target, request)

    result = con.execute(
        f"""SELECT s.prompt, q.motion_level, q.switch_cut FROM (SELECT unnest(segments) AS s,
        unnest(segment_signals) AS q FROM read_parquet('{glob}', union_by_name=true))
        ORDER BY s.first_frame"""
    ).fetchall()

    assert result == [
        ("a fox walks through snow", 30.0, None),
        ("the fox reaches a frozen lake", 0.5, True),
    ]
    assert read_metrics(target).column("segment_signals").to_pylist()[-1] == STORY_SIGNALS
    if isinstance(target, LocalTarget):
        frame = pl.read_parquet(f"{target.root}/metrics/run_id=run-1/part-story.parquet")
        exploded = frame.select("segments", "segment_signals").explode("segments", "segment_signals")
        rows = exploded.unnest("segments").unnest("segment_signals").to_dicts()
        assert [(r["prompt"], r["switch_cut"], r["motion_level"]) for r in rows] == [
            ("a fox walks through snow", None, 30.0),
            ("the fox reaches a frozen lake", True, 0.5),
        ]


def test_the_segment_signals_are_the_clip_signal_columns_and_the_switch() -> None:
    fields = METRICS_SCHEMA.field("segment_signals").type.value_type
    signals = [field for field in fields if not field.name.startswith("switch_")]
    assert all(METRICS_SCHEMA.field(field.name) == field for field in signals)
    assert [f.name for f in fields if f.name.startswith("switch_")] == [
        "switch_step",
        "switch_ratio",
        "switch_cut",
    ]


def test_pyarrow_dataset_reads_the_hive_layout(target: OutputTarget) -> None:
    three_clips(target, run_id="20261121")  # pyarrow's "hive" guess would make this int32 and fail
    filesystem, base = arrow_filesystem(target)

    dataset = ds.dataset(
        f"{base}/metrics", filesystem=filesystem, format="parquet", partitioning=RUN_PARTITIONING
    )
    table = dataset.to_table(filter=ds.field("run_id") == "20261121")

    assert sorted(table.column("clip_id").to_pylist()) == ["clip-a", "clip-b", "clip-c"]
    assert table.schema.field("run_id").type == pa.string()


def test_polars_reads_the_hive_layout(target: OutputTarget, request: pytest.FixtureRequest) -> None:
    three_clips(target, run_id="20261121")
    if isinstance(target, LocalTarget):
        source, options = f"{target.root}/metrics/**/*.parquet", None
    else:
        s3_moto = request.getfixturevalue("s3_moto")
        source = f"{target.uri}/metrics/**/*.parquet"
        options = {
            "aws_endpoint_url": s3_moto.endpoint_url,
            "aws_allow_http": "true",
            "aws_region": "us-east-1",
        }

    frame = (
        pl.scan_parquet(source, hive_partitioning=True, storage_options=options)
        .group_by("run_id", "status")
        .agg(pl.len().alias("n"), pl.col("gen_fps").mean())
        .sort("status")
        .collect()
    )

    assert frame.to_dicts() == [
        {"run_id": "20261121", "status": "failed", "n": 1, "gen_fps": 2.0},
        {"run_id": "20261121", "status": "ok", "n": 2, "gen_fps": 2.0},
    ]


def test_pandas_reads_the_metrics_folder(target: OutputTarget) -> None:
    three_clips(target)
    three_clips(target, run_id="20261121")
    filesystem, base = arrow_filesystem(target)

    frame = pd.read_parquet(
        f"{base}/metrics",
        filesystem=filesystem,
        partitioning=RUN_PARTITIONING,
        filters=[("run_id", "==", "run-1")],
    )

    assert sorted(frame["clip_id"]) == ["clip-a", "clip-b", "clip-c"]
    assert frame.loc[frame["status"] == "failed", "error_type"].tolist() == ["RuntimeError"]
    assert str(frame["started_at"].dtype) == "datetime64[us, UTC]"


def test_rewriting_a_clip_row_replaces_it(target: OutputTarget, request: pytest.FixtureRequest) -> None:
    write_clip_metrics(target, make_row("clip-a", "failed"))
    retry = make_row("clip-a", attempt=2, finished_at=T0 + dt.timedelta(minutes=5))
    write_clip_metrics(target, retry)

    assert target.list_keys("metrics/") == ["metrics/run_id=run-1/part-clip-a.parquet"]
    table = read_metrics(target)
    assert table.select(["clip_id", "attempt", "status"]).to_pylist() == [
        {"clip_id": "clip-a", "attempt": 2, "status": "ok"}
    ]
    con, glob = duckdb_for(target, request)
    assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)").fetchone() == (
        1,
    )


def test_read_metrics_of_an_empty_target_is_an_empty_table_with_the_schema(target: OutputTarget) -> None:
    table = read_metrics(target)

    assert table.num_rows == 0
    assert table.schema == METRICS_SCHEMA


def test_read_metrics_reads_files_from_older_and_newer_schema_versions(target: OutputTarget) -> None:
    full = rows_to_table([make_row("clip-old"), make_row("clip-new")])
    older = full.slice(0, 1).drop_columns(["peak_gpu_mem_gb", "checksum"])  # columns added "later"
    newer = full.slice(1, 1).append_column("gpu_temp_c", pa.array([71.0]))  # a column added "after" us
    for table, clip in [(older, "clip-old"), (newer, "clip-new")]:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        target.put_bytes(buffer.getvalue(), metrics_key("run-1", clip), "application/vnd.apache.parquet")

    table = read_metrics(target)

    assert table.schema == METRICS_SCHEMA
    assert table.column("peak_gpu_mem_gb").to_pylist() == [21.5, None]  # sorted: clip-new, clip-old
    assert table.column("clip_id").to_pylist() == ["clip-new", "clip-old"]


def test_a_storyboard_row_of_version_5_reads_back_with_null_segment_signals(
    target: OutputTarget, request: pytest.FixtureRequest
) -> None:
    full = rows_to_table(
        [
            make_row("story-v5", segments=STORY_SEGMENTS),
            make_row("story-v6", segments=STORY_SEGMENTS, segment_signals=STORY_SIGNALS),
        ]
    )
    old = full.slice(0, 1).drop_columns(["segment_signals"]).replace_schema_metadata({"schema_version": "5"})
    for table, clip in [(old, "story-v5"), (full.slice(1, 1), "story-v6")]:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        target.put_bytes(buffer.getvalue(), metrics_key("run-1", clip), "application/vnd.apache.parquet")

    assert read_metrics(target).column("segment_signals").to_pylist() == [None, STORY_SIGNALS]
    con, glob = duckdb_for(target, request)
    result = con.execute(
        f"""SELECT clip_id, s.first_frame, q.switch_cut FROM (SELECT clip_id, unnest(segments) AS s,
        unnest(segment_signals) AS q FROM read_parquet('{glob}', union_by_name=true)) ORDER BY ALL"""
    ).fetchall()
    # the old row's segments unnest beside nulls: its segments are there, their signals unknown
    assert result == [
        ("story-v5", 0, None),
        ("story-v5", 321, None),
        ("story-v6", 0, None),
        ("story-v6", 321, True),
    ]


# ---------------------------------------------------------------------------------------------
# Compaction and resume
# ---------------------------------------------------------------------------------------------


def test_compact_run_leaves_one_file_with_the_same_rows(target: OutputTarget) -> None:
    three_clips(target)
    three_clips(target, run_id="run-2")
    before = read_metrics(target, "run-1")

    uri = compact_run(target, "run-1")

    assert uri == target.url_for("metrics/run_id=run-1/compacted-1.parquet")
    assert target.list_keys("metrics/run_id=run-1/") == ["metrics/run_id=run-1/compacted-1.parquet"]
    assert read_metrics(target, "run-1").equals(before)
    assert read_metrics(target, "run-2").num_rows == 3  # other runs untouched
    assert compact_run(target, "run-1") == uri  # already compact: nothing rewritten
    assert compact_run(target, "run-9") is None


def test_compacting_again_merges_new_parts_and_the_latest_row_wins(target: OutputTarget) -> None:
    three_clips(target)
    compact_run(target, "run-1")
    retry = make_row("clip-b", attempt=2, finished_at=T0 + dt.timedelta(minutes=10))
    write_clip_metrics(target, retry)  # clip-b failed, was compacted, then succeeded
    write_clip_metrics(target, make_row("clip-d"))

    uri = compact_run(target, "run-1")

    assert uri == target.url_for("metrics/run_id=run-1/compacted-2.parquet")
    assert target.list_keys("metrics/") == ["metrics/run_id=run-1/compacted-2.parquet"]
    table = read_metrics(target, "run-1")
    assert table.select(["clip_id", "attempt", "status"]).to_pylist() == [
        {"clip_id": "clip-a", "attempt": 1, "status": "ok"},
        {"clip_id": "clip-b", "attempt": 2, "status": "ok"},
        {"clip_id": "clip-c", "attempt": 1, "status": "ok"},
        {"clip_id": "clip-d", "attempt": 1, "status": "ok"},
    ]


def test_readers_see_no_duplicates_while_merged_file_and_parts_coexist(target: OutputTarget) -> None:
    rows = three_clips(target)
    compact_run(target, "run-1")
    for row in rows:  # the state between compaction's write and its deletes: every row twice on disk
        write_clip_metrics(target, row)
    assert len(target.list_keys("metrics/")) == 4

    table = read_metrics(target)

    assert table.to_pylist() == rows_to_table(rows).to_pylist()


class CompactsDuringFirstRead(LocalTarget):
    """A target whose first read runs a compaction of the same folder: the race a reader can meet."""

    compacted = False

    def read_bytes(self, key: str) -> bytes:
        if not self.compacted:
            self.compacted = True
            compact_run(LocalTarget(self.root), "run-1")
        return super().read_bytes(key)


def test_read_metrics_lists_again_when_a_compaction_deletes_files_under_it(tmp_path: Path) -> None:
    target = CompactsDuringFirstRead(tmp_path / "out")
    rows = three_clips(target)

    table = read_metrics(target)

    assert target.compacted
    assert target.list_keys("metrics/") == ["metrics/run_id=run-1/compacted-1.parquet"]
    assert table.to_pylist() == rows_to_table(rows).to_pylist()


def test_done_clip_ids_needs_an_ok_row_and_the_video(target: OutputTarget) -> None:
    write_clip_metrics(target, make_row("has-both"))
    write_clip_metrics(target, make_row("no-video"))
    write_clip_metrics(target, make_row("failed-with-video", "failed"))
    write_clip_metrics(target, make_row("ok-in-an-earlier-run", run_id="run-0"))
    write_clip_metrics(target, make_row("ok-in-an-earlier-run", "failed", run_id="run-1"))
    for clip in ["has-both", "failed-with-video", "ok-in-an-earlier-run", "video-only"]:
        target.put_bytes(b"mp4", video_key(clip), "video/mp4")

    assert done_clip_ids(target) == {"has-both", "ok-in-an-earlier-run"}


# ---------------------------------------------------------------------------------------------
# The per-second table and thumbnails beside the videos
# ---------------------------------------------------------------------------------------------


def seconds_of(clip_id: str, count: int, attempt: int = 1, run_id: str = "run-1") -> list[dict[str, Any]]:
    """A clip's per-second rows, as the worker writes them (values that say which second they are)."""
    return [
        {"run_id": run_id, "clip_id": clip_id, "attempt": attempt, "second": s, "frames": 16}
        | {
            "flicker_mae": 1.0 + s,
            "flicker_spikes": 0,
            "motion_level": 10.0 * attempt,
            "best_match_second": None,
        }
        for s in range(count)
    ]


def test_seconds_and_thumbnail_keys_sit_beside_the_metrics_and_the_video() -> None:
    assert seconds_key("run-1", "a1b2") == "seconds/run_id=run-1/part-a1b2.parquet"
    assert thumbnail_key("a1b2", "middle") == "clips/a1b2.middle.jpg"
    with pytest.raises(ValueError, match="thumbnail position 'centre' must be one of first, middle, last"):
        thumbnail_key("a1b2", "centre")


def test_per_second_rows_are_written_per_clip_read_sorted_and_compacted_with_the_metrics(
    target: OutputTarget,
) -> None:
    three_clips(target)
    write_clip_seconds(target, seconds_of("clip-c", 3))
    write_clip_seconds(target, seconds_of("clip-a", 2))
    before = read_seconds(target, "run-1")
    assert before.schema == SECONDS_SCHEMA
    assert before.schema.metadata == {b"schema_version": str(SECONDS_SCHEMA_VERSION).encode()}
    pairs = [(r["clip_id"], r["second"]) for r in before.to_pylist()]
    assert pairs == [("clip-a", 0), ("clip-a", 1), ("clip-c", 0), ("clip-c", 1), ("clip-c", 2)]

    compact_run(target, "run-1")

    assert target.list_keys("seconds/") == ["seconds/run_id=run-1/compacted-1.parquet"]
    assert read_seconds(target, "run-1").equals(before)
    write_clip_seconds(target, seconds_of("clip-c", 3, attempt=2))  # a retry after the compaction
    compact_run(target, "run-1")
    levels = {(r["clip_id"], r["second"]): r["motion_level"] for r in read_seconds(target).to_pylist()}
    assert levels[("clip-c", 2)] == 20.0 and levels[("clip-a", 1)] == 10.0 and len(levels) == 5


def test_duckdb_joins_the_per_second_table_to_the_metrics(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    three_clips(target)
    write_clip_seconds(target, seconds_of("clip-a", 4))
    query = f"""
        SELECT m.clip_id, m.cache_policy, count(*) AS seconds, max(s.flicker_mae) AS worst
        FROM read_parquet('{target.root}/seconds/**/*.parquet', hive_partitioning=true,
                          hive_types={{'run_id': 'VARCHAR'}}) s
        JOIN read_parquet('{target.root}/metrics/**/*.parquet', hive_partitioning=true, union_by_name=true,
                          hive_types={{'run_id': 'VARCHAR'}}) m USING (run_id, clip_id)
        GROUP BY ALL"""
    assert duckdb.sql(query).fetchall() == [("clip-a", "deep-forcing", 4, 4.0)]


def test_per_second_rows_are_checked_like_metrics_rows(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"per-second row 0 \(clip_id='c'\): column 'second' must be an integer"
    ):
        seconds_to_table([{"run_id": "r", "clip_id": "c", "attempt": 1, "second": 1.5, "frames": 16}])
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['fps'\].*bump SECONDS_SCHEMA_VERSION"):
        seconds_to_table(
            [{"run_id": "r", "clip_id": "c", "attempt": 1, "second": 1, "frames": 16, "fps": 16.0}]
        )
    with pytest.raises(ValueError, match="must be of one run and clip"):
        write_clip_seconds(LocalTarget(tmp_path), seconds_of("a", 1) + seconds_of("b", 1))
