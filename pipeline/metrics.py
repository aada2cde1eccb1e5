"""Per-clip metrics: one explicit, versioned Parquet schema; one small file per clip; compaction.

Layout under an OutputTarget:

    clips/<clip_id>.mp4
    metrics/run_id=<run_id>/part-<clip_id>.parquet       one row, written after the upload succeeded
    metrics/run_id=<run_id>/compacted-<n>.parquet        many rows, written by compact_run

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
latest row per run and clip), and no reader ever sees fewer rows than were written.
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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.spec.clip import ID_PATTERN
from pipeline.storage import OutputTarget

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # bump when columns are added; old files stay readable (missing columns read as null)
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
STATUSES = ("ok", "failed")
_READ_THREADS = 8  # parallel GETs when reading many small part files
_READ_RETRIES = 5  # re-list when a listed file vanished (a compaction deleted it meanwhile)

# Types never change once released. A new column is appended here, nullable, with SCHEMA_VERSION bumped
# and the version that added it in its comment, so files written before it read back with nulls.
METRICS_SCHEMA = pa.schema(
    [
        # 1. Identity and outcome
        pa.field("run_id", pa.string(), nullable=False),  # also the hive key: metrics/run_id=<run_id>/
        pa.field("clip_id", pa.string(), nullable=False),  # deterministic; video at clips/<clip_id>.mp4
        pa.field("attempt", pa.int16(), nullable=False),  # 1 for the first try of this clip in this run
        pa.field("status", pa.string(), nullable=False),  # ok | failed
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
        # 7. Quality telemetry on downsampled frames (pipeline/quality.py), 0-255 luma; added in v2
        pa.field("motion_mean", pa.float32()),  # mean step between frames: ~0 means frozen
        pa.field("motion_max", pa.float32()),  # largest step: spikes far above the mean = flicker
        pa.field("luma_drift", pa.float32()),  # last 5 s vs first 5 s mean brightness
        # 8. The prompt as the text encoder saw it; added in v3
        pa.field("prompt_tokens", pa.int32()),  # UMT5 tokens with </s>, before truncation to 512
        pa.field("truncated", pa.bool_()),  # prompt_tokens over the encoder's 512: the prompt's end dropped
    ],
    metadata={"schema_version": str(SCHEMA_VERSION)},
)

# For pyarrow/pandas readers of the folder: run_id=<...> is a string whatever it looks like.
RUN_PARTITIONING = ds.partitioning(pa.schema([("run_id", pa.string())]), flavor="hive")

_METRICS_FILE_RE = re.compile(
    r"metrics/run_id=([A-Za-z0-9_.-]+)/(part-[A-Za-z0-9_.-]+|compacted-(\d+))\.parquet"
)


# ---------------------------------------------------------------------------------------------
# 1. Keys
# ---------------------------------------------------------------------------------------------


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{name}={value!r} must be a non-empty string of letters, digits, '_', '.' or '-' "
            "(it becomes part of an object key), e.g. 'run-2026-11-21' or 'a1b2c3d4e5f60718'"
        )
    return value


def metrics_key(run_id: str, clip_id: str) -> str:
    return f"metrics/run_id={_check_id('run_id', run_id)}/part-{_check_id('clip_id', clip_id)}.parquet"


def video_key(clip_id: str) -> str:
    return f"clips/{_check_id('clip_id', clip_id)}.mp4"


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
    else:
        ok = isinstance(value, str)
        expected = "a string"
    if not ok:
        raise ValueError(f"{where}: column {field.name!r} must be {expected}, got {value!r}")
    return value


def _check_row(i: int, row: Mapping[str, Any]) -> dict[str, Any]:
    where = f"metrics row {i} (clip_id={row.get('clip_id')!r})"
    unknown = sorted(set(row) - set(METRICS_SCHEMA.names))
    if unknown:
        raise ValueError(
            f"{where} has unknown column(s) {unknown}; the columns are METRICS_SCHEMA.names "
            "(add a new column there, nullable, and bump SCHEMA_VERSION)"
        )
    checked: dict[str, Any] = {}
    for field in METRICS_SCHEMA:
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
    status = checked["status"]
    if status not in STATUSES:
        raise ValueError(f"{where}: status={status!r} must be one of {', '.join(STATUSES)}")
    needed = {"ok": ("bytes", "video_uri", "sha256"), "failed": ("error_type", "error")}.get(status, ())
    if missing := [name for name in needed if checked[name] is None]:
        raise ValueError(f"{where} has status={status!r} but no {', '.join(missing)}")
    if checked["cache_telemetry"] is not None:
        try:
            json.loads(checked["cache_telemetry"])
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{where}: cache_telemetry is not valid JSON ({exc}); pass a dict or a JSON string"
            ) from None
    return checked


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Validate rows against METRICS_SCHEMA (missing nullable columns become null)."""
    checked = [_check_row(i, row) for i, row in enumerate(rows)]
    columns = []
    for field in METRICS_SCHEMA:
        values = [row[field.name] for row in checked]
        try:
            columns.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ValueError(
                f"metrics column {field.name!r} cannot hold {values!r} as {field.type}: {exc}"
            ) from None
    return pa.Table.from_arrays(columns, schema=METRICS_SCHEMA)


