"""Per-clip metrics: one explicit, versioned Parquet schema; one small file per clip; compaction.

Layout under an OutputTarget:

    clips/<clip_id>.mp4
    clips/<clip_id>.<first|middle|last>.jpg             thumbnails, beside the video
    metrics/run_id=<run_id>/part-<clip_id>.parquet       one row, written after the upload succeeded
    metrics/run_id=<run_id>/compacted-<n>.parquet        many rows, written by compact_run
    seconds/run_id=<run_id>/part-<clip_id>.parquet       the clip's quality signals, one row per second
    seconds/run_id=<run_id>/compacted-<n>.parquet        (SECONDS_SCHEMA; compacted with the metrics)

The part key is deterministic, so a retried clip overwrites its row instead of adding one. run_id is
stored in the file as well as in the path, so a copied file still says which run it came from.

Querying: `python -m pipeline.query` (pipeline/query.py) gives users views over this layout, local or
S3, offline. Reading the files directly (each checked in tests/test_metrics.py):

    DuckDB   SELECT status, count(*), avg(gen_fps)
             FROM read_parquet('<out>/metrics/**/*.parquet', hive_partitioning=true, union_by_name=true,
                               hive_types={'run_id': 'VARCHAR'}) GROUP BY 1
             (hive_types stops DuckDB from turning a numeric run id such as 20261121 into BIGINT)
    polars   pl.scan_parquet("<out>/metrics/**/*.parquet", hive_partitioning=True)
    pandas   pd.read_parquet("<out>/metrics", partitioning=RUN_PARTITIONING)
    pyarrow  pyarrow.dataset.dataset("<out>/metrics", format="parquet", partitioning=RUN_PARTITIONING)
             (pyarrow's own hive discovery guesses run_id's type from the folder names: int32 for
             20261121, a dictionary under pandas; both then clash with the string column in the files)

Raw globs read every file as it is: between compact_run's write of the merged file and its delete of
the parts (a few requests), a raw glob can count a clip twice. read_metrics never does (it keeps the
latest row per run and clip), and no reader ever sees fewer rows than were written. The per-second
table reads the same way (`read_seconds`; DuckDB: '<out>/seconds/**/*.parquet'), and joins the
metrics on (run_id, clip_id).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import numbers
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.spec.clip import ID_RULE, is_valid_id
from pipeline.storage import OutputTarget

log = logging.getLogger(__name__)

SCHEMA_VERSION = 7  # bump when columns are added; old files stay readable (missing columns read as null)
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
# "skipped" is never written to the table: it is how a worker tells the driver that another run owns a
# clip (worker/claims.py).
STATUSES = ("ok", "failed", "skipped")
_READ_THREADS = 8  # parallel GETs when reading many small part files
_READ_RETRIES = 5  # re-list when a listed file vanished (a compaction deleted it meanwhile)

SEGMENTS_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("first_frame", pa.int32(), nullable=False),
            pa.field("last_frame", pa.int32(), nullable=False),
        ]
    )
)

# The per-clip quality signals: columns of the metrics row, and fields of each of its segment_signals.
V2_SIGNALS = [
    pa.field("motion_mean", pa.float32()),  # mean step between frames: ~0 means frozen
    pa.field("motion_max", pa.float32()),  # largest step: spikes far above the mean = flicker
    pa.field("luma_drift", pa.float32()),  # |brightness_drift|; v3 fixes it for clips under 10 s
]
V3_SIGNALS = [
    pa.field("temporal_flickering", pa.float32()),  # VBench's (255 - MAE of consecutive frames) / 255
    pa.field("flicker_spikes", pa.int32()),  # frame steps far above the steps around them
    pa.field("dynamic_degree", pa.float32()),  # VBench's rule on Farneback flow at 8 fps: 0 or 1
    pa.field("moving_fraction", pa.float32()),  # share of 8 fps pairs over VBench's threshold
    pa.field("motion_level", pa.float32()),  # top-5% flow magnitude, full-frame px per second
    pa.field("motion_decay", pa.float32()),  # (early - late) / max of the motion level, -1..1
    pa.field("saturation_drift", pa.float32()),  # last 5 s - first 5 s (half the clip if < 10 s)
    pa.field("brightness_drift", pa.float32()),
    pa.field("colourfulness_drift", pa.float32()),
    pa.field("sharpness_drift", pa.float32()),  # relative change of the Laplacian variance
    pa.field("start_similarity", pa.float32()),  # late frames vs the first window, -1..1
    pa.field("rollback", pa.float32()),  # largest return towards the first frames, 0..2
    pa.field("rollback_second", pa.int32()),  # the second it had come halfway back
]
SEGMENT_SIGNALS_TYPE = pa.list_(
    pa.struct(
        [
            *V2_SIGNALS,
            *V3_SIGNALS,
            # The step into the segment's first frame; null for the first segment (no switch)
            pa.field("switch_step", pa.float32()),  # mean absolute difference from the frame before, 0-255
            pa.field("switch_ratio", pa.float32()),  # that step / the median step within 0.5 s of it
            pa.field("switch_cut", pa.bool_()),  # switch_ratio over 3 (flicker_spikes' rule): a visible jump
        ]
    )
)

# Types never change once released. A new column is appended here, nullable, with SCHEMA_VERSION bumped
# and the version that added it in its comment, so files written before it read back with nulls.
METRICS_SCHEMA = pa.schema(
    [
        # 1. Identity and outcome
        pa.field("run_id", pa.string(), nullable=False),  # also the hive key: metrics/run_id=<run_id>/
        pa.field("clip_id", pa.string(), nullable=False),  # deterministic; video at clips/<clip_id>.mp4
        pa.field("attempt", pa.int16(), nullable=False),  # 1 for the first try of this clip in this run
        pa.field("status", pa.string(), nullable=False),  # ok | failed (skipped: to the driver only)
        pa.field("error_type", pa.string()),  # exception class name; set when status = failed
        pa.field("error", pa.string()),  # error text; set when status = failed
        # 2. What was asked for
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("prompt_sha256", pa.string(), nullable=False),  # hex sha256 of the UTF-8 prompt
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # preset name: self-forcing-1.3b, tiny, ...
        pa.field("model_sha", pa.string()),  # checkpoint digest; null for random weights
        pa.field("config_hash", pa.string(), nullable=False),  # hash of the render config
        pa.field("cache_policy", pa.string(), nullable=False),  # fifo, sink, deep-forcing, ...
        pa.field("cache_telemetry", pa.string()),  # JSON object reported by the cache policy
        # 3. Shape of the video
        pa.field("num_latent_frames", pa.int32(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),  # pixel frames = 1 + 4 * (latent - 1)
        pa.field("width", pa.int16(), nullable=False),
        pa.field("height", pa.int16(), nullable=False),
        pa.field("fps", pa.float32(), nullable=False),
        # 4. Timings (seconds) and speed; null where the clip never got that far
        pa.field("t_load_s", pa.float64()),  # model load charged to this clip (first clip of an actor)
        pa.field("t_generate_s", pa.float64()),
        pa.field("t_decode_s", pa.float64()),
        pa.field("t_encode_s", pa.float64()),
        pa.field("t_upload_s", pa.float64()),
        pa.field("t_total_s", pa.float64()),
        pa.field("gen_fps", pa.float64()),  # pixel frames per second of generation
        pa.field("peak_gpu_mem_gb", pa.float32()),  # null on CPU
        # 5. The stored video; set when status = ok
        pa.field("bytes", pa.int64()),
        pa.field("video_uri", pa.string()),
        pa.field("sha256", pa.string()),  # our whole-file digest, also in the object's metadata
        pa.field("checksum", pa.string()),  # the store's ChecksumSHA256 ("-N" suffix: N-part upload)
        # 6. Where and when it ran
        pa.field("node", pa.string(), nullable=False),  # host name or Ray node id
        pa.field("gpu", pa.string()),  # device name; null on CPU
        pa.field("worker_pid", pa.int32(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # 7. Quality telemetry on downsampled frames (pipeline/quality/), 0-255 luma; added in v2
        # 8. Render-time quality signals (pipeline/quality/; definitions and ranges in README.md); added in v3
        *V2_SIGNALS,
        *V3_SIGNALS,
        pa.field("t_quality_s", pa.float64()),  # CPU seconds the signals and thumbnails took
        pa.field("thumb_first_uri", pa.string()),
        pa.field("thumb_middle_uri", pa.string()),
        pa.field("thumb_last_uri", pa.string()),
        # 9. The clip's prompts over its video frames (0-based, inclusive), in order: one segment for a
        #    clip of one prompt, a storyboard's segments otherwise (pipeline/spec/storyboard.py); added in v4
        pa.field("segments", SEGMENTS_TYPE),
        # 10. The prompt as the text encoder saw it (a storyboard: its longest prompt); added in v5
        pa.field("prompt_tokens", pa.int32()),  # UMT5 tokens with </s>, before truncation to 512
        pa.field("truncated", pa.bool_()),  # prompt_tokens over the encoder's 512: the prompt's end dropped
        # 11. Each segment's quality signals, in the order of `segments` (same length; UNNEST both): the
        #     columns of 7 and 8 measured over the segment's frames alone, as if it were a clip (drift
        #     windows: its first and last 5 s, its halves if under 10 s), and the switch into it. One
        #     entry, the clip's own values, for a clip of one prompt; added in v6
        pa.field("segment_signals", SEGMENT_SIGNALS_TYPE),
        # 12. Clips rendered as one batch (pipeline/worker/groups.py): t_generate_s, and so gen_fps, are
        #     this clip's share of the group's DiT seconds; added in v7
        pa.field("clips_per_forward", pa.int16()),
    ],
    metadata={"schema_version": str(SCHEMA_VERSION)},
)

SECONDS_SCHEMA_VERSION = 1  # the per-second table's own version, under the same rules
SECONDS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int16(), nullable=False),  # the metrics row's attempt
        pa.field("second", pa.int32(), nullable=False),  # frames [second * fps, (second + 1) * fps)
        pa.field("frames", pa.int16(), nullable=False),
        pa.field("flicker_mae", pa.float32()),  # mean step into this second's frames, 0-255
        pa.field("flicker_spikes", pa.int16()),
        pa.field("motion_level", pa.float32()),  # full-frame px per second
        pa.field("moving_fraction", pa.float32()),
        pa.field("saturation", pa.float32()),  # HSV, 0-1
        pa.field("brightness", pa.float32()),  # BT.709 luma, 0-255
        pa.field("colourfulness", pa.float32()),  # Hasler-Suesstrunk M
        pa.field("sharpness", pa.float32()),  # Laplacian variance
        pa.field("start_similarity", pa.float32()),  # best match in the clip's first window, -1..1
        pa.field("best_match_second", pa.int32()),  # most similar second a window's length earlier
        pa.field("best_match_similarity", pa.float32()),
    ],
    metadata={"schema_version": str(SECONDS_SCHEMA_VERSION)},
)
THUMBNAIL_POSITIONS = ("first", "middle", "last")
JPEG_CONTENT_TYPE = "image/jpeg"


@dataclass(frozen=True)
class PartTable:
    """A table kept as one part file per clip under <folder>/run_id=<run>/, compacted per run."""

    folder: str
    schema: pa.Schema
    key: tuple[str, ...]  # a row's identity: a later copy replaces an earlier one
    order: tuple[str, ...]  # what makes a copy later
    names: tuple[str, str]  # the schema's and its version's names in this module, for error messages

    @property
    def file_pattern(self) -> re.Pattern[str]:
        return re.compile(
            rf"{self.folder}/run_id=([A-Za-z0-9_.-]+)/(part-[A-Za-z0-9_.-]+|compacted-(\d+))\.parquet"
        )

    def part_key(self, run_id: str, clip_id: str) -> str:
        return (
            f"{self.folder}/run_id={_check_id('run_id', run_id)}/part-{_check_id('clip_id', clip_id)}.parquet"
        )


METRICS = PartTable(
    "metrics",
    METRICS_SCHEMA,
    key=("run_id", "clip_id"),
    order=("finished_at", "attempt"),
    names=("METRICS_SCHEMA", "SCHEMA_VERSION"),
)
SECONDS = PartTable(
    "seconds",
    SECONDS_SCHEMA,
    key=("run_id", "clip_id", "second"),
    order=("attempt",),
    names=("SECONDS_SCHEMA", "SECONDS_SCHEMA_VERSION"),
)

# For pyarrow/pandas readers of the folder: run_id=<...> is a string whatever it looks like.
RUN_PARTITIONING = ds.partitioning(pa.schema([("run_id", pa.string())]), flavor="hive")

# ---------------------------------------------------------------------------------------------
# 1. Keys
# ---------------------------------------------------------------------------------------------


def _check_id(name: str, value: object) -> str:
    if not is_valid_id(value):
        raise ValueError(
            f"{name}={value!r} must be {ID_RULE} (it becomes part of an object key), "
            "e.g. 'run-2026-11-21' or 'a1b2c3d4e5f60718'"
        )
    assert isinstance(value, str)
    return value


def metrics_key(run_id: str, clip_id: str) -> str:
    return METRICS.part_key(run_id, clip_id)


def seconds_key(run_id: str, clip_id: str) -> str:
    return SECONDS.part_key(run_id, clip_id)


def video_key(clip_id: str) -> str:
    return f"clips/{_check_id('clip_id', clip_id)}.mp4"


def thumbnail_key(clip_id: str, position: str) -> str:
    if position not in THUMBNAIL_POSITIONS:
        raise ValueError(f"thumbnail position {position!r} must be one of {', '.join(THUMBNAIL_POSITIONS)}")
    return f"clips/{_check_id('clip_id', clip_id)}.{position}.jpg"


# ---------------------------------------------------------------------------------------------
# 2. Rows -> table, with the checks Arrow would skip (it truncates 1.5 into an int16 column)
# ---------------------------------------------------------------------------------------------


def _check_value(field: pa.Field, value: Any, where: str) -> Any:
    kind = field.type
    if pa.types.is_integer(kind):
        low, high = -(2 ** (kind.bit_width - 1)), 2 ** (kind.bit_width - 1) - 1  # all our ints are signed
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= value <= high
        expected = f"an integer in [{low}, {high}]"
    elif pa.types.is_floating(kind):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        expected = "a number"
    elif pa.types.is_boolean(kind):
        ok = isinstance(value, bool)
        expected = "True or False"
    elif pa.types.is_timestamp(kind):
        ok = isinstance(value, dt.datetime) and value.tzinfo is not None
        expected = "a timezone-aware datetime, e.g. datetime.now(timezone.utc)"
    elif pa.types.is_list(kind):
        if isinstance(value, list | tuple):
            item = pa.field(f"{field.name}[]", kind.value_type, nullable=False)
            return [_check_value(item, element, where) for element in value]
        ok, expected = False, "a list"
    elif pa.types.is_struct(kind):
        names = [sub.name for sub in kind]
        if isinstance(value, Mapping) and sorted(value) == sorted(names):
            return {sub.name: _check_member(field, sub, value[sub.name], where) for sub in kind}
        ok, expected = False, f"an object with the keys {names}"
    else:
        ok = isinstance(value, str)
        expected = "a string"
    if not ok:
        raise ValueError(f"{where}: column {field.name!r} must be {expected}, got {value!r}")
    return value


def _check_member(struct: pa.Field, member: pa.Field, value: Any, where: str) -> Any:
    named = member.with_name(f"{struct.name}.{member.name}")
    if value is None:
        if not member.nullable:
            raise ValueError(f"{where}: column {named.name!r} must not be null")
        return None
    return _check_value(named, value, where)


def _check_fields(table: PartTable, row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The row's values in schema order, each type- and range-checked; missing nullable ones None."""
    unknown = sorted(set(row) - set(table.schema.names))
    if unknown:
        schema, version = table.names
        raise ValueError(
            f"{where} has unknown column(s) {unknown}; the columns are {schema}.names "
            f"(add a new column there, nullable, and bump {version})"
        )
    checked: dict[str, Any] = {}
    for field in table.schema:
        value = row.get(field.name)
        if field.name == "cache_telemetry" and isinstance(value, Mapping):
            value = json.dumps(value, sort_keys=True)
        if value is None:
            if not field.nullable:
                raise ValueError(f"{where} is missing required column {field.name!r}")
        else:
            value = _check_value(field, value, where)
        checked[field.name] = value
    _check_id("run_id", checked["run_id"])
    _check_id("clip_id", checked["clip_id"])
    return checked


