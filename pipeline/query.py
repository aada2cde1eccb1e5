"""SQL over a run's metrics, offline, for a local --out and for S3 alike (DuckDB in this process).

    python -m pipeline.query "SELECT status, count(*) FROM clips GROUP BY 1" --out s3://my-bucket/run1

    from pipeline.query import connect
    db = connect("s3://my-bucket/run1")
    db.sql("SELECT * FROM clips").pl()   # polars; .df() for pandas, .arrow() for pyarrow

Two views over `<out>/metrics/` (layout: pipeline/metrics.py), and one over `<out>/runs/`:

    metrics  one row per clip and run: a clip retried by a rerun, or rendered again with --force, has a
             row in each run (the audit trail)
    clips    the latest row of each clip over all runs: what --out holds now; count clips here
    runs     one row per run record (pipeline/runs.py): what each run planned, skipped, held and lost,
             how long it took and how it ended; empty, with the same columns, where no run has a record

Both keep one row per (run, clip) even in the moment between a compaction's write and its deletes.
S3 is read with DuckDB's httpfs extension from the `duckdb-extension-httpfs` wheel (nothing is
downloaded), at the endpoint, region and addressing style of the same S3 options as render.py, with
credentials from the standard AWS chain as boto3 resolves them (never logged).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.resources
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv

from pipeline.runs import FIELD_TYPES, RECORD_SUFFIX, RUNS_PREFIX
from pipeline.storage import StorageError, open_target
from pipeline.storage.cli import add_s3_options, s3_settings_from_args
from pipeline.storage.settings import S3Settings, boto3_session, parse_s3_uri

logger = logging.getLogger(__name__)

METRICS_GLOB = "metrics/**/*.parquet"
RUNS_GLOB = f"{RUNS_PREFIX}*{RECORD_SUFFIX}"
# A run record's field types (pipeline/runs.py) as DuckDB column types.
DUCKDB_TYPES = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", dt.datetime: "TIMESTAMPTZ"}
RUNS_COLUMNS = {name: DUCKDB_TYPES[kind] for name, kind in FIELD_TYPES.items()}
TABLE_MAX_ROWS = 10_000  # rows the table format prints; csv and json print every row
EXIT_OK, EXIT_FAILED = 0, 2

# Latest row first: a later finish wins, and for the same finish the later attempt.
_LATEST = "ORDER BY finished_at DESC, attempt DESC"
VIEWS = {
    "metrics": "SELECT * FROM _metrics_files "
    f"QUALIFY row_number() OVER (PARTITION BY run_id, clip_id {_LATEST}) = 1",
    "clips": f"SELECT * FROM metrics QUALIFY row_number() OVER (PARTITION BY clip_id {_LATEST}) = 1",
}


def connect(out: str, s3: S3Settings = S3Settings()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views `metrics` and `clips` over `out`'s metrics, and
    `runs` over its run records.

    ValueError if `out` holds no metrics; StorageError if S3 cannot be listed (names the fix).
    """
    if not out.startswith("s3://") and not Path(out).expanduser().is_dir():
        raise ValueError(f"--out {out}: no such folder; pass the --out of a render (default: renders)")
    target = open_target(out, s3)
    if not target.list_keys("metrics/"):
        raise ValueError(
            f"{target.uri} has no metrics files under metrics/; pass the --out a render wrote to "
            "(python jobs/render.py PROMPTS --out ...)"
        )
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")  # never reach for extensions.duckdb.org
    if out.startswith("s3://"):
        _configure_s3(con, out, s3)
        root = target.uri
    else:
        root = str(Path(out).expanduser().resolve())
    glob = f"{root}/{METRICS_GLOB}"
    # hive_types: a run id such as 20261121 stays a string; union_by_name: files of older schema
    # versions read with nulls in the columns they lack.
    con.execute(
        f"CREATE VIEW _metrics_files AS SELECT * FROM read_parquet({_sql_string(glob)}, "
        "hive_partitioning = true, union_by_name = true, hive_types = {'run_id': 'VARCHAR'})"
    )
    for name, sql in VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    recorded = any(key.endswith(RECORD_SUFFIX) for key in target.list_keys(RUNS_PREFIX))
    con.execute(f"CREATE VIEW runs AS {_runs_sql(f'{root}/{RUNS_GLOB}' if recorded else None)}")
    return con