def _to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _conform(table: pa.Table, source: str) -> pa.Table:
    """A file of any schema version -> METRICS_SCHEMA: columns older files lack read as null."""
    columns = []
    for field in METRICS_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(
                        f"{source}: column {field.name!r} is {column.type}, expected {field.type} ({exc})"
                    ) from None
        elif field.nullable:
            column = pa.nulls(table.num_rows, field.type)
        else:
            raise ValueError(f"{source} has no column {field.name!r}, which METRICS_SCHEMA requires")
        if not field.nullable and column.null_count:
            raise ValueError(f"{source}: required column {field.name!r} has {column.null_count} null(s)")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=METRICS_SCHEMA)


# ---------------------------------------------------------------------------------------------
# 3. Write one clip, read a run or all runs
# ---------------------------------------------------------------------------------------------


def write_clip_metrics(target: OutputTarget, row: Mapping[str, Any]) -> str:
    """Write the clip's row to its deterministic part file, replacing an earlier attempt's; return its URI."""
    table = rows_to_table([row])
    key = metrics_key(row["run_id"], row["clip_id"])
    target.put_bytes(_to_parquet(table), key, PARQUET_CONTENT_TYPE)
    log.debug("wrote metrics row for clip %s (status %s) to %s", row["clip_id"], row["status"], key)
    return target.url_for(key)


def _metrics_keys(target: OutputTarget, run_id: str | None) -> list[str]:
    prefix = f"metrics/run_id={_check_id('run_id', run_id)}/" if run_id is not None else "metrics/"
    return [key for key in target.list_keys(prefix) if _METRICS_FILE_RE.fullmatch(key)]


def _read_files(target: OutputTarget, keys: list[str]) -> pa.Table:
    def read_one(key: str) -> pa.Table:
        return _conform(pq.read_table(pa.BufferReader(target.read_bytes(key))), target.url_for(key))

    if not keys:
        return METRICS_SCHEMA.empty_table()
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(keys))) as pool:
        return pa.concat_tables(list(pool.map(read_one, keys)))


def _latest_per_clip(table: pa.Table) -> pa.Table:
    """One row per (run_id, clip_id): the latest by finished_at, then attempt; sorted by run and clip."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("run_id", "ascending"),
            ("clip_id", "ascending"),
            ("finished_at", "ascending"),
            ("attempt", "ascending"),
        ],
    )
    ordered = table.take(order)
    position = pa.array(range(ordered.num_rows), type=pa.int64())
    latest = (
        ordered.append_column("_position", position)
        .group_by(["run_id", "clip_id"], use_threads=False)
        .aggregate([("_position", "max")])
        .column("_position_max")
    )
    return ordered.take(pc.take(latest, pc.sort_indices(latest)))  # positions ascend with (run_id, clip_id)


def _read_consistent(target: OutputTarget, run_id: str | None) -> tuple[list[str], pa.Table]:
    """List then read; list again if a listed file vanished (a compaction deleted it after merging it)."""
    for _ in range(_READ_RETRIES - 1):
        keys = _metrics_keys(target, run_id)
        try:
            return keys, _read_files(target, keys)
        except FileNotFoundError as exc:
            log.info("metrics file vanished while reading (%s); listing %s again", exc, target.uri)
    keys = _metrics_keys(target, run_id)
    return keys, _read_files(target, keys)


def read_metrics(target: OutputTarget, run_id: str | None = None) -> pa.Table:
    """Every run's rows (or one run's), latest row per (run_id, clip_id); empty with the schema if none."""
    return _latest_per_clip(_read_consistent(target, run_id)[1])


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
    """Merge a run's part files and earlier compacted file into metrics/run_id=<run>/compacted-<n>.parquet.

    The merged file (latest row per clip) is written before anything is deleted, so no reader ever sees
    fewer rows; read_metrics drops the copies that exist until the deletes finish. Run it once a run's
    writers are done (the driver does, at the end): a part rewritten while compaction runs could be
    deleted after its older content was merged. Returns the compacted file's URI, or None if the run
    has no metrics.
    """
    keys, table = _read_consistent(target, run_id)
    if not keys:
        return None
    compacted = {
        key: int(m.group(3)) for key in keys if (m := _METRICS_FILE_RE.fullmatch(key)) and m.group(3)
    }
    if len(keys) == 1 and compacted:
        return target.url_for(keys[0])  # already one compacted file
    foreign = set(table.column("run_id").to_pylist()) - {run_id}
    if foreign:
        raise ValueError(
            f"metrics files under run_id={run_id} hold rows of run(s) {sorted(foreign)}; move them"
        )
    merged = _latest_per_clip(table)
    key = f"metrics/run_id={run_id}/compacted-{max(compacted.values(), default=0) + 1}.parquet"
    target.put_bytes(_to_parquet(merged), key, PARQUET_CONTENT_TYPE)
    target.delete_many(keys)
    log.info("compacted run %s: %d files -> %s (%d rows)", run_id, len(keys), key, merged.num_rows)
    return target.url_for(key)