def _check_row(i: int, row: Mapping[str, Any]) -> dict[str, Any]:
    where = f"metrics row {i} (clip_id={row.get('clip_id')!r})"
    checked = _check_fields(METRICS, row, where)
    status = checked["status"]
    if status not in STATUSES:
        raise ValueError(f"{where}: status={status!r} must be one of {', '.join(STATUSES)}")
    needed = {
        "ok": ("bytes", "video_uri", "sha256"),
        "failed": ("error_type", "error"),
        "skipped": ("error_type", "error"),
    }[status]
    if missing := [name for name in needed if checked[name] is None]:
        raise ValueError(f"{where} has status={status!r} but no {', '.join(missing)}")
    if checked["cache_telemetry"] is not None:
        try:
            json.loads(checked["cache_telemetry"])
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}: cache_telemetry is not valid JSON ({exc}); pass a dict or a JSON string"
            ) from None
    _check_segment_signals(checked, where)
    return checked


def _check_segment_signals(checked: Mapping[str, Any], where: str) -> None:
    """segment_signals, where given, is aligned with segments (readers UNNEST / explode both together)."""
    signals, segments = checked["segment_signals"], checked["segments"]
    if signals is None or (segments is not None and len(signals) == len(segments)):
        return
    has = "is null" if segments is None else f"has length {len(segments)}"
    raise ValueError(
        f"{where}: segment_signals has length {len(signals)} but segments {has}; entry i holds the "
        "quality signals of segments[i], one per segment (pipeline.worker.rows.quality_columns)"
    )