def _runs_sql(glob: str | None) -> str:
    """The run records under `glob` with their typed columns (a record of an older version reads with
    nulls in the fields it lacks); None: no records, the same columns and no rows."""
    if glob is None:
        nulls = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in RUNS_COLUMNS.items())
        return f"SELECT {nulls} WHERE false"
    columns = ", ".join(f"{_sql_string(name)}: {_sql_string(kind)}" for name, kind in RUNS_COLUMNS.items())
    return f"SELECT * FROM read_json({_sql_string(glob)}, columns = {{{columns}}}, format = 'unstructured')"


def httpfs_extension_path() -> Path:
    """DuckDB's httpfs extension as the `duckdb-extension-httpfs` wheel of the same version ships it."""
    version = duckdb.__version__
    fix = f"pip install duckdb-extension-httpfs=={version} (the httpfs build for duckdb {version})"
    try:
        package = importlib.resources.files("duckdb_extension_httpfs")
    except ModuleNotFoundError:
        raise ValueError(f"reading metrics on S3 needs DuckDB's httpfs extension: {fix}") from None
    path = Path(str(package / "extensions" / f"v{version}" / "httpfs.duckdb_extension"))
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: the installed duckdb-extension-httpfs is not for duckdb {version}; {fix}"
        )
    return path


def _configure_s3(con: duckdb.DuckDBPyConnection, out: str, s3: S3Settings) -> None:
    """Load httpfs and give it the endpoint, region and credentials boto3 resolves for these settings."""
    con.execute(f"LOAD {_sql_string(str(httpfs_extension_path()))}")
    client = s3.boto3_client()  # resolves the endpoint and region as every other S3 access does
    credentials = boto3_session().get_credentials()
    if credentials is None:
        bucket, _ = parse_s3_uri(out)
        raise StorageError(
            f"no AWS credentials to read {out}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or attach an instance profile",
            code="NoCredentialsError",
            uri=f"s3://{bucket}",
            endpoint=s3.endpoint_label,
        )
    frozen = credentials.get_frozen_credentials()
    endpoint = urlsplit(client.meta.endpoint_url)
    host = endpoint.netloc
    style = {"path": "path", "virtual": "vhost"}.get(s3.addressing_style)
    if style is None:  # auto: virtual-hosted on AWS, path-style on other stores (as they expect)
        style = "vhost" if host.endswith(".amazonaws.com") else "path"
    options = {
        "KEY_ID": frozen.access_key,
        "SECRET": frozen.secret_key,
        "SESSION_TOKEN": frozen.token or "",
        "REGION": client.meta.region_name or "us-east-1",
        "ENDPOINT": host,
        "URL_STYLE": style,
    }
    fields = ", ".join(f"{name} {_sql_string(value)}" for name, value in options.items())
    use_ssl = "true" if endpoint.scheme == "https" else "false"
    con.execute(f"CREATE SECRET render_out (TYPE s3, {fields}, USE_SSL {use_ssl})")


def _json_value(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.query",
        description="Run SQL over the metrics of a render's --out. Views: metrics (one row per clip and "
        "run), clips (the latest row of each clip) and runs (one row per run record); columns: "
        "pipeline/metrics.py and pipeline/runs.py, or DESCRIBE clips.",
    )
    parser.add_argument("sql", help='e.g. "SELECT status, count(*) FROM clips GROUP BY 1"')
    parser.add_argument(
        "--out",
        default="renders",
        help="the render's local folder or s3://bucket/prefix (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        default="table",
        choices=["table", "csv", "json"],
        help=f"table (at most {TABLE_MAX_ROWS} rows), csv, or json (one object per line) "
        "(default: %(default)s)",
    )
    add_s3_options(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(message)s")
    try:
        relation = connect(args.out, s3_settings_from_args(args)).sql(args.sql)
    except (ValueError, StorageError, OSError) as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    except duckdb.Error as exc:
        logger.error("%s\nthe views are metrics, clips and runs; DESCRIBE clips lists the columns", exc)
        return EXIT_FAILED
    if relation is not None:  # statements such as SET return nothing
        write(relation, args.format)
    return EXIT_OK


def write(relation: duckdb.DuckDBPyRelation, fmt: str) -> None:
    if fmt == "table":
        relation.show(max_rows=TABLE_MAX_ROWS, max_width=sys.maxsize)
        return
    table = relation.arrow()  # Arrow, not fetchall: DuckDB would need pytz for time zones
    if isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    if fmt == "csv":
        sys.stdout.flush()
        pa_csv.write_csv(table, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        for row in table.to_pylist():
            print(json.dumps(row, default=_json_value))


if __name__ == "__main__":
    sys.exit(main())