def _to_table(table: PartTable, checked: Sequence[Mapping[str, Any]]) -> pa.Table:
    columns = []
    for field in table.schema:
        values = [row[field.name] for row in checked]
        try:
            columns.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ValueError(
                f"{table.folder} column {field.name!r} cannot hold {values!r} as {field.type}: {exc}"
            ) from None
    return pa.Table.from_arrays(columns, schema=table.schema)


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Validate rows against METRICS_SCHEMA (missing nullable columns become null)."""
    return _to_table(METRICS, [_check_row(i, row) for i, row in enumerate(rows)])


def seconds_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Validate per-second rows against SECONDS_SCHEMA (missing nullable columns become null)."""
    checked = [
        _check_fields(SECONDS, row, f"per-second row {i} (clip_id={row.get('clip_id')!r})")
        for i, row in enumerate(rows)
    ]
    return _to_table(SECONDS, checked)


def _to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _conform(table: PartTable, data: pa.Table, source: str) -> pa.Table:
    """A file of any schema version -> the table's schema: columns older files lack read as null."""
    columns = []
    for field in table.schema:
        if field.name in data.column_names:
            column = data.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(
                        f"{source}: column {field.name!r} is {column.type}, expected {field.type} ({exc})"
                    ) from None
        elif field.nullable:
            column = pa.nulls(data.num_rows, field.type)
        else:
            raise ValueError(
                f"{source} has no column {field.name!r}, which the {table.folder} schema requires"
            )
        if not field.nullable and column.null_count:
            raise ValueError(f"{source}: required column {field.name!r} has {column.null_count} null(s)")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


# ---------------------------------------------------------------------------------------------
# 3. Write one clip, read a run or all runs
# ---------------------------------------------------------------------------------------------


def write_clip_metrics(target: OutputTarget, row: Mapping[str, Any]) -> str:
    """Write the clip's row to its deterministic part file, replacing an earlier attempt's; return its URI."""
    if row["status"] == "skipped":
        raise ValueError(
            f"clip {row['clip_id']}: a skipped clip has no row in the table (another run owns it)"
        )
    table = rows_to_table([row])
    key = metrics_key(row["run_id"], row["clip_id"])
    target.put_bytes(_to_parquet(table), key, PARQUET_CONTENT_TYPE)
    log.debug("wrote metrics row for clip %s (status %s) to %s", row["clip_id"], row["status"], key)
    return target.url_for(key)


def read_clip_metrics(target: OutputTarget, run_id: str, clip_id: str) -> dict[str, Any] | None:
    """The row the clip's part file of this run holds (as written by its last attempt), or None."""
    try:
        table = _read_files(target, METRICS, [metrics_key(run_id, clip_id)])
    except FileNotFoundError:
        return None
    return table.to_pylist()[0] if table.num_rows else None


def write_clip_seconds(target: OutputTarget, rows: Sequence[Mapping[str, Any]]) -> str:
    """Write one clip's per-second rows to its part file, replacing an earlier attempt's; return its URI."""
    table = seconds_to_table(rows)
    clips = set(table.column("run_id").to_pylist()), set(table.column("clip_id").to_pylist())
    if len(clips[0]) != 1 or len(clips[1]) != 1:
        raise ValueError(f"per-second rows must be of one run and clip, got runs {clips[0]} clips {clips[1]}")
    key = seconds_key(rows[0]["run_id"], rows[0]["clip_id"])
    target.put_bytes(_to_parquet(table), key, PARQUET_CONTENT_TYPE)
    return target.url_for(key)


def _table_keys(target: OutputTarget, table: PartTable, run_id: str | None) -> list[str]:
    prefix = (
        f"{table.folder}/run_id={_check_id('run_id', run_id)}/" if run_id is not None else f"{table.folder}/"
    )
    pattern = table.file_pattern
    return [key for key in target.list_keys(prefix) if pattern.fullmatch(key)]


def _read_files(target: OutputTarget, table: PartTable, keys: list[str]) -> pa.Table:
    def read_one(key: str) -> pa.Table:
        return _conform(table, pq.read_table(pa.BufferReader(target.read_bytes(key))), target.url_for(key))

    if not keys:
        return table.schema.empty_table()
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(keys))) as pool:
        return pa.concat_tables(list(pool.map(read_one, keys)))


def _latest(table: PartTable, data: pa.Table) -> pa.Table:
    """One row per key (run and clip; and second): the latest by `order`; sorted by the key."""
    if data.num_rows == 0:
        return data
    order = pc.sort_indices(data, sort_keys=[(name, "ascending") for name in (*table.key, *table.order)])
    ordered = data.take(order)
    position = pa.array(range(ordered.num_rows), type=pa.int64())
    latest = (
        ordered.append_column("_position", position)
        .group_by(list(table.key), use_threads=False)
        .aggregate([("_position", "max")])
        .column("_position_max")
    )
    return ordered.take(pc.take(latest, pc.sort_indices(latest)))  # positions ascend with the key


def _read_consistent(
    target: OutputTarget, table: PartTable, run_id: str | None
) -> tuple[list[str], pa.Table]:
    """List then read; list again if a listed file vanished (a compaction deleted it after merging it)."""
    for _ in range(_READ_RETRIES - 1):
        keys = _table_keys(target, table, run_id)
        try:
            return keys, _read_files(target, table, keys)
        except FileNotFoundError as exc:
            log.info("%s file vanished while reading (%s); listing %s again", table.folder, exc, target.uri)
    keys = _table_keys(target, table, run_id)
    return keys, _read_files(target, table, keys)


def read_metrics(target: OutputTarget, run_id: str | None = None) -> pa.Table:
    """Every run's rows (or one run's), latest row per (run_id, clip_id); empty with the schema if none."""
    return _latest(METRICS, _read_consistent(target, METRICS, run_id)[1])


def read_seconds(target: OutputTarget, run_id: str | None = None) -> pa.Table:
    """Every run's per-second rows (or one run's), sorted by run, clip and second; one row per second."""
    return _latest(SECONDS, _read_consistent(target, SECONDS, run_id)[1])


def done_clip_ids(target: OutputTarget) -> set[str]:
    """Clips to skip on resume: an ok row in any run AND the video object clips/<clip_id>.mp4."""
    table = read_metrics(target)
    ok = set(table.filter(pc.equal(table.column("status"), "ok")).column("clip_id").to_pylist())
    videos = {
        key.removeprefix("clips/").removesuffix(".mp4")
        for key in target.list_keys("clips/")
        if key.endswith(".mp4") and "/" not in key.removeprefix("clips/")
    }
    return ok & videos


# ---------------------------------------------------------------------------------------------
# 4. Compaction
# ---------------------------------------------------------------------------------------------


def compact_run(target: OutputTarget, run_id: str) -> str | None:
    """Merge a run's part files and earlier compacted file into metrics/run_id=<run>/compacted-<n>.parquet,
    and its per-second part files likewise under seconds/.

    The merged file (latest row per clip) is written before anything is deleted, so no reader ever sees
    fewer rows; read_metrics drops the copies that exist until the deletes finish. Run it once a run's
    writers are done (the driver does, at the end): a part rewritten while compaction runs could be
    deleted after its older content was merged. Returns the compacted metrics file's URI, or None if
    the run has no metrics.
    """
    uri = _compact(target, METRICS, run_id)
    _compact(target, SECONDS, run_id)
    return uri


def _compact(target: OutputTarget, table: PartTable, run_id: str) -> str | None:
    keys, data = _read_consistent(target, table, run_id)
    if not keys:
        return None
    pattern = table.file_pattern
    compacted = {key: int(m.group(3)) for key in keys if (m := pattern.fullmatch(key)) and m.group(3)}
    if len(keys) == 1 and compacted:
        return target.url_for(keys[0])  # already one compacted file
    foreign = set(data.column("run_id").to_pylist()) - {run_id}
    if foreign:
        raise ValueError(
            f"{table.folder} files under run_id={run_id} hold rows of run(s) {sorted(foreign)}; move them"
        )
    merged = _latest(table, data)
    key = f"{table.folder}/run_id={run_id}/compacted-{max(compacted.values(), default=0) + 1}.parquet"
    target.put_bytes(_to_parquet(merged), key, PARQUET_CONTENT_TYPE)
    target.delete_many(keys)
    log.info(
        "compacted %s of run %s: %d files -> %s (%d rows)",
        table.folder,
        run_id,
        len(keys),
        key,
        merged.num_rows,
    )
    return target.url_for(key)
